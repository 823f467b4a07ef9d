"""`policy-evaluator sweep`: the results database as the memory of what was evaluated, and leases in it so
that overlapping sweeps never evaluate a checkpoint twice. Every test touching leases or the store runs on
both engines (the `results_db_url` fixture: a SQLite file and a fresh PostgreSQL database).

The proofs are counts: every (checkpoint, environment, seed) episode is written to the results database
exactly once over all sweeps (a counting wrapper around `EpisodeStore.put` when the sweeps are threads of
this process), and the episodes the sweeps' reports say they played add up to exactly the suite's episodes
per checkpoint (when the sweeps are separate processes of the real CLI).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, delete, func, insert, inspect, select
from sqlalchemy.engine import make_url

import evaluator.run.sweep
from evaluator.config import EvalConfig, Execution
from evaluator.run.sweep import CheckpointState, SweepConfig, SweepResult, sweep
from evaluator.sources import resolve
from evaluator.store.database import open_database
from evaluator.store.episodes import EpisodeStore
from evaluator.store.leases import Heartbeat, LeaseRecord, LeaseTable
from evaluator.store.schema import episodes, leases, runs
from tests.conftest import large_checkpoints, state_dict_bytes, tiny_model
from tests.support.ray_head import VENV_BIN, RayHead, running_head

EPISODES = 2
SMOKE_ENVS = 2
PER_CHECKPOINT = EPISODES * SMOKE_ENVS
"""Episodes of one checkpoint: the smoke suite's two environments, EPISODES each."""


def write_checkpoints(directory: Path, seeds: range) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        model, kwargs = tiny_model(seed)
        path = directory / f"ckpt_{seed}.pt"
        path.write_bytes(state_dict_bytes(model, kwargs))
        paths.append(path)
    return paths


def sweep_config(data_dir: Path, *uris: str, run_name: str, results_db: str, **options) -> SweepConfig:
    evaluation = EvalConfig(
        policy_uris=uris,
        checkpoints="all",
        suite="smoke",
        episodes=EPISODES,
        data_dir=data_dir,
        run_name=run_name,
        num_workers=1,
        results_db=results_db,
    )
    return SweepConfig(evaluation=evaluation, **options)


def states(result: SweepResult) -> dict[str, CheckpointState]:
    return {c.name: c.state for c in result.checkpoints}


def evaluated_digests(result: SweepResult) -> set[str]:
    return {c.digest for c in result.checkpoints if c.state is CheckpointState.EVALUATED}


def lease_rows(url: str) -> dict[str, LeaseRecord]:
    """Every row of the `leases` table, by key."""
    with open_database(url).connect() as connection:
        return {row.key: LeaseRecord(**row._mapping) for row in connection.execute(select(leases))}


def plant(url: str, record: LeaseRecord) -> None:
    """A lease row as another (or a crashed) sweep left it, replacing any on its key."""
    with open_database(url).begin() as connection:
        connection.execute(delete(leases).where(leases.c.key == record.key))
        connection.execute(insert(leases).values(**dataclasses.asdict(record)))


def stored_episodes(url: str) -> int:
    with open_database(url).connect() as connection:
        return connection.execute(select(func.count()).select_from(episodes)).scalar_one()


