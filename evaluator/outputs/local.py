"""Writing a run's local outputs: report.json, episodes.parquet, replays. Every file is written to a temporary
name in its directory and renamed into place, so a reader never sees half a file; report.json is written
last and marks the run complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from evaluator.report import Report
from sim.errors import UsageError
from sim.metrics import EpisodeResult
from sim.replays import REPLAY_SUFFIX


@dataclass(frozen=True)
class EpisodeRow:
    policy_uri: str
    checkpoint: str
    version: str
    digest: str
    result: EpisodeResult


EPISODE_SCHEMA = pa.schema(
    [
        ("policy_uri", pa.string()),
        ("checkpoint", pa.string()),
        ("version", pa.string()),
        ("digest", pa.string()),
        ("env", pa.string()),
        ("episode", pa.int32()),
        ("seed", pa.int64()),
        ("rewards", pa.list_(pa.float32())),
        ("reward_mean", pa.float64()),
        ("steps", pa.int32()),
        ("success", pa.bool_()),
        ("wall_s", pa.float64()),
    ]
)


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(data_dir: Path) -> None:
    """Fail before any evaluation if outputs could not be written."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise UsageError(f"DATA_DIR {data_dir} is not writable ({exc.strerror}); pass --data-dir") from None


def replay_path(run_dir: Path, checkpoint_index: int, checkpoint_name: str, env: str, episode: int) -> Path:
    return run_dir / "replays" / f"{checkpoint_index:03d}_{checkpoint_name}" / f"{env}_ep{episode}{REPLAY_SUFFIX}"


def write_episodes(path: Path, rows: Sequence[EpisodeRow]) -> None:
    table = pa.Table.from_pylist(
        [
            {
                "policy_uri": row.policy_uri,
                "checkpoint": row.checkpoint,
                "version": row.version,
                "digest": row.digest,
                "env": row.result.env,
                "episode": row.result.episode,
                "seed": row.result.seed,
                "rewards": list(row.result.rewards),
                "reward_mean": row.result.reward_mean,
                "steps": row.result.steps,
                "success": row.result.success,
                "wall_s": row.result.wall_s,
            }
            for row in rows
        ],
        schema=EPISODE_SCHEMA,
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write(path, sink.getvalue().to_pybytes())


def write_report(run_dir: Path, report: Report) -> Path:
    path = run_dir / "report.json"
    atomic_write(path, report.model_dump_json(indent=2).encode())
    return path
