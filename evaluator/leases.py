"""Leases on checkpoints, so that overlapping sweeps (the nightly RayCronJob, the webhook service's jobs, a
person) evaluate each checkpoint once.

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
from pathlib import Path

from evaluator.outputs.local import atomic_write

logger = logging.getLogger(__name__)

LEASE_DIR = "leases"
_PROCESS_MUTEX = threading.Lock()
"""flock on NFS is per process: threads of one process take this first."""


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


class Heartbeat:
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

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
