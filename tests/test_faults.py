"""Faults on the shared Ray instance: a killed worker, a poison unit, a hung unit, and determinism
under any number of workers and shard size. Each compares against an undisturbed run."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evaluator.config import EvalConfig
from evaluator.run.driver import RunOutcome, evaluate
from tests.conftest import submission_zip

pytestmark = pytest.mark.usefixtures("ray_session")


def eval_worker_pids() -> list[int]:
    """Pids of live EvalWorker actors, from the GCS actor table (no dashboard needed)."""
    from ray._private.state import state

    return [
        int(actor["Pid"])
        for actor in state.actor_table(None).values()
        if actor.get("ActorClassName") == "RayEvalWorker" and actor.get("State") == "ALIVE" and actor.get("Pid")
    ]


def metrics(outcome: RunOutcome) -> list:
    return [(c.name, c.metrics, c.error) for p in outcome.report.policies for c in p.checkpoints]


def walls_config(tmp_path: Path, **overrides) -> EvalConfig:
    base = dict(
        policy_uris=("builtin://navigator", "builtin://random"),
        suite="navigation",
        env="walls",
        episodes=24,
        shard_size=2,
        num_workers=2,
        reuse_results=False,
        replays=False,
        data_dir=tmp_path,
    )
    return EvalConfig(**{**base, **overrides})


def test_killed_worker_loses_nothing(tmp_path: Path):
    """A deliberately slow policy (20 ms per agent-step) keeps the run going ~10 s, so the kill lands mid-run."""
    (tmp_path / "slow.zip").write_bytes(submission_zip(step="import time; time.sleep(0.02)"))
    config = EvalConfig(
        policy_uris=(str(tmp_path / "slow.zip"), "builtin://navigator"),
        suite="smoke",
        episodes=8,
        shard_size=2,
        num_workers=2,
        trust_remote_code=True,
        reuse_results=False,
        replays=False,
        data_dir=tmp_path,
    )
    clean = evaluate(config.model_copy(update={"run_name": "clean"}))
    outcome: list[RunOutcome] = []
    before = set(eval_worker_pids())
    runner = threading.Thread(target=lambda: outcome.append(evaluate(config.model_copy(update={"run_name": "cut"}))))
    runner.start()
    deadline = time.monotonic() + 60
    victims: list[int] = []
    while time.monotonic() < deadline and not victims:
        victims = [pid for pid in eval_worker_pids() if pid not in before]
        time.sleep(0.05)
    time.sleep(3.0)  # workers take ~1.5-2 s to boot; the evaluation itself lasts ~10 s
    os.kill(victims[0], signal.SIGKILL)
    runner.join(timeout=300)
    [disturbed] = outcome
    assert disturbed.report.timing.workers_replaced >= 1
    assert metrics(disturbed) == metrics(clean)
    assert not disturbed.failed


def test_poison_unit_becomes_its_checkpoints_error(tmp_path: Path):
    (tmp_path / "poison.zip").write_bytes(submission_zip(step="os._exit(3)"))
    config = EvalConfig(
        policy_uris=(str(tmp_path / "poison.zip"), "builtin://navigator"),
        suite="smoke",
        episodes=2,
        trust_remote_code=True,
        max_attempts=2,
        num_workers=2,
        data_dir=tmp_path,
    )
    outcome = evaluate(config)
    poison, navigator = (p.checkpoints[0] for p in outcome.report.policies)
    assert poison.error.startswith("failed 2 times") and poison.metrics is None
    assert navigator.error is None and navigator.metrics is not None
    assert outcome.failed and outcome.report.timing.workers_replaced >= 2


def test_hung_unit_times_out_and_others_finish(tmp_path: Path):
    (tmp_path / "hang.zip").write_bytes(submission_zip(step="import time; time.sleep(3600)"))
    config = EvalConfig(
        policy_uris=(str(tmp_path / "hang.zip"), "builtin://navigator"),
        suite="smoke",
        episodes=2,
        trust_remote_code=True,
        unit_timeout=4,
        num_workers=2,
        data_dir=tmp_path,
    )
    started = time.monotonic()
    outcome = evaluate(config)
    hung, navigator = (p.checkpoints[0] for p in outcome.report.policies)
    assert "timed out after 4 s (--unit-timeout)" in hung.error
    assert navigator.metrics is not None and navigator.error is None
    assert time.monotonic() - started < 60


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("reference")
    return metrics(evaluate(walls_config(tmp, env="tiny*", suite="smoke", episodes=5, num_workers=1, shard_size=5)))


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(workers=st.integers(1, 3), shard_size=st.integers(1, 5))
def test_same_metrics_for_any_workers_and_shard_size(reference, tmp_path: Path, workers: int, shard_size: int):
    config = walls_config(
        tmp_path,
        env="tiny*",
        suite="smoke",
        episodes=5,
        num_workers=workers,
        shard_size=shard_size,
        cpus_per_worker=0.5,
    )
    assert metrics(evaluate(config)) == reference
