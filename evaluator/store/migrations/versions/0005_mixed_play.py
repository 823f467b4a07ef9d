"""Mixed play: a run's checkpoints keep what their mixed line-ups gave them (`{environments: {env: {score,
npc_score, all_score}}, vor}`), so `results --run` shows the co-players' and everyone's scores beside the
checkpoint's own. Null for a checkpoint that played no mixed environment.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run_checkpoints") as batch:
        batch.add_column(sa.Column("mixed", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run_checkpoints") as batch:
        batch.drop_column("mixed")
