"""Runs in the results database: one row when an evaluation starts (status `running`), its checkpoints with
the scores it reported and its timing when it ends (`complete`, or `failed` when a checkpoint or the
delivery failed). A driver that was killed leaves its run `running`; the episodes it finished are stored
and the next run with the same store plays only what is missing."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select, update

from evaluator import __version__
from evaluator.reduce.report import CheckpointReport, Timing
from evaluator.secrets import redact_tree
from evaluator.store.database import errors_of, open_database
from evaluator.store.schema import checkpoints, run_checkpoints, runs

BATCH = 500
"""Rows per statement (and digests per IN list): far below SQLite's limit on bound parameters."""


class RunStatus:
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


@dataclass(frozen=True)
class RecordedCheckpoint:
    policy_uri: str
    report: CheckpointReport
    rating: dict | None = None
    """`{mu, sigma, ordinal, elo, games}` from the run's mixed episodes (`Report.ratings`); None without them."""


def mixed_play(report: CheckpointReport) -> dict | None:
    """What the checkpoint's mixed line-ups gave it: per mixed environment its own, the co-players' and everyone's
    mean reward, and its value over replacement; None when it played no mixed environment."""
    metrics = report.metrics
    if metrics is None:
        return None
    environments = {
        env: {"score": m.score, "npc_score": m.npc_score, "all_score": m.all_score}
        for env, m in metrics.environments.items()
        if m.lineup is not None
    }
    vor = metrics.vor.value if metrics.vor is not None else None
    if not environments and vor is None:
        return None
    return {"environments": environments, "vor": vor}


class RunLog:
    """Records one run; `run_id` is what its episodes reference."""

    def __init__(self, url: str, name: str, suite: str, config: dict) -> None:
        """`config` is stored redacted (`redact_tree`): the secrets of any URL in it (OUTPUT_URI, RAY_ADDRESS...)
        never reach the database; the caller's SecretStr fields (the database URL, API keys) are already ***."""
        self.url = url
        self._engine = open_database(url)
        with errors_of(url, "recording the run"), self._engine.begin() as connection:
            previous = connection.execute(select(runs.c.id).where(runs.c.name == name)).scalar()
            values = {
                "suite": suite,
                "evaluator_version": __version__,
                "status": RunStatus.RUNNING,
                "config": redact_tree(config),
                "timing": None,
                "started_at": time.time(),
                "finished_at": None,
            }
            if previous is None:  # a run name given again (`--run-name demo`) is that run, done again
                self.run_id: int = connection.execute(insert(runs).values(name=name, **values)).inserted_primary_key[0]
            else:
                self.run_id = previous
                connection.execute(update(runs).where(runs.c.id == previous).values(**values))
                connection.execute(delete(run_checkpoints).where(run_checkpoints.c.run_id == previous))

    def finish(self, evaluated: Iterable[RecordedCheckpoint], timing: Timing, failed: bool) -> None:
        """The run's checkpoints in its order, with what the report says of each, and its end. In one
        transaction, a few statements per 500 checkpoints, holding 500 at a time, whatever the run's size."""
        with errors_of(self.url, "recording the run's results"), self._engine.begin() as connection:
            numbered = enumerate(evaluated)
            while batch := list(itertools.islice(numbered, BATCH)):
                identities = {
                    (c.report.uri, c.report.digest): {
                        "digest": c.report.digest, "uri": c.report.uri, "name": c.report.name,
                        "version": c.report.version,
                    }
                    for _, c in batch
                }  # fmt: skip
                ids = self._checkpoint_ids(connection, identities)
                connection.execute(insert(run_checkpoints), [self._row(position, c, ids) for position, c in batch])
            status = RunStatus.FAILED if failed else RunStatus.COMPLETE
            connection.execute(
                update(runs)
                .where(runs.c.id == self.run_id)
                .values(status=status, timing=timing.model_dump(mode="json"), finished_at=time.time())
            )

    def _row(self, position: int, checkpoint: RecordedCheckpoint, ids: dict[tuple[str, str], int]) -> dict:
        report, metrics = checkpoint.report, checkpoint.report.metrics
        return {
            "run_id": self.run_id,
            "position": position,
            "checkpoint_id": ids[(report.uri, report.digest)],
            "policy_uri": checkpoint.policy_uri,
            "score": next(iter(metrics.suite_scores.values())) if metrics else None,
            "env_scores": {env: m.score for env, m in metrics.environments.items()} if metrics else None,
            "error": report.error,
            "rating": checkpoint.rating,
            "mixed": mixed_play(report),
        }

    @staticmethod
    def _checkpoint_ids(connection: Connection, identities: dict[tuple[str, str], dict]) -> dict[tuple[str, str], int]:
        """The id of each (uri, digest), inserting the checkpoints seen for the first time."""

        def known() -> dict[tuple[str, str], int]:
            found = {}
            digests = sorted({digest for _, digest in identities})
            for start in range(0, len(digests), BATCH):
                query = select(checkpoints.c.id, checkpoints.c.uri, checkpoints.c.digest).where(
                    checkpoints.c.digest.in_(digests[start : start + BATCH])
                )
                found.update({(row.uri, row.digest): row.id for row in connection.execute(query)})
            return found

        ids = known()
        new = [values for identity, values in identities.items() if identity not in ids]
        if new:
            for start in range(0, len(new), BATCH):
                connection.execute(insert(checkpoints), new[start : start + BATCH])
            ids = known()
        return ids

    def discard(self) -> None:
        """The run took no checkpoint (a sweep with nothing new to evaluate): it leaves no row behind."""
        with errors_of(self.url, "discarding an empty run"), self._engine.begin() as connection:
            connection.execute(delete(runs).where(runs.c.id == self.run_id))

    def failed(self) -> None:
        """The evaluation stopped with an error before its report (bad input found late, an outage)."""
        with errors_of(self.url, "recording the run's failure"), self._engine.begin() as connection:
            connection.execute(
                update(runs).where(runs.c.id == self.run_id).values(status=RunStatus.FAILED, finished_at=time.time())
            )
