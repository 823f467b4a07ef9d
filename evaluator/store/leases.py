"""Leases on checkpoints in the results database, so that overlapping sweeps (the nightly RayCronJob, the
webhook service's jobs, a person; on any node) evaluate each checkpoint once.

A lease is a row: the key (checkpoint digest), its holder (sweep run name, host, pid, a random token) and an
expiry. Taking one is a read-check-write in one transaction that holds the row: `SELECT ... FOR UPDATE` in
PostgreSQL (a missing row is inserted under a savepoint: of two sweeps inserting at once, one wins and the
other sees the conflict), a write transaction (`BEGIN IMMEDIATE`) in SQLite. A lease is **stale** when its
expiry has passed, or at once when its holder ran on this host and its pid no longer exists. A holder renews
its leases every ttl/3 while it evaluates, so only a dead, hung or partitioned sweep lets one lapse.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from evaluator.store.database import errors_of, open_database
from evaluator.store.schema import leases
from sim.errors import ServiceUnavailable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseRecord:
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
    """Leases on keys (checkpoint digests) in the results database at `url`, shared by every sweep using it."""

    def __init__(
        self,
        url: str,
        owner: str,
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.time,
        host: str | None = None,
        pid: int | None = None,
    ) -> None:
        self.url = url
        self._engine = open_database(url)
        self.owner = owner
        self.ttl_s = ttl_s
        self._clock = clock
        self._host = host or socket.gethostname()
        self._pid = pid or os.getpid()

    def try_acquire(self, key: str) -> Lease | None:
        """The lease on `key`, or None while another holder's lease is not stale."""
        with errors_of(self.url, "taking a lease"), self._engine.begin() as connection:
            row = connection.execute(select(leases).where(leases.c.key == key).with_for_update()).first()
            now = self._clock()
            record = LeaseRecord(key, self.owner, self._host, self._pid, uuid.uuid4().hex, now, now + self.ttl_s)
            if row is None:
                try:
                    with connection.begin_nested():
                        connection.execute(insert(leases).values(**record.__dict__))
                except IntegrityError:  # another sweep inserted it since our read: theirs
                    return None
                return Lease(self, record)
            current = LeaseRecord(**row._mapping)
            if not current.stale(now, self._host):
                return None
            logger.warning(
                "taking over the stale lease on %s of %s (host %s, pid %d)",
                key, current.owner, current.host, current.pid,
            )  # fmt: skip
            connection.execute(update(leases).where(leases.c.key == key).values(**record.__dict__))
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
        """The lease record on `key` (stale or not)."""
        with errors_of(self.url, "reading a lease"), self._engine.connect() as connection:
            row = connection.execute(select(leases).where(leases.c.key == key)).first()
        return None if row is None else LeaseRecord(**row._mapping)

    def renew(self, lease: Lease) -> bool:
        """Push the expiry out by ttl; False when the lease was lost (it lapsed and another sweep took it)."""
        with errors_of(self.url, "renewing a lease"), self._engine.begin() as connection:
            renewed = connection.execute(
                update(leases)
                .where(leases.c.key == lease.key, leases.c.token == lease.token)
                .values(expires_at=self._clock() + self.ttl_s)
            )
        return renewed.rowcount == 1

    def release(self, lease: Lease) -> None:
        """Remove the lease if it is still ours."""
        with errors_of(self.url, "releasing a lease"), self._engine.begin() as connection:
            connection.execute(delete(leases).where(leases.c.key == lease.key, leases.c.token == lease.token))


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
    """Renews `leases` (and those `hold` adds while it runs) every `interval_s` in a background thread while the
    `with` block runs. A database that is away for a beat is logged; the lease lapses only if it stays away for
    the rest of the ttl."""

    def __init__(self, leases: Sequence[Lease], interval_s: float) -> None:
        self._leases = list(leases)
        self._lock = threading.Lock()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def hold(self, lease: Lease) -> None:
        """Renew `lease` too, from the next beat on (a sweep takes its leases as checkpoints arrive)."""
        with self._lock:
            self._leases.append(lease)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            with self._lock:
                leases = list(self._leases)
            for lease in leases:
                try:
                    if not lease.renew():
                        logger.error("lost the lease on %s (it lapsed and was taken over)", lease.key)
                except ServiceUnavailable as exc:
                    logger.error("could not renew the lease on %s: %s", lease.key, exc)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
