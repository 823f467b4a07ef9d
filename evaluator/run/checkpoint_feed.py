"""Checkpoints fetched just ahead of need: a bounded pool of download threads over the listed candidates, so
an evaluation of 10,000 checkpoints holds the bytes of a few dozen at a time, not of all of them, and the
first episodes start after the first download, not the last.

A checkpoint is *resident* from the moment its download starts until the driver `release`s it (its units
are all reported, or it has none to run); at most `max_resident` are. Downloads are I/O (files, S3, W&B),
so threads overlap them with the evaluation; a download failure is that checkpoint's `error`
(`evaluator.sources.fetch`), any other exception is a bug and is raised in the driver's thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from evaluator.sources import Candidate, Checkpoint, fetch

MAX_CONCURRENT_FETCHES = 8
"""Downloads in progress at once: enough to hide S3/W&B latency, few enough not to be throttled."""


class CheckpointFeed:
    """Fetches `candidates` in order, at most `max_resident` held (downloading or fetched, not released)."""

    def __init__(self, candidates: Sequence[Candidate], max_resident: int) -> None:
        if max_resident < 1:
            raise ValueError("max_resident must be >= 1")
        self._candidates: list[Candidate | None] = list(candidates)
        """Each is dropped once downloaded (10,000 listed candidates and their closures add up)."""
        self._max_resident = max_resident
        fetchers = min(MAX_CONCURRENT_FETCHES, max_resident)
        self._pool = ThreadPoolExecutor(max_workers=fetchers, thread_name_prefix="fetch")
        self._arrived: queue.Queue[tuple[int, Checkpoint | BaseException]] = queue.Queue()
        self._lock = threading.Lock()
        self._next = 0
        self._resident = 0
        self._outstanding = 0
        """Downloads started whose result has not been handed out yet."""
        self.peak_resident = 0

    def __len__(self) -> int:
        return len(self._candidates)

    @property
    def max_resident(self) -> int:
        return self._max_resident

    def widen(self, max_resident: int) -> None:
        """Allow more resident checkpoints (the driver learns its worker count after the first download)."""
        self._max_resident = max(self._max_resident, max_resident)
        self._top_up()

    def fetching(self) -> bool:
        """Whether a download is in progress or done but not handed out (worth polling `arrived` for)."""
        return self._outstanding > 0

    def exhausted(self) -> bool:
        """Every candidate has been handed out."""
        return self._next == len(self._candidates) and self._outstanding == 0

    def arrived(self, timeout: float | None = 0.0) -> list[tuple[int, Checkpoint]]:
        """Fetched checkpoints as (index in `candidates`, checkpoint), in arrival order; waits up to `timeout`
        seconds for the first (None: until one arrives), returns [] at once when nothing is outstanding."""
        self._top_up()
        if not self._outstanding:
            return []
        items = []
        try:
            items.append(self._arrived.get(block=timeout != 0.0, timeout=timeout or None))
            while True:
                items.append(self._arrived.get_nowait())
        except queue.Empty:
            pass
        self._outstanding -= len(items)
        fetched = []
        for index, outcome in items:
            if isinstance(outcome, BaseException):
                raise outcome
            fetched.append((index, outcome))
        return fetched

    def release(self, count: int = 1) -> None:
        """`count` fetched checkpoints are no longer needed: their places go to the next downloads."""
        self._resident -= count
        self._top_up()

    def close(self) -> None:
        """Stop: downloads not started are cancelled (one in progress finishes in its thread)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _top_up(self) -> None:
        with self._lock:
            while self._next < len(self._candidates) and self._resident < self._max_resident:
                index = self._next
                self._next += 1
                self._resident += 1
                self._outstanding += 1
                self._pool.submit(self._download, index)
            self.peak_resident = max(self.peak_resident, self._resident)

    def _download(self, index: int) -> None:
        candidate, self._candidates[index] = self._candidates[index], None
        assert candidate is not None, "each candidate is downloaded once"
        try:
            outcome: Checkpoint | BaseException = fetch(candidate)
        except BaseException as exc:  # a bug, not a download failure: re-raised in the driver's thread
            outcome = exc
        self._arrived.put((index, outcome))
