"""End to end through the CLI and the driver on the shared Ray instance (smoke-sized work)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import typer.main
from typer.testing import CliRunner

from evaluator.cli import app as cli
from evaluator.cli.app import MARKER_END, MARKER_START, app
from evaluator.cli.option_sets import EVALUATION_OPTIONS, JOB_FIELDS, JOB_OPTIONS
from evaluator.config import EvalConfig
from evaluator.options import envvar
from evaluator.reduce.report import Report
from evaluator.run.driver import evaluate
from sim.errors import ServiceUnavailable, UsageError
from tests.support.replays import read_replay

pytestmark = pytest.mark.usefixtures("ray_session")
runner = CliRunner()

FOUR_ENVS = """
name: four
envs:
  - {name: a, map: {kind: random, width: 8, height: 8, goals: 2}, max_steps: 15, episodes: 2}
  - {name: b, map: {kind: random, width: 9, height: 9, walls: 5}, max_steps: 15, episodes: 2}
  - {name: c, map: {kind: maze, width: 9, height: 9}, max_steps: 20, episodes: 2}
  - {name: d, map: {kind: random, width: 10, height: 10, goals: 3}, max_steps: 15, num_agents: 2, episodes: 2}
"""


def invoke(*args: str):
    return runner.invoke(app, ["run", "--no-progress", *args])


def test_cli_end_to_end_on_smoke(tmp_path: Path, checkpoint_dir: Path):
    result = invoke(
        "-p",
        "builtin://navigator",
        "-p",
        str(checkpoint_dir),
        "--checkpoints",
        "all",
        "--suite",
        "smoke",
        "--data-dir",
        str(tmp_path),
        "--run-name",
        "e2e",
    )
    assert result.exit_code == 0, result.stderr
    report = Report.model_validate_json(result.stdout)
    assert report == Report.model_validate_json((tmp_path / "e2e" / "report.json").read_text())
    navigator, run = report.policies
    assert [c.name for c in run.checkpoints] == ["ckpt_2", "ckpt_10"]
    assert [c.version for c in run.checkpoints] == ["v1", "v2"]
    for checkpoint in navigator.checkpoints + run.checkpoints:
        assert checkpoint.error is None
        assert set(checkpoint.metrics.simulation_scores) == {"smoke/tiny_room/score", "smoke/tiny_random/score"}
        replay = read_replay(Path(checkpoint.replay_url.removeprefix("file://")).read_bytes())
        assert replay["version"] == 4 and replay["max_steps"] == 20  # first env: tiny_room
    assert navigator.checkpoints[0].metrics.suite_scores["smoke/score"] > 0
    table = pq.read_table(tmp_path / "e2e" / "episodes.parquet")
    assert table.num_rows == 3 * 2 * 2
    assert set(table.column_names) >= {"checkpoint", "env", "seed", "rewards", "steps", "success"}
    assert report.timing.agent_steps > 0 and report.timing.workers >= 1


def test_policy_loads_equal_distinct_worker_checkpoint_pairs(tmp_path: Path, checkpoint_dir: Path):
    suite = tmp_path / "four.yaml"
    suite.write_text(FOUR_ENVS)
    config = EvalConfig(
        policy_uris=(str(checkpoint_dir),),
        checkpoints="all",
        suite=str(suite),
        num_workers=2,
        shard_size=1,
        data_dir=tmp_path,
    )
    report = evaluate(config).report
    assert len(report.workers) == 2
    pairs = {(w.worker, digest) for w in report.workers for digest in w.loaded_checkpoints}
    assert report.timing.policy_loads == len(pairs) == sum(w.policy_loads for w in report.workers)
    assert 2 <= len(pairs) <= 4
    assert sum(w.cache_hits for w in report.workers) == 2 * 4 * 2 - len(pairs)


def test_same_metrics_for_one_and_two_workers(tmp_path: Path, checkpoint_dir: Path):
    def metrics(workers: int, shard_size: int):
        config = EvalConfig(
            policy_uris=(str(checkpoint_dir), "builtin://navigator"),
            checkpoints="all",
            suite="smoke",
            num_workers=workers,
            shard_size=shard_size,
            episodes=3,
            data_dir=tmp_path,
            reuse_results=False,
        )
        report = evaluate(config).report
        assert report.timing.episodes_cached == 0 and report.timing.workers == workers
        return [c.metrics for p in report.policies for c in p.checkpoints]

    assert metrics(1, 3) == metrics(2, 1)


def test_one_broken_checkpoint_fails_alone(tmp_path: Path, checkpoint_dir: Path):
    (checkpoint_dir / "ckpt_5.pt").write_bytes(b"not a checkpoint")
    result = invoke("-p", str(checkpoint_dir), "--checkpoints", "all", "--suite", "smoke", "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    checkpoints = Report.model_validate_json(result.stdout).policies[0].checkpoints
    assert [c.name for c in checkpoints] == ["ckpt_2", "ckpt_5", "ckpt_10"]
    assert "not a zip archive" in checkpoints[1].error and checkpoints[1].metrics is None
    assert checkpoints[0].metrics is not None and checkpoints[2].metrics is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "builtin://navigator", "--suite", "navigaton"], "unknown suite 'navigaton'"),
        (["-p", "/no/such/policy.pt", "--suite", "smoke"], "does not exist"),
        (["-p", "ftp://x/y.pt", "--suite", "smoke"], "unknown policy URI scheme 'ftp'"),
        (["-p", "builtin://navigator", "--suite", "smoke", "--episodes", "0"], "episodes"),
        (["-p", "builtin://navigator", "--suite", "smoke", "--env", "zzz*"], "matches no environment"),
    ],
)
def test_bad_usage_exits_2_with_error_json(tmp_path: Path, args: list[str], message: str):
    result = invoke(*args, "--data-dir", str(tmp_path))
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert message in json.loads(result.stdout)["error"]


def test_suites_and_schema_commands():
    listing = runner.invoke(app, ["suites", "smoke"])
    assert listing.exit_code == 0 and "tiny_room" in listing.stdout
    schema = json.loads(runner.invoke(app, ["schema"]).stdout)
    assert {"policies", "timing", "workers", "cost"} <= set(schema["properties"])
    assert "gpu_share" in schema["$defs"]["WorkerReport"]["properties"]
    assert {"total_usd", "usd_per_million_agent_steps", "node_types", "checkpoints", "unpriced"} <= set(
        schema["$defs"]["CostReport"]["properties"]
    )


@pytest.mark.parametrize("command", ["run", "entrypoint", "suites", "summary", "schema", "sweep", "serve"])
def test_every_command_has_help(command: str):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.stdout, result.stderr


# -- the CLI's shape: options declared once, exceptions mapped once ---------------------------------------------


def _options(command: str) -> dict[str, tuple[tuple[str, ...], str | None]]:
    """name -> (flags, env var) of a command's options, as click sees them."""
    params = typer.main.get_command(app).commands[command].params
    return {p.name: (tuple(p.opts + p.secondary_opts), p.envvar) for p in params}


