"""Runs, checkpoints, the checkpoints of each run, and every episode.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("suite", sa.String(200), nullable=False),
        sa.Column("evaluator_version", sa.String(50), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("timing", sa.JSON),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.UniqueConstraint("uri", "digest", name="uq_checkpoints_uri_digest"),
    )
    op.create_table(
        "run_checkpoints",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("checkpoint_id", sa.Integer, sa.ForeignKey("checkpoints.id"), nullable=False),
        sa.Column("policy_uri", sa.Text, nullable=False),
        sa.Column("score", sa.Float),
        sa.Column("env_scores", sa.JSON),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_run_checkpoints_checkpoint_id", "run_checkpoints", ["checkpoint_id"])
    op.create_table(
        "episodes",
        sa.Column("checkpoint_digest", sa.String(80), primary_key=True),
        sa.Column("env_name", sa.String(200), primary_key=True),
        sa.Column("env_spec_hash", sa.String(64), primary_key=True),
        sa.Column("seed", sa.BigInteger, primary_key=True),
        sa.Column("evaluator_version", sa.String(50), primary_key=True),
        sa.Column("rewards", sa.JSON, nullable=False),
        sa.Column("reward_mean", sa.Float, nullable=False),
        sa.Column("steps", sa.Integer, nullable=False),
        sa.Column("success", sa.Boolean, nullable=False),
        sa.Column("stats", sa.JSON, nullable=False),
        sa.Column("wall_s", sa.Float, nullable=False),
        sa.Column("replay_uri", sa.Text),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="SET NULL")),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("episodes", "run_checkpoints", "checkpoints", "runs"):
        op.drop_table(table)
