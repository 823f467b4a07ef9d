"""Mixed line-ups: each stored episode records which line-up place played each agent (`seats`), so a reused
episode scores the candidate's agents alone. Null for an episode the candidate played alone (every earlier row).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("episodes") as batch:
        batch.add_column(sa.Column("seats", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("episodes") as batch:
        batch.drop_column("seats")