def test_every_evaluation_option_is_offered_by_run_sweep_and_entrypoint_alike():
    evaluation = {p.name for p in EVALUATION_OPTIONS}
    fields = set(EvalConfig.model_fields) - {"policy_uris", "checkpoints"}
    assert evaluation == fields, "every EvalConfig field has its option"
    run, sweep, entrypoint = (_options(command) for command in ("run", "sweep", "entrypoint"))
    for name in evaluation:
        assert run[name] == sweep[name] == entrypoint[name], name
    assert {"--seed", "--env", "--shard-size", "--max-attempts", "--trust-remote-code", "--cpus-per-worker"} <= {
        flag for flags, _ in sweep.values() for flag in flags
    }
    assert "global " not in Path(cli.__file__).read_text(), "no module state reassigned per command"


def test_the_entrypoint_reads_the_seeds_variables_through_its_options():
    variables = {envvar for _, envvar in _options("entrypoint").values()}
    seed = {"POLICY_URI", "SIMULATION_SUITE", "DEVICE", "DATA_DIR", "RUN_NAME", "OUTPUT_URI", "WANDB_API_KEY"}
    seed |= {"WANDB_ENTITY", "WANDB_PROJECT", "CHECKPOINTS", "EPISODES", "NUM_WORKERS", "UNIT_TIMEOUT", "RAY_ADDRESS"}
    assert seed <= variables
    assert _options("run")["policy_uri"][1] == _options("entrypoint")["policy_uri"][1] == "POLICY_URI"


