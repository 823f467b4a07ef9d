"""`policy-evaluator results` over a database written by the real `RunLog`: three runs on two suites, one
checkpoint re-scored by a later run (the latest score counts) and one failed. On SQLite and PostgreSQL
(`results_db_url`); the database password never reaches stdout or stderr."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from evaluator.cli.app import app
from evaluator.reduce.report import CheckpointMetrics, CheckpointReport, EnvironmentMetrics, Timing
from evaluator.store.database import masked
from evaluator.store.queries import BestCheckpoints, PolicyHistory, RecentRuns, RunDetail
from evaluator.store.runs import RecordedCheckpoint, RunLog

runner = CliRunner()
POLICY = "file:///ckpts/run"
NAVIGATOR = "builtin://navigator"


def report(name: str, version: str, suite: str, envs: dict[str, float] | None, error: str | None = None):
    """A checkpoint's report as the collector writes it: suite score = mean of the environment scores."""
    uri = NAVIGATOR if version == "builtin" else f"{POLICY}/{name}.pt"
    metrics = None
    if envs is not None:
        score = sum(envs.values()) / len(envs)
        metrics = CheckpointMetrics(
            suite_scores={f"{suite}/score": score},
            simulation_scores={f"{suite}/{env}/score": s for env, s in envs.items()},
            reward_avg=score,
            environments={
                env: EnvironmentMetrics(
                    episodes=2, score=s, std=0.0, ci95=(s, s), success_rate=0.5, mean_steps=10.0, agent_steps=20
                )
                for env, s in envs.items()
            },
        )
    digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    return CheckpointReport(name=name, uri=uri, version=version, digest=digest, metrics=metrics, error=error)


def record(url: str, name: str, suite: str, evaluated: list[tuple[str, CheckpointReport]], wall_s: float) -> None:
    log = RunLog(url, name, suite, {"suite": suite})
    timing = Timing(
        wall_s=wall_s,
        ray_init_s=0.5,
        evaluation_s=wall_s - 1,
        agent_steps=100,
        agent_steps_per_s=10.0,
        episodes=4,
        policy_loads=2,
        workers=1,
    )
    failed = any(r.error for _, r in evaluated)
    log.finish([RecordedCheckpoint(policy, r) for policy, r in evaluated], timing, failed=failed)


@pytest.fixture
def db(results_db_url: str) -> str:
    """nav_1 (navigation): c1 0.2, c2 0.5, navigator 0.4; smoke_1: c1 0.7, c2 fails; nav_2 (navigation):
    c2 again, now 0.3, and c3 0.6."""
    nav, smoke = "navigation", "smoke"
    record(
        results_db_url,
        "nav_1",
        nav,
        [
            (POLICY, report("c1", "v1", nav, {"maze": 0.1, "field": 0.3})),
            (POLICY, report("c2", "v2", nav, {"maze": 0.9, "field": 0.1})),
            (NAVIGATOR, report("navigator", "builtin", nav, {"maze": 0.4, "field": 0.4})),
        ],
        wall_s=12.5,
    )
    record(
        results_db_url,
        "smoke_1",
        smoke,
        [
            (POLICY, report("c1", "v1", smoke, {"tiny": 0.7})),
            (POLICY, report("c2", "v2", smoke, None, error="NaN logits")),
        ],
        wall_s=3.0,
    )
    record(
        results_db_url,
        "nav_2",
        nav,
        [
            (POLICY, report("c2", "v2", nav, {"maze": 0.2, "field": 0.4})),
            (POLICY, report("c3", "v3", nav, {"maze": 0.5, "field": 0.7})),
        ],
        wall_s=8.0,
    )
    return results_db_url


def results(url: str, *args: str, code: int = 0):
    outcome = runner.invoke(app, ["results", "--results-db", url, *args])
    assert outcome.exit_code == code, outcome.output
    password = make_url(url).password
    if password:
        assert password not in outcome.stdout + outcome.stderr
    return outcome


def in_order(output: str, *names: str) -> list[str]:
    """Which of `names` the table rows show, top to bottom."""
    return [name for line in output.splitlines() for name in names if f" {name} " in line]


def lines_with(output: str, *words: str) -> list[str]:
    return [line for line in output.splitlines() if all(w in line for w in words)]


def test_recent_runs_newest_first(db: str) -> None:
    text = results(db).stdout
    assert "recent runs in " in text
    assert in_order(text, "nav_1", "smoke_1", "nav_2") == ["nav_2", "smoke_1", "nav_1"]
    (smoke,) = lines_with(text, "smoke_1")
    assert "failed" in smoke and " 2 " in smoke and " 1 " in smoke and "3.0" in smoke
    answer = RecentRuns.model_validate_json(results(db, "--json", "--limit", "2").stdout)
    assert [r.name for r in answer.runs] == ["nav_2", "smoke_1"]
    assert answer.runs[1].failed == 1 and answer.runs[1].status == "failed" and answer.runs[1].wall_s == 3.0
    assert answer.runs[0].started.endswith("+00:00")


