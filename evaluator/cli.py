"""`policy-evaluator`: thin typer commands over `evaluator.driver`.

Options are `Annotated[..., typer.Option(envvar=...)]` with the seed's environment variables, validated
once into an `EvalConfig`. Exceptions map to exit codes only here: 0 every checkpoint evaluated, 1 the
evaluation failed (report with per-checkpoint errors, or the error JSON), 2 bad usage. stdout carries the
JSON and nothing else; logs and progress go to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from evaluator.config import Device, EvalConfig
from evaluator.driver import evaluate
from evaluator.report import ErrorReport, Report, report_schema
from evaluator.summary import summary_tables
from sim.errors import EvaluatorError, UsageError
from sim.suites import SUITES, get_suite

app = typer.Typer(
    name="policy-evaluator",
    help="Evaluate MettaGrid policy checkpoints on an evaluation suite with Ray actors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@app.command()
def run(
    policy_uri: Annotated[
        list[str],
        typer.Option(
            "--policy-uri",
            "-p",
            envvar="POLICY_URI",
            help="Policy to evaluate (repeat, or comma-separate): a path or file:// URI to a checkpoint file or "
            "directory of checkpoints, or builtin://<name> (random, noop, navigator, ...).",
        ),
    ],
    suite: Annotated[
        str, typer.Option(envvar="SIMULATION_SUITE", help="Suite name or suite file (.yaml/.json).")
    ] = "navigation",
    device: Annotated[Device, typer.Option(envvar="DEVICE", help="Where policies run.")] = Device.CPU,
    data_dir: Annotated[Path, typer.Option(envvar="DATA_DIR", help="Where runs are written.")] = Path("data"),
    run_name: Annotated[
        str, typer.Option(envvar="RUN_NAME", help="Run directory name [default: eval_<policy>_<UTC time>].")
    ] = "",
    output_uri: Annotated[
        str | None,
        typer.Option(envvar="OUTPUT_URI", help="Also copy the run's outputs here (path or file://)."),
    ] = None,
    episodes: Annotated[int | None, typer.Option(help="Episodes per environment [default: the suite's].")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the suite's seed.")] = None,
    env: Annotated[str | None, typer.Option(help="Only environments matching this glob, e.g. 'maze*'.")] = None,
    num_workers: Annotated[int | None, typer.Option(help="Ray actors [default: fill the cluster].")] = None,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs per actor (also its torch threads).")] = 1.0,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per actor with --device cuda (fractions share).")] = 1.0,
    shard_size: Annotated[int, typer.Option(help="Episodes per work unit.")] = 8,
    cache_size: Annotated[int, typer.Option(help="Loaded policies each actor keeps (LRU).")] = 4,
    replays: Annotated[bool, typer.Option(help="Record episode 0 of each checkpoint and environment.")] = True,
    ray_address: Annotated[
        str | None,
        typer.Option(envvar="RAY_ADDRESS", help="Ray cluster to attach to [default: start locally]."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
) -> None:
    """Evaluate every checkpoint of the given policies and print the JSON report on stdout."""
    _setup_logging()
    first_uri = policy_uri[0] if policy_uri else None
    try:
        config = EvalConfig(
            policy_uris=tuple(policy_uri),
            suite=suite,
            device=device,
            data_dir=data_dir,
            run_name=run_name,
            output_uri=output_uri,
            episodes=episodes,
            seed=seed,
            env=env,
            num_workers=num_workers,
            cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker,
            shard_size=shard_size,
            cache_size=cache_size,
            replays=replays,
            ray_address=ray_address,
        )
        outcome = evaluate(config, show_progress=progress)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        _fail(f"invalid option {where}: {error['msg']}", EXIT_USAGE, first_uri)
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE, first_uri)
    except EvaluatorError as exc:
        _fail(str(exc), EXIT_FAILED, first_uri, traceback.format_exc())
    except Exception as exc:  # the whole run failed: the error JSON still goes out, with the traceback
        _fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED, first_uri, traceback.format_exc())
    typer.echo(outcome.report.model_dump_json(indent=2))
    logging.getLogger(__name__).info("wrote %s", outcome.run_dir)
    if outcome.failed:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def suites(
    name: Annotated[str | None, typer.Argument(help="Show only this suite (name or file).")] = None,
) -> None:
    """List suites and their environments."""
    try:
        selected = [get_suite(name)] if name else [SUITES[key]() for key in sorted(SUITES)]
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE, None)
    for suite in selected:
        typer.echo(f"{suite.name} (seed {suite.seed}): {suite.description}")
        for env in suite.envs:
            size = (
                f"{len(env.map.rows[0])}x{len(env.map.rows)}"
                if env.map.kind == "ascii"
                else f"{env.map.width}x{env.map.height}"
            )
            typer.echo(
                f"  {env.name:<28} {env.map.kind:<6} {size:>7}  agents={env.num_agents} "
                f"max_steps={env.max_steps} episodes={env.episodes}"
            )


@app.command()
def summary(
    report_path: Annotated[Path, typer.Argument(help="A report.json written by `run`.")],
) -> None:
    """Print a report's scores as tables: one row per checkpoint, then environments x checkpoints."""
    try:
        report = Report.model_validate_json(report_path.read_text())
    except (OSError, ValidationError) as exc:
        _fail(f"cannot read report {report_path}: {str(exc).splitlines()[0]}", EXIT_USAGE, None)
    console = Console()
    for table in summary_tables(report):
        console.print(table)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the report."""
    typer.echo(json.dumps(report_schema(), indent=2))


def _fail(message: str, code: int, policy_uri: str | None, trace: str | None = None) -> None:
    """One line on stderr, the error JSON on stdout, then exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    typer.echo(ErrorReport(error=message, traceback=trace, policy_uri=policy_uri).model_dump_json(indent=2))
    raise typer.Exit(code)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    app()
