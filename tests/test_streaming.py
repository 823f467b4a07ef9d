"""Checkpoints stream: listed first, downloaded a bounded number ahead, let go when their units are in, so the
driver's memory does not grow with the number of checkpoints."""

from __future__ import annotations

import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from evaluator.config import EvalConfig, Execution
from evaluator.run.checkpoint_feed import CheckpointFeed
from evaluator.run.driver import evaluate
from evaluator.sources import Candidate
from sim.errors import EvaluatorError
from tests.conftest import large_checkpoints


class Downloads:
    """Candidates whose downloads take a little while and count how many run at once."""

    def __init__(self, count: int, fail: frozenset[int] = frozenset()) -> None:
        self.lock = threading.Lock()
        self.running = self.peak_running = 0
        self.started: list[int] = []
        self.fail = fail
        self.candidates = [Candidate(f"c{i}", f"file:///c{i}", f"v{i}", self._fetcher(i)) for i in range(count)]

    def _fetcher(self, index: int):
        def fetch() -> bytes:
            with self.lock:
                self.started.append(index)
                self.running += 1
                self.peak_running = max(self.peak_running, self.running)
            time.sleep(0.005)
            with self.lock:
                self.running -= 1
            if index in self.fail:
                raise EvaluatorError(f"c{index} is gone")
            return f"bytes of {index}".encode()

        return fetch


def test_the_feed_holds_at_most_max_resident_checkpoints():
    downloads = Downloads(60, fail=frozenset({7}))
    feed = CheckpointFeed(downloads.candidates, max_resident=5)
    held: dict[int, bytes] = {}
    seen, peak_held = [], 0
    try:
        while not feed.exhausted():
            for index, checkpoint in feed.arrived(timeout=None):
                seen.append(index)
                if checkpoint.error:
                    assert index == 7 and checkpoint.error == "c7 is gone"
                    feed.release()
                else:
                    assert checkpoint.data == f"bytes of {index}".encode()
                    held[index] = checkpoint.data
            peak_held = max(peak_held, len(held))
            if held:  # the driver finishes the oldest checkpoint it holds
                del held[min(held)]
                feed.release()
    finally:
        feed.close()
    assert sorted(seen) == list(range(60)), "every candidate handed out once"
    assert sorted(downloads.started) == list(range(60)), "every candidate downloaded once"
    assert feed.peak_resident == 5 and peak_held <= 5
    assert downloads.peak_running > 1, "downloads overlap"


def test_a_bug_in_a_download_is_raised_in_the_driver():
    def broken() -> bytes:
        raise KeyError("bug")

    feed = CheckpointFeed([Candidate("c", "file:///c", "v1", broken)], max_resident=2)
    with pytest.raises(KeyError):
        feed.arrived(timeout=None)
    feed.close()


def test_an_evaluation_holds_a_bounded_number_of_checkpoints(tmp_path: Path):
    """24 checkpoints of ~7.6 MB (180 MB together), at most 2 resident: the driver's Python allocations peak
    at a few checkpoints' worth, not at the run's."""
    run, size_mb = large_checkpoints(tmp_path / "run", 24)
    config = EvalConfig(
        policy_uris=(str(run),),
        checkpoints="all",
        suite="smoke",
        episodes=1,
        max_resident_checkpoints=2,
        execution=Execution.IN_PROCESS,
        replays=False,
        data_dir=tmp_path / "data",
    )
    tracemalloc.start()
    try:
        report = evaluate(config).report
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    checkpoints = report.policies[0].checkpoints
    assert [c.name for c in checkpoints] == [f"ckpt_{i}" for i in range(24)]
    assert all(c.metrics and not c.error for c in checkpoints)
    peak_mb = peak / 2**20
    assert peak_mb < 8 * size_mb, f"peak {peak_mb:.0f} MB of Python allocations, checkpoints {24 * size_mb:.0f} MB"