def test_run_shows_its_checkpoints_in_order(db: str) -> None:
    text = results(db, "--run", "nav_1").stdout
    assert in_order(text, "c1", "c2", "navigator") == ["c1", "c2", "navigator"]
    assert "12.5" in text and "complete" in text
    detail = RunDetail.model_validate_json(results(db, "--run", "smoke_1", "--json").stdout)
    assert [(c.name, c.score, c.error) for c in detail.checkpoints] == [("c1", 0.7, None), ("c2", None, "NaN logits")]
    assert detail.run.suite == "smoke" and detail.run.status == "failed"


def test_unknown_run_is_a_usage_error(db: str) -> None:
    outcome = results(db, "--run", "nope", code=2)
    assert "no run named nope in " in outcome.stderr
    assert json.loads(outcome.stdout)["error"].startswith("no run named nope")


def test_policy_checkpoints_over_time(db: str) -> None:
    history = PolicyHistory.model_validate_json(results(db, "--policy", POLICY, "--json").stdout)
    assert [(p.name, p.suite, p.score, p.run, p.error) for p in history.checkpoints] == [
        ("c1", "navigation", pytest.approx(0.2), "nav_1", None),
        ("c1", "smoke", pytest.approx(0.7), "smoke_1", None),
        ("c2", "navigation", pytest.approx(0.3), "nav_2", None),
        ("c2", "smoke", None, "smoke_1", "NaN logits"),
        ("c3", "navigation", pytest.approx(0.6), "nav_2", None),
    ]
    text = results(db, "--policy", POLICY).stdout
    (c3,) = lines_with(text, "c3")
    assert "v3" in c3 and "0.600" in c3 and "nav_2" in c3
    assert "no checkpoints of file:///other" in results(db, "--policy", "file:///other").stdout


def test_best_per_suite_uses_the_latest_score(db: str) -> None:
    best = BestCheckpoints.model_validate_json(results(db, "--best", "--suite", "navigation", "--json").stdout)
    assert [(b.rank, b.name, round(b.score, 3), b.run) for b in best.best] == [
        (1, "c3", 0.6, "nav_2"),
        (2, "navigator", 0.4, "nav_1"),
        (3, "c2", 0.3, "nav_2"),  # nav_1 said 0.5; nav_2 is later
        (4, "c1", 0.2, "nav_1"),
    ]
    text = results(db, "--best", "--suite", "navigation", "--limit", "2").stdout
    assert "navigation/score" in text and lines_with(text, "c3", "0.600") and not lines_with(text, " c2 ")
    every = BestCheckpoints.model_validate_json(results(db, "--best", "--json").stdout)
    assert sorted({b.suite for b in every.best}) == ["navigation", "smoke"]
    assert [(b.name, b.score) for b in every.best if b.suite == "smoke"] == [("c1", pytest.approx(0.7))]


def test_best_per_environment_uses_env_scores(db: str) -> None:
    best = BestCheckpoints.model_validate_json(results(db, "--best", "--env", "maze", "--json").stdout)
    assert [(b.name, b.score) for b in best.best] == [("c3", 0.5), ("navigator", 0.4), ("c2", 0.2), ("c1", 0.1)]
    assert {b.env for b in best.best} == {"maze"}
    assert "navigation/maze/score" in results(db, "--best", "--env", "maze").stdout
    assert "no scored checkpoints" in results(db, "--best", "--env", "nowhere").stdout


def test_conflicting_selectors_are_usage_errors(db: str) -> None:
    assert "choose one of" in results(db, "--run", "nav_1", "--best", code=2).stderr
    assert "--best" in results(db, "--env", "maze", code=2).stderr


def test_empty_database_says_so(results_db_url: str) -> None:
    for args in ([], ["--best"], ["--policy", POLICY]):
        text = results(results_db_url, *args).stdout.strip()
        assert text.startswith("no runs recorded in ") and text.endswith(" yet")
    assert RecentRuns.model_validate_json(results(results_db_url, "--json").stdout).runs == []


def test_default_database_is_sqlite_in_data_dir(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESULTS_DB_URL", raising=False)
    outcome = runner.invoke(app, ["results", "--data-dir", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    assert f"no runs recorded in sqlite:///{tmp_path.resolve() / 'results.db'} yet" in outcome.stdout


def test_password_of_an_unreachable_database_is_never_printed() -> None:
    url = "postgresql://evaluator:hunter2-secret@127.0.0.1:1/results"
    outcome = runner.invoke(app, ["results", "--results-db", url])
    assert outcome.exit_code == 3, outcome.output
    assert "hunter2-secret" not in outcome.stdout + outcome.stderr
    assert "postgresql+psycopg://evaluator:***@127.0.0.1:1/results" in outcome.stderr
    assert masked(url) == "postgresql://evaluator:***@127.0.0.1:1/results"


def test_database_options_are_those_of_the_evaluation_commands() -> None:
    import typer.main

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    options = {
        command: {p.name: (tuple(p.opts), p.envvar) for p in commands[command].params} for command in ("results", "run")
    }
    for name in ("results_db", "data_dir"):
        assert options["results"][name] == options["run"][name], name
    assert runner.invoke(app, ["results", "--help"]).exit_code == 0
