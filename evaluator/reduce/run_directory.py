"""The run directory (DATA_DIR/<run>), written here and nowhere else: report.json, episodes.parquet, replays
(report.html is drawn by `evaluator.scorecard` and written with `atomic_write`; `evaluator.outputs` only
delivers the finished directory elsewhere). Every file is written to a temporary name in its
directory and renamed into place, so a reader never sees half a file; report.json marks the run complete
(only the page, drawn from it, follows it)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from evaluator.reduce.report import CheckpointReport, Report
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
    agent_policies: tuple[str, ...] = ()
    """Each agent's policy URI in a mixed episode; empty: the checkpoint's policy played every agent."""


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
        ("score", pa.float64()),
        ("agent_policies", pa.list_(pa.string())),
    ]
)
"""`reward_mean` is over every agent; `score` over the candidate's agents (the same unless co-players played);
`agent_policies` names each agent's policy (the checkpoint's policy URI, or a co-player's)."""


def atomic_write(path: Path, data: bytes) -> None:
    with atomic_file(path) as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A file written under a temporary name in its directory, renamed into place when the block ends
    without an exception (and removed when it raises)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
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


class EpisodeTable:
    """episodes.parquet, written as episodes arrive: rows are buffered and flushed as row groups of
    `ROW_GROUP_ROWS`, into a temporary file that `close` renames into place (`abort` removes it), so the
    driver never holds a run's rows and a reader never sees half a table. Rows are in arrival order."""

    ROW_GROUP_ROWS = 8192

    def __init__(self, path: Path) -> None:
        self._path = path
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[dict] = []

    def _open(self) -> pq.ParquetWriter:
        """On the first row group: a run that stops before its first episode (bad usage) leaves nothing."""
        if self._writer is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=f".{self._path.name}.", suffix=".tmp")
            os.close(fd)
            self._tmp = Path(tmp)
            self._writer = pq.ParquetWriter(self._tmp, EPISODE_SCHEMA)
        return self._writer

    def add(self, row: EpisodeRow) -> None:
        result = row.result
        self._buffer.append(
            {
                "policy_uri": row.policy_uri,
                "checkpoint": row.checkpoint,
                "version": row.version,
                "digest": row.digest,
                "env": result.env,
                "episode": result.episode,
                "seed": result.seed,
                "rewards": list(result.rewards),
                "reward_mean": result.reward_mean,
                "steps": result.steps,
                "success": result.success,
                "wall_s": result.wall_s,
                "score": result.score,
                "agent_policies": list(row.agent_policies) or [row.policy_uri] * len(result.rewards),
            }
        )
        if len(self._buffer) >= self.ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._open().write_table(pa.Table.from_pylist(self._buffer, schema=EPISODE_SCHEMA))
            self._buffer = []

    def close(self) -> None:
        """Write what is buffered and rename into place (an empty table when no episode came)."""
        self._flush()
        self._open().close()
        assert self._tmp is not None
        os.replace(self._tmp, self._path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


def write_report(run_dir: Path, report: Report) -> Path:
    path = run_dir / "report.json"
    atomic_write(path, report.model_dump_json(indent=2).encode())
    return path


CHECKPOINTS_SLOT = '"checkpoints": []'
CHECKPOINT_INDENT = " " * 8
"""Where a policy's checkpoints sit in the indented report: `policies` > list item > `checkpoints` > item."""


def write_report_streamed(run_dir: Path, skeleton: Report, checkpoints: Sequence[Iterable[CheckpointReport]]) -> Path:
    """report.json exactly as `write_report` would write the full report, without ever holding it: the
    skeleton (every policy with no checkpoints) is dumped, and each policy's empty list is replaced by its
    checkpoints (`checkpoints[i]` for policy i), dumped one at a time. 10,000 checkpoints on 20 environments
    are ~400 MB as models, so the driver never builds them all (BENCHMARKS.md, "scale")."""
    if any(policy.checkpoints for policy in skeleton.policies) or len(checkpoints) != len(skeleton.policies):
        raise ValueError("the skeleton's policies must have no checkpoints, and each one its own iterable")
    head, *tails = skeleton.model_dump_json(indent=2).split(CHECKPOINTS_SLOT)
    path = run_dir / "report.json"
    with atomic_file(path) as handle:
        handle.write(head.encode())
        for tail, policy_checkpoints in zip(tails, checkpoints, strict=True):
            handle.write(b'"checkpoints": [')
            separator = "\n"
            for checkpoint in policy_checkpoints:
                body = checkpoint.model_dump_json(indent=2).replace("\n", "\n" + CHECKPOINT_INDENT)
                handle.write(f"{separator}{CHECKPOINT_INDENT}{body}".encode())
                separator = ",\n"
            closing = "]" if separator == "\n" else "\n" + CHECKPOINT_INDENT[:-2] + "]"
            handle.write((closing + tail).encode())
    return path
