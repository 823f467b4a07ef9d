"""The tables, as the latest migration leaves them (`migrations/versions/` creates them; tests check the two
agree). SQLAlchemy Core, no ORM: the store reads and writes rows in bulk."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("suite", String(200), nullable=False),
    Column("evaluator_version", String(50), nullable=False),
    Column("status", String(20), nullable=False),
    Column("config", JSON, nullable=False),
    Column("timing", JSON),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
)
"""One row per evaluation (`status`: running, complete, failed). `config` is EvalConfig without secrets."""

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("digest", String(80), nullable=False),
    Column("uri", Text, nullable=False),
    Column("name", String(300), nullable=False),
    Column("version", String(100), nullable=False),
    UniqueConstraint("uri", "digest", name="uq_checkpoints_uri_digest"),
)
"""A checkpoint as found at a URI; the same bytes at two URIs are two rows with one digest."""

run_checkpoints = Table(
    "run_checkpoints",
    metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("checkpoint_id", Integer, ForeignKey("checkpoints.id"), nullable=False, index=True),
    Column("policy_uri", Text, nullable=False),
    Column("score", Float),
    Column("env_scores", JSON),
    Column("error", Text),
    Column("rating", JSON),
    Column("mixed", JSON),
)
"""Which checkpoints a run evaluated, in its order, with the suite score and per-environment scores it
reported (or its error), the rating its mixed episodes gave it, and what its mixed line-ups scored."""

episodes = Table(
    "episodes",
    metadata,
    Column("checkpoint_digest", String(80), primary_key=True),
    Column("env_name", String(200), primary_key=True),
    Column("env_spec_hash", String(64), primary_key=True),
    Column("seed", BigInteger, primary_key=True),
    Column("evaluator_version", String(50), primary_key=True),
    Column("rewards", JSON, nullable=False),
    Column("reward_mean", Float, nullable=False),
    Column("steps", Integer, nullable=False),
    Column("success", Boolean, nullable=False),
    Column("stats", JSON, nullable=False),
    Column("wall_s", Float, nullable=False),
    Column("replay_uri", Text),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL")),
    Column("created_at", Float, nullable=False),
    Column("seats", JSON),
)
"""Every episode ever played. Its key is what its outcome is a function of (DESIGN.md: the seed depends only
on suite seed, environment and index), so a stored row *is* the result and is reused by any later run."""

leases = Table(
    "leases",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("token", String(64), nullable=False),
    Column("acquired_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)
"""The sweep's claim on a checkpoint (key = its digest) until `expires_at` (renewed while it evaluates)."""
