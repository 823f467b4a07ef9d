"""Ratings: a run's checkpoints keep the openskill rating its mixed episodes gave them (`{mu, sigma, ordinal,
games}`), so `results --best --by rating` and `view`'s leaderboard can rank by it. Null without mixed episodes.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run_checkpoints") as batch:
        batch.add_column(sa.Column("rating", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run_checkpoints") as batch:
        batch.drop_column("rating")
