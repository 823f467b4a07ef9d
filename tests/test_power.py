"""`run --plan-only` (issue 24): the episodes an evaluation needs, estimated before anything is spent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evaluator.config import EvalConfig
from evaluator.reduce.power import plan_power
from evaluator.run.driver import evaluate

VENV_BIN = Path(sys.executable).parent
SUITE = """
name: noisy
envs:
  - name: scatter
    map: {kind: random, width: 11, height: 11, goals: 4}
    max_steps: 40
    episodes: 64
"""


def test_the_arithmetic_is_the_normal_approximation():
    plan = plan_power("s", {"e": [0.0, 1.0] * 50}, checkpoints=3, source="test", target_ci=0.1)
    (env,) = plan.environments
    assert env.sigma == pytest.approx(0.5025, abs=1e-3) and env.spread == 1.0 and env.difference == 0.1
    assert env.episodes_for_target_ci == 98  # ceil((1.96 * 0.5025 / 0.1)^2)
    assert env.episodes_for_difference == 397  # ceil((2.80 * sqrt(2) * 0.5025 / 0.1)^2)
    assert plan.total_episodes == 3 * 397
    flat = plan_power("s", {"e": [1.0, 1.0]}, checkpoints=1, source="test", target_ci=0.1)
    assert flat.environments[0].episodes_for_target_ci == 2  # nothing varies: two episodes show it


def _plan(tmp_path: Path, suite: Path, *extra: str) -> dict:
    command = [VENV_BIN / "policy-evaluator", "run", "-p", "builtin://random", "--suite", str(suite),
               "--data-dir", str(tmp_path), "--run-name", "plan", "--plan-only", "--no-progress", *extra]  # fmt: skip
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


@pytest.mark.slow
def test_plan_only_plays_nothing_and_predicts_what_target_ci_uses(tmp_path: Path):
    suite = tmp_path / "noisy.yaml"
    suite.write_text(SUITE)
    base = {"suite": str(suite), "data_dir": tmp_path, "execution": "in-process"}
    evaluate(EvalConfig(policy_uris=("builtin://random",), run_name="earlier", **base))  # 64 stored episodes
    plan = _plan(tmp_path, suite, "--target-ci", "0.25", "--max-episodes", "512")
    assert plan["source"] == "results database" and plan["environments"][0]["samples"] == 64
    assert not (tmp_path / "plan").exists() and not (tmp_path / "plan-pilot").exists()  # nothing evaluated
    predicted = plan["episodes_for_target_ci"]
    config = EvalConfig(policy_uris=("builtin://random",), run_name="adaptive", target_ci=0.25, max_episodes=512,
                        reuse_results=False, **base)  # fmt: skip
    used = evaluate(config).report.policies[0].checkpoints[0].metrics.environments["scatter"].episodes
    assert predicted / 2 <= used <= predicted * 2, (predicted, used)


def test_plan_only_runs_a_pilot_when_the_database_knows_nothing(tmp_path: Path):
    suite = tmp_path / "noisy.yaml"
    suite.write_text(SUITE)
    plan = _plan(tmp_path, suite, "--min-episodes", "6")
    assert plan["source"].startswith("pilot: 6 episodes of builtin://random")
    assert plan["environments"][0]["samples"] == 6 and plan["episodes_for_difference"] >= 2
