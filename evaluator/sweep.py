"""`policy-evaluator sweep`: evaluate only the checkpoints the results cache does not hold yet, and each of
them once, even when sweeps overlap (the nightly RayCronJob, the webhook service's jobs, a person).

The results cache (`evaluator.results_cache`) is the memory of what was evaluated: a checkpoint is done when
every episode of the suite is cached under its content digest (and episode 0 with its replay when replays
are on). A sweep lists every checkpoint of each configured policy URI, skips the done ones, takes a lease on
each of the others, looks at the cache again under the lease (a sweep that finished it meanwhile has released
its lease), and evaluates the ones it holds in one `evaluate()` run: one report, delivered to OUTPUT_URI like
any run's.

Leases are files in DATA_DIR/leases/, next to the cache they guard: `<digest>.json` with the owner (sweep run
name), host, pid, a random token and an expiry. Every read-check-write of a lease file happens under an
exclusive `flock` on DATA_DIR/leases/.mutex (held for milliseconds, never during an evaluation), so taking
over a stale lease cannot race. A lease is **stale** when its expiry has passed, or at once when its holder
ran on this host and its pid no longer exists. A holder renews its leases every ttl/3 while it evaluates, so
only a dead, hung or partitioned sweep lets one lapse. On EFS (NFSv4.1) Linux implements flock with NFS byte-
range locks, which exclude across pods but not between threads of one process: a process-wide lock covers that.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from evaluator.config import EvalConfig
from evaluator.driver import RunOutcome, evaluate, load_suite, source_settings
from evaluator.outputs import preflight
from evaluator.outputs.local import atomic_write, check_writable
from evaluator.report import Report
from evaluator.results_cache import ResultsCache
from evaluator.sources import Checkpoint, resolve
from sim.envs import episode_seed
from sim.suites import Suite

logger = logging.getLogger(__name__)

LEASE_DIR = "leases"
_PROCESS_MUTEX = threading.Lock()
"""flock on NFS is per process: threads of one process take this first."""


# -- leases -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseRecord:
    """The content of one lease file."""

    key: str
    owner: str
    host: str
    pid: int
    token: str
    acquired_at: float
    expires_at: float

    def stale(self, now: float, host: str) -> bool:
        """Expired, or held by a process of this host that no longer exists."""
        return now >= self.expires_at or (self.host == host and not _pid_alive(self.pid))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class LeaseTable:
    """Leases on keys (checkpoint digests) in one directory, shared by every sweep that uses it."""

    def __init__(
        self,
        root: Path,
        owner: str,
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.time,
        host: str | None = None,
        pid: int | None = None,
    ) -> None:
        self.root = root
        self.owner = owner
        self.ttl_s = ttl_s
        self._clock = clock
        self._host = host or socket.gethostname()
        self._pid = pid or os.getpid()

    def try_acquire(self, key: str) -> Lease | None:
        """The lease on `key`, or None while another holder's lease is not stale."""
        with self._mutex():
            current = self.holder(key)
            now = self._clock()
            if current is not None and not current.stale(now, self._host):
                return None
            if current is not None:
                logger.warning(
                    "taking over the stale lease on %s of %s (host %s, pid %d)",
                    key, current.owner, current.host, current.pid,
                )  # fmt: skip
            record = LeaseRecord(key, self.owner, self._host, self._pid, uuid.uuid4().hex, now, now + self.ttl_s)
            self._write(record)
        return Lease(self, record)

    def acquire(self, key: str, wait_s: float = 0.0, poll_s: float = 0.5) -> Lease | None:
        """`try_acquire`, retried every `poll_s` for up to `wait_s` seconds."""
        deadline = time.monotonic() + wait_s
        while True:
            lease = self.try_acquire(key)
            if lease is not None or time.monotonic() >= deadline:
                return lease
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    def holder(self, key: str) -> LeaseRecord | None:
        """The lease record on `key` (stale or not); an unreadable file counts as no lease."""
        path = self._path(key)
        try:
            return LeaseRecord(**json.loads(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            logger.warning("ignoring damaged lease file %s (%s)", path, exc)
            return None

    def renew(self, lease: Lease) -> bool:
        """Push the expiry out by ttl; False when the lease was lost (it lapsed and another sweep took it)."""
        with self._mutex():
            current = self.holder(lease.key)
            if current is None or current.token != lease.token:
                return False
            self._write(LeaseRecord(**{**asdict(current), "expires_at": self._clock() + self.ttl_s}))
        return True

    def release(self, lease: Lease) -> None:
        """Remove the lease file if it is still ours."""
        with self._mutex():
            current = self.holder(lease.key)
            if current is not None and current.token == lease.token:
                self._path(lease.key).unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / f"{key.removeprefix('sha256:')}.json"

    def _write(self, record: LeaseRecord) -> None:
        atomic_write(self._path(record.key), json.dumps(asdict(record)).encode())

    @contextlib.contextmanager
    def _mutex(self) -> Iterator[None]:
        with _PROCESS_MUTEX:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.root / ".mutex", "a+b") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Lease:
    table: LeaseTable
    record: LeaseRecord

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def token(self) -> str:
        return self.record.token

    def renew(self) -> bool:
        return self.table.renew(self)

    def release(self) -> None:
        self.table.release(self)


class _Heartbeat:
    """Renews `leases` every `interval_s` in a background thread while the `with` block runs."""

    def __init__(self, leases: Sequence[Lease], interval_s: float) -> None:
        self._leases = list(leases)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            for lease in self._leases:
                if not lease.renew():
                    logger.error("lost the lease on %s (it lapsed and was taken over)", lease.key)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the sweep ----------------------------------------------------------------------------------------------------


class CheckpointState(StrEnum):
    EVALUATED = "evaluated"
    """This sweep held its lease and played its missing episodes."""
    CACHED = "cached"
    """Every episode already in the results cache (reported from it with --include-cached)."""
    LEASED_ELSEWHERE = "leased_elsewhere"
    """Another sweep holds its lease: it is being evaluated there."""
    DUPLICATE = "duplicate"
    """The same bytes as a checkpoint listed earlier in this sweep."""
    FAILED = "failed"
    """It could not be fetched, or its evaluation failed (see `error`)."""


class SweepConfig(BaseModel):
    """One sweep: an evaluation (its `checkpoints` selector picks among each policy's versions) plus the lease
    rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    evaluation: EvalConfig
    lease_ttl_s: float = Field(default=900.0, gt=0)
    """A lease not renewed for this long is stale; holders renew every third of it."""
    wait_for_leases_s: float = Field(default=0.0, ge=0)
    """Wait this long for a lease another sweep holds (then its results are usually cached)."""
    include_cached: bool = False
    """Also put already-cached checkpoints in the report (no episodes are played for them)."""

    @model_validator(mode="after")
    def _needs_the_cache(self) -> SweepConfig:
        if not self.evaluation.use_cache:
            raise ValueError("a sweep needs the results cache (it is how it knows what was evaluated)")
        return self


class SweptCheckpoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    policy_uri: str
    name: str
    version: str
    digest: str
    state: CheckpointState
    missing_episodes: int = Field(description="episodes not in the results cache when the sweep looked")
    holder: str | None = Field(default=None, description="the lease holder, for leased_elsewhere")
    error: str | None = None


class SweepResult(BaseModel):
    """What `policy-evaluator sweep` prints: every checkpoint's state and the report of what was evaluated."""

    model_config = ConfigDict(frozen=True)

    run_name: str
    simulation_suite: str
    checkpoints: list[SweptCheckpoint]
    report: Report | None = Field(description="the evaluation run's report; null when nothing was evaluated")

    def count(self, state: CheckpointState) -> int:
        return sum(1 for c in self.checkpoints if c.state is state)

    @computed_field
    @property
    def evaluated(self) -> int:
        return self.count(CheckpointState.EVALUATED)

    @computed_field
    @property
    def failed(self) -> bool:
        delivery_failed = self.report is not None and self.report.output is not None and bool(self.report.output.error)
        return delivery_failed or self.count(CheckpointState.FAILED) > 0


@dataclass
class _Claims:
    """The sweep's bookkeeping while it claims checkpoints."""

    rows: list[SweptCheckpoint]
    chosen: dict[str, list[Checkpoint]]
    held: list[Lease]


def sweep(config: SweepConfig, *, show_progress: bool = False) -> SweepResult:
    """List, claim, evaluate, release. Raises UsageError (before any lease is taken) on bad input."""
    evaluation = config.evaluation
    suite = load_suite(evaluation)
    check_writable(evaluation.data_dir)
    settings = source_settings(evaluation)
    if evaluation.output_uri:
        preflight(evaluation.output_uri, settings)
    found = [(uri, c) for uri in evaluation.policy_uris for c in resolve(uri, evaluation.checkpoints, settings)]
    table = LeaseTable(evaluation.data_dir / LEASE_DIR, owner=evaluation.run_name, ttl_s=config.lease_ttl_s)
    claims = _Claims(rows=[], chosen={}, held=[])
    outcome = None
    try:
        _claim_all(found, config, suite, ResultsCache(evaluation.data_dir), table, claims)
        if claims.chosen:
            run = evaluation.model_copy(update={"policy_uris": tuple(claims.chosen)})
            with _Heartbeat(claims.held, interval_s=config.lease_ttl_s / 3):
                outcome = evaluate(run, show_progress=show_progress, resolved=claims.chosen)
    finally:
        for lease in claims.held:
            lease.release()
    result = SweepResult(
        run_name=evaluation.run_name,
        simulation_suite=suite.name,
        checkpoints=_with_errors(claims.rows, outcome),
        report=outcome.report if outcome else None,
    )
    atomic_write(evaluation.data_dir / evaluation.run_name / "sweep.json", result.model_dump_json(indent=2).encode())
    logger.info(
        "sweep %s: %d evaluated, %d cached, %d leased elsewhere, %d failed",
        result.run_name, result.evaluated, result.count(CheckpointState.CACHED),
        result.count(CheckpointState.LEASED_ELSEWHERE), result.count(CheckpointState.FAILED),
    )  # fmt: skip
    return result


def _claim_all(
    found: Sequence[tuple[str, Checkpoint]],
    config: SweepConfig,
    suite: Suite,
    cache: ResultsCache,
    table: LeaseTable,
    claims: _Claims,
) -> None:
    """Decide each checkpoint's state; take and keep the leases of those to evaluate (in `claims.held`)."""
    replays = config.evaluation.replays
    seen: set[str] = set()
    for uri, checkpoint in found:
        row = {"policy_uri": uri, "name": checkpoint.name, "version": checkpoint.version, "digest": checkpoint.digest}
        if checkpoint.error:
            claims.rows.append(
                SweptCheckpoint(**row, state=CheckpointState.FAILED, missing_episodes=0, error=checkpoint.error)
            )
            continue
        if checkpoint.digest in seen:
            claims.rows.append(SweptCheckpoint(**row, state=CheckpointState.DUPLICATE, missing_episodes=0))
            continue
        seen.add(checkpoint.digest)
        missing = missing_episodes(cache, checkpoint.digest, suite, replays)
        lease = None
        if missing:
            lease = table.acquire(checkpoint.digest, wait_s=config.wait_for_leases_s)
            if lease is None:
                holder = table.holder(checkpoint.digest)
                state = CheckpointState.LEASED_ELSEWHERE
                claims.rows.append(
                    SweptCheckpoint(**row, state=state, missing_episodes=missing, holder=holder and holder.owner)
                )
                continue
            # Under the lease: a sweep that finished this checkpoint meanwhile has released its lease.
            missing = missing_episodes(cache, checkpoint.digest, suite, replays)
            if not missing:
                lease.release()
                lease = None
        state = CheckpointState.EVALUATED if lease else CheckpointState.CACHED
        claims.rows.append(SweptCheckpoint(**row, state=state, missing_episodes=missing))
        if lease:
            claims.held.append(lease)
        if lease or config.include_cached:
            claims.chosen.setdefault(uri, []).append(checkpoint)


def missing_episodes(cache: ResultsCache, digest: str, suite: Suite, replays: bool) -> int:
    """Episodes of `suite` the cache lacks for this checkpoint, by the rule `evaluate()` reuses them with."""
    missing = 0
    for env in suite.envs:
        for episode in range(env.episodes):
            result = cache.get(digest, env, episode_seed(suite.seed, env.name, episode), episode)
            if result is None or (replays and episode == 0 and result.replay is None):
                missing += 1
    return missing


def _with_errors(rows: list[SweptCheckpoint], outcome: RunOutcome | None) -> list[SweptCheckpoint]:
    """Checkpoints whose evaluation failed become FAILED with the report's error."""
    if outcome is None:
        return rows
    errors = {
        (policy.policy_uri, checkpoint.digest): checkpoint.error
        for policy in outcome.report.policies
        for checkpoint in policy.checkpoints
        if checkpoint.error
    }
    return [
        row.model_copy(update={"state": CheckpointState.FAILED, "error": errors[(row.policy_uri, row.digest)]})
        if (row.policy_uri, row.digest) in errors
        else row
        for row in rows
    ]


def read_policy_list(path: Path) -> list[str]:
    """A policies file: one policy URI per line; blank lines and `#` comments are ignored."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]
