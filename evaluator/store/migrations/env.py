"""Alembic's entry point, run by `evaluator.store.database.migrate` with the connection it passes in
`config.attributes["connection"]` (never a URL from a file: the URL and its password stay in memory)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
