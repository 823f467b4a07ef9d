"""Load: 100 checkpoints x the smoke suite on 2 workers completes, and worker memory stays bounded by the
LRU policy cache, not by the number of checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluator.config import EvalConfig
from evaluator.run.driver import evaluate
from tests.conftest import state_dict_bytes, tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


def test_hundred_checkpoints_on_two_workers(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    for index in range(100):
        model, kwargs = tiny_model(index, hidden=64)
        (run / f"ckpt_{index}.pt").write_bytes(state_dict_bytes(model, kwargs))
    config = EvalConfig(
        policy_uris=(str(run),),
        checkpoints="all",
        suite="smoke",
        episodes=1,
        num_workers=2,
        policy_cache_size=4,
        replays=False,
        data_dir=tmp_path / "data",
    )
    report = evaluate(config).report
    checkpoints = report.policies[0].checkpoints
    assert len(checkpoints) == 100 and all(c.metrics and not c.error for c in checkpoints)
    assert [c.name for c in checkpoints[:3]] == ["ckpt_0", "ckpt_1", "ckpt_2"]
    for worker in report.workers:
        assert worker.cached_policies <= 4
        assert worker.peak_rss_mb < 1500, worker
    # Units go where their policy is loaded (the workers report their policy caches): about one load each.
    assert 100 <= report.timing.policy_loads <= 110, report.timing.policy_loads
    assert 0 < report.timing.driver_peak_rss_mb < 4000
    print({w.worker: round(w.peak_rss_mb) for w in report.workers}, report.timing.wall_s)


def test_the_object_store_holds_only_the_checkpoints_in_flight(tmp_path: Path):
    """40 checkpoints, 2 workers: a checkpoint's bytes are put when its first unit is sent and dropped when its
    last one is reported, so the Ray executor never holds more than the few checkpoints its workers are on."""
    from bench.scheduler import Planned
    from evaluator.run.plan import make_plan
    from evaluator.run.ray_cluster import worker_factory
    from evaluator.run.ray_executor import RayExecutor
    from evaluator.run.scheduler import schedule
    from evaluator.sources import resolve
    from sim.suites import get_suite

    run = tmp_path / "run"
    run.mkdir()
    for index in range(40):
        model, kwargs = tiny_model(index)
        (run / f"ckpt_{index}.pt").write_bytes(state_dict_bytes(model, kwargs))
    checkpoints = resolve(str(run), "all")
    units = make_plan(checkpoints, get_suite("smoke").with_episodes(2), shard_size=1, replays=False)
    config = EvalConfig(policy_uris=(str(run),), num_workers=2)
    executor = RayExecutor(worker_factory(config.workers), 2)
    source = Planned(units, {c.digest: c.data for c in checkpoints})
    held: list[int] = []
    reported: list[int] = []
    refs = executor._refs  # the checkpoint bytes the executor holds in the object store
    executor.start()
    try:
        schedule(executor, source, lambda unit, result: (held.append(len(refs)), reported.append(unit.unit_id)),
                 max_attempts=3)  # fmt: skip
        assert refs == {}, "every checkpoint's bytes were let go with its last unit"
    finally:
        executor.close()  # the shared Ray has 2 CPUs: leave them to the next test
    assert sorted(reported) == [u.unit_id for u in units]
    assert max(held) <= 4, max(held)