def test_every_variable_is_declared_once():
    """An environment variable is written in one declaration (`envvar="..."`) across evaluator/; every command
    reads each of its variables through one option, and only declared ones."""
    root = Path(cli.__file__).parents[1]
    declared = Counter(
        name for path in root.rglob("*.py") for name in re.findall(r'envvar="([A-Z][A-Z0-9_]*)"', path.read_text())
    )
    assert declared and {name: count for name, count in declared.items() if count > 1} == {}
    commands = typer.main.get_command(app).commands
    for name, command in commands.items():
        variables = [p.envvar for p in command.params if isinstance(p.envvar, str)]
        assert len(variables) == len(set(variables)), f"{name} reads a variable through two options"
        assert set(variables) <= set(declared), name


def test_serve_forwards_exactly_the_job_options_variables(monkeypatch):
    """`serve`'s job options are the evaluation options' declarations, and what it forwards into every job's
    runtime_env is those options' variables, no other."""
    import evaluator.service

    started = []
    monkeypatch.setattr(evaluator.service, "serve", started.append)
    run, serve = _options("run"), _options("serve")
    assert {name: serve[name] for name in JOB_FIELDS} == {name: run[name] for name in JOB_FIELDS}
    given = {"suite": "smoke", "device": "cuda", "data_dir": "/d", "output_uri": "/o", "episodes": "2"}
    given |= {"num_workers": "3", "unit_timeout": "4.5", "wandb_entity": "e", "wandb_project": "p"}
    env = {serve[name][1]: value for name, value in given.items()}
    result = runner.invoke(app, ["serve"], env={**env, "RAY_ADDRESS": "http://head:8265", "WEBHOOK_SECRET": "s" * 16})
    assert result.exit_code == 0, result.stderr
    (settings,) = started
    assert set(given) == set(JOB_FIELDS) and {envvar(option.annotation) for option in JOB_OPTIONS} == set(env)
    assert settings.job_env == env and settings.output_uri == "/o"


@pytest.mark.parametrize(
    ("error", "code", "retryable"),
    [(ServiceUnavailable("W&B is down"), 3, True), (UsageError("bad"), 2, False), (RuntimeError("bug"), 1, False)],
)
def test_one_wrapper_maps_every_commands_exceptions(monkeypatch, tmp_path: Path, error, code: int, retryable: bool):
    """run, sweep and entrypoint through the same mapping; the entrypoint keeps exit 1 for bad usage."""
    import evaluator.run.driver
    import evaluator.run.sweep

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(evaluator.run.driver, "evaluate", fail)
    monkeypatch.setattr(evaluator.run.sweep, "sweep", fail)
    common = ["-p", "builtin://random", "--data-dir", str(tmp_path)]
    for command, expected in (("run", code), ("sweep", code), ("entrypoint", 1 if code == 2 else code)):
        result = runner.invoke(app, [command, *common] + (["--no-progress"] if command != "entrypoint" else []))
        assert result.exit_code == expected, (command, result.stderr)
        text = result.stdout.replace(MARKER_START, "").replace(MARKER_END, "")
        document = json.loads(text)
        assert document["retryable"] is retryable and str(error) in document["error"], (command, document)
        assert (document["traceback"] is None) is isinstance(error, UsageError)
        assert len([line for line in result.stderr.splitlines() if line.startswith("error: ")]) == 1
