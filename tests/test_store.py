"""The results database, on SQLite and on a real PostgreSQL 15 (`results_db_url` runs each test on both):
migrations, reuse across runs, resume after the driver is killed, an outage mid-run, the password."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, insert, inspect, select

from evaluator.store.database import migrate, open_database
from evaluator.store.schema import episodes, metadata, runs
from tests.conftest import state_dict_bytes, tiny_model
from tests.support.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS, EPISODES = 8, 40
TOTAL = CHECKPOINTS * 2 * EPISODES
"""Episodes of the resume plan: the smoke suite's two environments."""


def test_migrations_from_empty_and_from_the_previous_version(results_db_url: str):
    old = create_engine(results_db_url)
    migrate(old, "0001")
    assert "leases" not in inspect(old).get_table_names()
    with old.begin() as connection:
        run_id = connection.execute(
            insert(runs).values(name="old", suite="smoke", evaluator_version="0", status="complete", config={},
                                started_at=1.0)
        ).inserted_primary_key[0]  # fmt: skip
        connection.execute(
            insert(episodes).values(checkpoint_digest="sha256:ab", env_name="e", env_spec_hash="h", seed=7,
                                    evaluator_version="0", rewards=[1.0, 0.5], reward_mean=0.75, steps=3,
                                    success=True, stats={}, wall_s=0.1, run_id=run_id, created_at=1.0)
        )  # fmt: skip
    old.dispose()
    engine = open_database(results_db_url)  # first use: migrated to the latest version, data kept
    found = inspect(engine)
    for table in metadata.sorted_tables:  # the migrations build exactly the tables schema.py declares
        assert {c["name"] for c in found.get_columns(table.name)} == set(table.columns.keys()), table.name
    with engine.connect() as connection:
        row = connection.execute(select(episodes)).one()
    assert row.rewards == [1.0, 0.5] and row.run_id == run_id


def evaluator_run(data: Path, url: str, run_name: str, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "evaluator", "run", "-p", str(data / "run"), "--checkpoints", "all"]
    command += ["--suite", "smoke", "--episodes", str(EPISODES), "--shard-size", "4", "--no-replays"]
    command += ["--execution", "in-process", "--results-db", url, "--data-dir", str(data), "--no-progress"]
    return subprocess.Popen(
        [*command, "--run-name", run_name, *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RESULTS_DB_URL")},
    )


def stored_episodes(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(episodes)).scalar_one()
    except Exception:  # noqa: BLE001 - not created yet
        return 0
    finally:
        engine.dispose()


def wait_until_stored(url: str, process: subprocess.Popen, at_least: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while stored_episodes(url) < at_least:
        assert process.poll() is None, f"the run ended before storing {at_least} episodes: {process.stderr.read()}"
        assert time.monotonic() < deadline, "no episodes stored in time"
        time.sleep(0.02)


@pytest.fixture
def checkpoints(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    for index in range(CHECKPOINTS):
        model, kwargs = tiny_model(index)
        (run / f"ckpt_{index}.pt").write_bytes(state_dict_bytes(model, kwargs))
    return tmp_path


@pytest.mark.slow
def test_a_killed_driver_resumes_with_only_the_missing_episodes(results_db_url: str, checkpoints: Path):
    killed = evaluator_run(checkpoints, results_db_url, "killed")
    wait_until_stored(results_db_url, killed, at_least=16)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    stored = stored_episodes(results_db_url)
    assert 16 <= stored < TOTAL, "the driver was killed mid-run"
    assert stored % 4 == 0, "episodes are stored a whole unit at a time"
    assert not (checkpoints / "killed" / "report.json").exists()

    resumed = evaluator_run(checkpoints, results_db_url, "resumed")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    timing = json.loads(out)["timing"]
    assert timing["episodes"] == TOTAL and timing["episodes_cached"] == stored, timing
    assert stored_episodes(results_db_url) == TOTAL

    again = evaluator_run(checkpoints, results_db_url, "again")  # reuse across runs: nothing left to play
    out_again, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    report, report_again = json.loads(out), json.loads(out_again)
    assert report_again["timing"]["episodes_cached"] == TOTAL and report_again["timing"]["units"] == 0
    assert [c["metrics"] for c in report_again["policies"][0]["checkpoints"]] == [
        c["metrics"] for c in report["policies"][0]["checkpoints"]
    ]
    engine = open_database(results_db_url)
    with engine.connect() as connection:
        statuses = dict(connection.execute(select(runs.c.name, runs.c.status)).all())
    assert statuses == {"killed": "running", "resumed": "complete", "again": "complete"}


@pytest.mark.slow
@pytest.mark.postgres
def test_a_database_that_goes_away_mid_run_exits_3_with_nothing_half_written(checkpoints: Path):
    with PostgresServer() as server:
        url = server.create_database("goes_away")
        password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
        run = evaluator_run(checkpoints, url, "cut")
        wait_until_stored(url, run, at_least=8)
        server.stop()
        out, err = run.communicate(timeout=120)
    assert run.returncode == 3, err
    assert json.loads(out)["retryable"] is True
    assert "results database" in err and "unavailable" in err and "retry" in err
    assert password not in out + err and "***" in err
    run_dir = checkpoints / "cut"
    assert not (run_dir / "report.json").exists()
    assert not list(run_dir.glob("*.parquet")) and not list(run_dir.glob(".*.tmp")), list(run_dir.iterdir())


def test_an_unreachable_database_is_an_outage_and_its_password_is_never_printed(tmp_path: Path):
    url = "postgresql://evaluator:s3cret-Passw0rd@127.0.0.1:9/results"
    done = subprocess.run(
        [sys.executable, "-m", "evaluator", "run", "-p", "builtin://navigator", "--suite", "smoke", "--results-db", url,
         "--data-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "RESULTS_DB_URL"},
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "s3cret-Passw0rd" not in done.stdout + done.stderr
    assert "postgresql+psycopg://evaluator:***@127.0.0.1:9/results" in done.stderr


def test_the_schema_version_the_store_expects_is_the_latest_migration():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from evaluator.store.database import MIGRATIONS, SCHEMA_VERSION

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_VERSION