def never_opened(url: str) -> bool:
    """Whether the database at `url` was left as the fixture made it: a SQLite file not even created, a
    PostgreSQL database without a table (not migrated). Looked at without `open_database`, which migrates."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return not Path(parsed.database).exists()
    engine = create_engine(url)
    try:
        return inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


# -- leases, without Ray ------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_lease_excludes_others_until_it_is_stale(results_db_url: str):
    clock = Clock()
    mine = LeaseTable(results_db_url, "sweep-a", ttl_s=60, clock=clock, host="pod-a")
    theirs = LeaseTable(results_db_url, "sweep-b", ttl_s=60, clock=clock, host="pod-b")
    lease = mine.try_acquire("sha256:abc")
    assert lease is not None and theirs.try_acquire("sha256:abc") is None
    assert theirs.holder("sha256:abc").owner == "sweep-a"
    assert theirs.try_acquire("sha256:other") is not None, "leases are per checkpoint"

    clock.now += 59
    assert lease.renew() and theirs.try_acquire("sha256:abc") is None, "renewed: good for another ttl"
    clock.now += 60  # not renewed for a whole ttl: stale
    taken = theirs.try_acquire("sha256:abc")
    assert taken is not None and theirs.holder("sha256:abc").owner == "sweep-b"
    assert not lease.renew(), "the lapsed holder learns it lost the lease"
    lease.release()
    assert theirs.holder("sha256:abc").token == taken.token, "a lost lease's release leaves the new holder's"
    taken.release()
    assert theirs.holder("sha256:abc") is None and "sha256:abc" not in lease_rows(results_db_url)
    assert set(lease_rows(results_db_url)) == {"sha256:other"}, "a release removes only its own row"


def test_a_lease_of_a_dead_process_on_this_host_is_stale_at_once(results_db_url: str):
    exited = subprocess.Popen(["true"])
    exited.wait()
    host = socket.gethostname()
    now = time.time()

    def plant_held_by(pid: int, on_host: str) -> None:
        plant(results_db_url, LeaseRecord("sha256:k", "crashed", on_host, pid, "t0", now, now + 3600))

    table = LeaseTable(results_db_url, "sweep", ttl_s=60)
    plant_held_by(os.getpid(), host)
    assert table.try_acquire("sha256:k") is None, "a live process on this host keeps its lease"
    plant_held_by(exited.pid, "another-pod")
    assert table.try_acquire("sha256:k") is None, "a pid on another host cannot be checked: wait for expiry"
    plant_held_by(exited.pid, host)
    assert table.try_acquire("sha256:k") is not None, "its process is gone: stale without waiting"
    assert lease_rows(results_db_url)["sha256:k"].owner == "sweep"


def test_leases_are_mutually_exclusive_under_contention(results_db_url: str):
    """Eight threads, each its own table (as eight sweeps), grab and drop one key until each held it five
    times: never two holders at once."""
    inside, most, got = [0], [0], Counter()
    guard = threading.Lock()
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def contend(owner: str) -> None:
        try:
            table = LeaseTable(results_db_url, owner, ttl_s=60)
            start.wait()
            deadline = time.monotonic() + 20
            while got[owner] < 5 and time.monotonic() < deadline:
                lease = table.try_acquire("sha256:hot")
                if lease is None:
                    time.sleep(0.0002)
                    continue
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.001)
                with guard:
                    inside[0] -= 1
                    got[owner] += 1
                lease.release()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(f"sweep-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert most[0] == 1, "two holders at once"
    assert got == dict.fromkeys(got, 5) and len(got) == 8, got
    assert not lease_rows(results_db_url), "every lease was released"


def test_the_heartbeat_keeps_a_lease_alive_while_its_holder_works(results_db_url: str):
    holder = LeaseTable(results_db_url, "busy", ttl_s=0.4, host="pod-a")
    other = LeaseTable(results_db_url, "other", ttl_s=0.4, host="pod-b")
    lease = holder.try_acquire("sha256:k")
    with Heartbeat([lease], interval_s=0.1):
        deadline = time.monotonic() + 1.2  # three ttls
        while time.monotonic() < deadline:
            assert other.try_acquire("sha256:k") is None
            time.sleep(0.05)
    time.sleep(0.5)
    assert other.try_acquire("sha256:k") is not None, "without heartbeats it lapses after one ttl"


def test_a_sweep_holds_a_bounded_number_of_checkpoints_and_records_no_empty_run(tmp_path: Path):
    """A sweep is `evaluate` with a lease admission: 24 checkpoints of ~7.6 MB (180 MB together), at most 2
    resident, whether they are claimed (first sweep) or found cached (second): the driver's Python allocations
    peak at a few checkpoints' worth, not at the run's (the old sweep downloaded every version first). A sweep
    that takes nothing leaves no report and no run in the database."""
    run, size_mb = large_checkpoints(tmp_path / "run", 24)
    data = tmp_path / "data"
    db = f"sqlite:///{data / 'results.db'}"

    def bounded_sweep(run_name: str) -> SweepResult:
        config = sweep_config(data, str(run), run_name=run_name, results_db=db)
        evaluation = config.evaluation.model_copy(
            update={"max_resident_checkpoints": 2, "execution": Execution.IN_PROCESS, "replays": False}
        )
        tracemalloc.start()
        try:
            result = sweep(config.model_copy(update={"evaluation": evaluation}))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        peak_mb = peak / 2**20
        assert peak_mb < 8 * size_mb, f"{run_name}: peak {peak_mb:.0f} MB, checkpoints {24 * size_mb:.0f} MB"
        return result

    first = bounded_sweep("first")
    assert first.evaluated == 24 and [c.name for c in first.report.policies[0].checkpoints] == [
        f"ckpt_{i}" for i in range(24)
    ]
    second = bounded_sweep("second")
    assert second.count(CheckpointState.CACHED) == 24 and second.report is None
    assert not (data / "second" / "report.json").exists() and (data / "second" / "sweep.json").is_file()
    with open_database(db).connect() as connection:
        names = [row.name for row in connection.execute(select(runs.c.name))]
    assert names == ["first"], "the sweep that took nothing recorded no run"


# -- sweeps on the shared Ray instance ----------------------------------------------------------------------------


@pytest.mark.usefixtures("ray_session")
def test_a_second_sweep_evaluates_nothing_and_a_third_only_what_is_new(tmp_path: Path, results_db_url: str):
    run = tmp_path / "run"
    write_checkpoints(run, range(1, 4))
    data = tmp_path / "data"
    db = results_db_url

    first = sweep(sweep_config(data, str(run), run_name="first", results_db=db))
    assert states(first) == dict.fromkeys(["ckpt_1", "ckpt_2", "ckpt_3"], CheckpointState.EVALUATED)
    assert [c.version for c in first.checkpoints] == ["v1", "v2", "v3"]
    assert first.report.timing.episodes == 3 * PER_CHECKPOINT and first.report.timing.episodes_cached == 0
    assert [c.version for c in first.report.policies[0].checkpoints] == ["v1", "v2", "v3"]
    assert json.loads((data / "first" / "report.json").read_text()) == json.loads(first.report.model_dump_json())

    second = sweep(sweep_config(data, str(run), run_name="second", results_db=db))
    assert states(second) == dict.fromkeys(["ckpt_1", "ckpt_2", "ckpt_3"], CheckpointState.CACHED)
    assert second.report is None and second.evaluated == 0, "nothing evaluated, Ray not even attached"
    assert not (data / "second" / "report.json").exists()

    write_checkpoints(run, range(4, 5))
    third = sweep(sweep_config(data, str(run), run_name="third", results_db=db))
    assert states(third)["ckpt_4"] is CheckpointState.EVALUATED and third.evaluated == 1
    assert third.report.timing.episodes == PER_CHECKPOINT and third.report.timing.episodes_cached == 0
    assert [c.version for c in third.report.policies[0].checkpoints] == ["v4"]

    everything = sweep(sweep_config(data, str(run), run_name="all", include_cached=True, results_db=db))
    assert everything.evaluated == 0 and everything.report.timing.episodes_cached == 4 * PER_CHECKPOINT
    assert everything.report.timing.agent_steps == 0, "--include-cached reports from the store alone"
    assert stored_episodes(db) == 4 * PER_CHECKPOINT
    assert not lease_rows(db), "every lease was released"


@pytest.mark.usefixtures("ray_session")
def test_two_sweeps_at_once_never_evaluate_a_checkpoint_twice(
    tmp_path: Path, results_db_url: str, monkeypatch: pytest.MonkeyPatch
):
    """Two sweeps start together on one results database, walking the same four checkpoints in opposite orders
    (one as the directory, one as the files newest first), so they meet in the middle of the lease table."""
    run = tmp_path / "run"
    paths = write_checkpoints(run, range(1, 5))
    data = tmp_path / "data"
    puts: Counter[tuple[str, str, int]] = Counter()
    guard = threading.Lock()
    original_put = EpisodeStore.put

    def counting_put(self, digest, played, run_id=None):
        with guard:
            for episode in played:
                puts[(digest, episode.env.name, episode.result.seed)] += 1
        original_put(self, digest, played, run_id)

    monkeypatch.setattr(EpisodeStore, "put", counting_put)
    # Store look-ups slowed down, so that the two sweeps' claims interleave.
    original_missing = evaluator.run.sweep.missing_episodes

    def slow_missing(*args):
        time.sleep(0.05)
        return original_missing(*args)

    monkeypatch.setattr(evaluator.run.sweep, "missing_episodes", slow_missing)
    configs = {
        "forward": sweep_config(data, str(run), run_name="forward", results_db=results_db_url),
        "backward": sweep_config(
            data, *[str(p) for p in reversed(paths)], run_name="backward", results_db=results_db_url
        ),
    }
    results: dict[str, SweepResult] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run_one(name: str) -> None:
        start.wait()
        try:
            results[name] = sweep(configs[name])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run_one, args=(name,)) for name in configs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors

    forward, backward = results["forward"], results["backward"]
    all_digests = {c.digest for c in forward.checkpoints}
    assert evaluated_digests(forward).isdisjoint(evaluated_digests(backward))
    assert evaluated_digests(forward) | evaluated_digests(backward) == all_digests
    states_seen = {row.state for result in (forward, backward) for row in result.checkpoints}
    assert CheckpointState.LEASED_ELSEWHERE in states_seen, "the two sweeps did not overlap"
    for result in (forward, backward):
        assert not result.failed
        for row in result.checkpoints:  # what one did not evaluate, the other held or had finished
            assert row.state in (CheckpointState.EVALUATED, CheckpointState.LEASED_ELSEWHERE, CheckpointState.CACHED)
    # The counts: every episode of every checkpoint written once, and no other writes.
    assert set(puts.values()) == {1}, [key for key, n in puts.items() if n > 1]
    assert len(puts) == 4 * PER_CHECKPOINT
    assert {digest for digest, _, _ in puts} == all_digests
    assert stored_episodes(results_db_url) == 4 * PER_CHECKPOINT
    played = sum(r.report.timing.episodes - r.report.timing.episodes_cached for r in results.values() if r.report)
    assert played == 4 * PER_CHECKPOINT
    assert not lease_rows(results_db_url), "every lease was released"
    print(f"\nconcurrent sweeps: forward evaluated {forward.evaluated}, backward {backward.evaluated}")


@pytest.mark.usefixtures("ray_session")
def test_a_stale_lease_is_taken_over_and_a_live_one_respected(tmp_path: Path, results_db_url: str):
    run = tmp_path / "run"
    write_checkpoints(run, range(1, 3))
    data = tmp_path / "data"
    digests = {c.name: c.digest for c in resolve(str(run), "all")}
    now = time.time()
    planted = {
        name: LeaseRecord(digests[name], owner, "another-pod", 1, "t", now - 7200, expires)
        for name, expires, owner in (("ckpt_1", now - 1, "crashed-sweep"), ("ckpt_2", now + 3600, "busy-sweep"))
    }
    for record in planted.values():
        plant(results_db_url, record)

    result = sweep(sweep_config(data, str(run), run_name="after-crash", results_db=results_db_url))
    assert states(result) == {"ckpt_1": CheckpointState.EVALUATED, "ckpt_2": CheckpointState.LEASED_ELSEWHERE}
    (busy,) = [c for c in result.checkpoints if c.state is CheckpointState.LEASED_ELSEWHERE]
    assert busy.holder == "busy-sweep" and busy.missing_episodes == PER_CHECKPOINT
    assert [c.name for c in result.report.policies[0].checkpoints] == ["ckpt_1"]
    rows = lease_rows(results_db_url)
    assert rows[digests["ckpt_2"]].owner == "busy-sweep"
    assert rows == {digests["ckpt_2"]: planted["ckpt_2"]}, "live lease untouched; stale one taken, released"


# -- two real CLI processes on one Ray head --------------------------------------------------------------------


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory):
    with running_head(tmp_path_factory.mktemp("ray")) as head:
        yield head


@pytest.mark.slow
def test_two_sweep_processes_at_once_play_each_episode_once(head: RayHead, tmp_path: Path, results_db_url: str):
    """The real command twice at the same moment, as two pods would run it, on one results database and one
    cluster: the episodes their reports say were played add up to exactly one evaluation of each checkpoint."""
    run = tmp_path / "run"
    paths = write_checkpoints(run, range(1, 5))
    data = tmp_path / "data"
    env = {**head.env, "RAY_ADDRESS": f"127.0.0.1:{head.ports['gcs']}", "DATA_DIR": str(data)}
    common = ["sweep", "--no-progress", "--suite", "smoke", "--episodes", str(EPISODES), "--num-workers", "1"]
    common += ["--results-db", results_db_url]
    commands = {
        "forward": [*common, "-p", str(run), "--run-name", "p-forward"],
        "backward": [*common, "-p", ",".join(str(p) for p in reversed(paths)), "--run-name", "p-backward"],
    }
    processes = {
        name: subprocess.Popen(
            [str(VENV_BIN / "policy-evaluator"), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for name, args in commands.items()
    }
    outputs = {name: process.communicate(timeout=180) for name, process in processes.items()}
    for name, process in processes.items():
        assert process.returncode == 0, outputs[name][1].decode()[-3000:]
    results = {name: SweepResult.model_validate_json(out) for name, (out, _) in outputs.items()}
    forward, backward = results["forward"], results["backward"]
    assert evaluated_digests(forward).isdisjoint(evaluated_digests(backward))
    assert len(evaluated_digests(forward) | evaluated_digests(backward)) == 4
    played = sum(r.report.timing.episodes - r.report.timing.episodes_cached for r in results.values() if r.report)
    assert played == 4 * PER_CHECKPOINT, "an episode was played twice (or not at all)"
    states_seen = {c.state for r in results.values() for c in r.checkpoints}
    assert CheckpointState.LEASED_ELSEWHERE in states_seen, "the two sweeps did not overlap"
    assert stored_episodes(results_db_url) == 4 * PER_CHECKPOINT, "both wrote to the one database"
    assert not lease_rows(results_db_url), "every lease was released"
    assert not (data / "results.db").exists(), "--results-db, not the default SQLite in DATA_DIR"
    print(f"\nconcurrent sweep processes: forward evaluated {forward.evaluated}, backward {backward.evaluated}")


def test_sweep_usage_errors_exit_2(tmp_path: Path, results_db_url: str, monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    from evaluator.cli.app import app

    monkeypatch.delenv("RESULTS_DB_URL", raising=False)
    runner = CliRunner()
    listing = tmp_path / "policies.txt"
    listing.write_text("# the nightly list\n\n/no/such/run  # gone\n")
    cases = {
        ("sweep",): "no policy given",
        ("sweep", "--policies-file", str(tmp_path / "missing.txt")): "cannot read the policies file",
        ("sweep", "--policies-file", str(listing)): "/no/such/run does not exist",
        ("sweep", "-p", "builtin://navigator", "--checkpoints", "newest"): "invalid checkpoints",
    }
    data = tmp_path / "data"
    for database in ([], ["--results-db", results_db_url]):  # the default SQLite in DATA_DIR, and the fixture's
        for args, expected in cases.items():
            result = runner.invoke(app, [*args, "--data-dir", str(data), *database], env={"POLICY_URI": ""})
            assert result.exit_code == 2, (args, database, result.stdout, result.stderr)
            assert expected in json.loads(result.stdout)["error"], (args, database, result.stdout)
    assert not (data / "results.db").exists(), "no lease taken on bad input: the database not even opened"
    assert never_opened(results_db_url), "no lease taken on bad input: the database not even opened"
