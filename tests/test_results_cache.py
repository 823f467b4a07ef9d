"""The results cache: reuse, damage detection, and resuming after the driver was killed for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaluator.config import EvalConfig
from evaluator.driver import evaluate
from evaluator.results_cache import ResultsCache
from sim.metrics import EpisodeResult
from sim.suites import get_suite

SMOKE = get_suite("smoke")


def test_round_trip_and_damaged_entries(tmp_path: Path):
    cache = ResultsCache(tmp_path)
    env = SMOKE.envs[0]
    result = EpisodeResult(env=env.name, episode=3, seed=42, rewards=(1.0,), steps=20, stats={"a": 1.0}, replay=b"z")
    cache.put("sha256:ab12", env, result)
    assert cache.get("sha256:ab12", env, 42, episode=3) == result
    assert cache.get("sha256:ab12", env, 43, episode=3) is None
    assert ResultsCache(tmp_path, version="0.0.0").get("sha256:ab12", env, 42, 3) is None
    path = cache.path("sha256:ab12", env, 42)
    path.write_bytes(path.read_bytes()[:-20])  # torn write
    assert cache.get("sha256:ab12", env, 42, episode=3) is None
    cache.put("sha256:ab12", env, result)
    entry = json.loads(path.read_text())
    body = json.loads(entry["body"])
    body["rewards"] = [5.0]  # a valid entry with its body altered and its checksum left as it was
    path.write_text(json.dumps({**entry, "body": json.dumps(body)}))
    assert cache.get("sha256:ab12", env, 42, episode=3) is None
    path.write_text(json.dumps(entry))  # the untouched entry still reads back
    assert cache.get("sha256:ab12", env, 42, episode=3) == result


@pytest.mark.usefixtures("ray_session")
def test_second_run_plays_nothing_and_reports_the_same(tmp_path: Path):
    config = EvalConfig(policy_uris=("builtin://navigator",), suite="smoke", data_dir=tmp_path, episodes=3)
    first = evaluate(config).report
    second = evaluate(config.model_copy(update={"run_name": "again"})).report
    assert first.timing.episodes_cached == 0 and second.timing.episodes_cached == 6
    assert second.timing.workers == 0 and second.timing.agent_steps == 0
    assert [c.metrics for p in second.policies for c in p.checkpoints] == [
        c.metrics for p in first.policies for c in p.checkpoints
    ]
    assert second.policies[0].checkpoints[0].replay_url
    forced = evaluate(config.model_copy(update={"run_name": "forced", "reuse_results": False})).report
    assert forced.timing.episodes_cached == 0 and forced.timing.episodes == 6


@pytest.mark.slow
def test_resume_after_the_driver_is_killed(tmp_path: Path):
    """SIGKILL the whole CLI process group mid-run, run again: only missing episodes are played and the
    report equals a clean run's."""
    args = [sys.executable, "-m", "evaluator", "run", "--no-progress", "-p", "builtin://navigator"]
    args += ["--suite", "navigation", "--env", "walls*", "--episodes", "24", "--shard-size", "2", "--num-workers", "1"]
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    process = subprocess.Popen(
        [*args, "--data-dir", str(killed_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    entries = killed_dir / "cache" / "results"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(entries.rglob("*.json"))) < 6:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(list(entries.rglob("*.json")))
    assert 6 <= done_before < 48, "the kill must land mid-run"

    resumed = subprocess.run([*args, "--data-dir", str(killed_dir)], capture_output=True, text=True, timeout=300)
    clean = subprocess.run([*args, "--data-dir", str(clean_dir)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and clean.returncode == 0, resumed.stderr[-2000:]
    resumed_report, clean_report = json.loads(resumed.stdout), json.loads(clean.stdout)
    assert resumed_report["timing"]["episodes_cached"] == done_before
    assert resumed_report["timing"]["episodes"] == 48
    metrics = [c["metrics"] for p in resumed_report["policies"] for c in p["checkpoints"]]
    assert metrics == [c["metrics"] for p in clean_report["policies"] for c in p["checkpoints"]]
