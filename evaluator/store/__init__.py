"""The results database: every run, checkpoint and episode of every evaluation, and the sweep's leases.

One code path for two engines through SQLAlchemy Core: SQLite in DATA_DIR by default (WAL mode; nothing to
run) and PostgreSQL on clusters (`--results-db` / RESULTS_DB_URL). The schema is versioned with Alembic and
migrated on first use (`evaluator.store.database`). Replays stay files or objects; rows reference them by URI.
"""
