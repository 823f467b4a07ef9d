"""The real command in a fresh process: it starts (and stops) its own local Ray, and its stdout is
exactly one JSON document."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evaluator", "run", "--no-progress", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_fresh_process_prints_only_the_report(tmp_path: Path):
    done = run_cli("-p", "builtin://navigator", "--suite", "smoke", "--data-dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["simulation_suite"] == "smoke"
    assert report["policies"][0]["checkpoints"][0]["metrics"]["suite_scores"]["smoke/score"] > 0
    assert "Traceback" not in done.stderr


def test_fresh_process_usage_error(tmp_path: Path):
    done = run_cli("-p", "builtin://navigator", "--suite", "nope", "--data-dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"].startswith("unknown suite 'nope'")
    assert done.stderr.strip().splitlines()[-1].startswith("error: unknown suite")
