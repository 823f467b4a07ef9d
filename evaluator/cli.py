"""`policy-evaluator`: thin typer commands over `evaluator.driver`.

Options are `Annotated[..., typer.Option(envvar=...)]` with the seed's environment variables, validated
once into an `EvalConfig`. Exceptions map to exit codes only here: 0 every checkpoint evaluated, 1 the
evaluation failed (report with per-checkpoint errors, or the error JSON), 2 bad usage. stdout carries the
JSON and nothing else; logs and progress go to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from typer._click.exceptions import NoArgsIsHelpError  # typer 0.29 vendors click; no public name for this
from typer.core import TyperGroup

from evaluator.config import Device, EvalConfig
from evaluator.driver import evaluate
from evaluator.report import ErrorReport, Report, report_schema
from evaluator.secrets import SECRET_VARIABLES, Redactor
from evaluator.summary import summary_tables
from sim.errors import EvaluatorError, UsageError
from sim.suites import SUITES, get_suite


class _Commands(TyperGroup):
    """Usage errors found while parsing (an unknown flag, `--device gpu`, a non-number in an env var) in the
    product's own format: one line on stderr, the error JSON on stdout, exit 2."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
            code = EXIT_USAGE
        except typer.TyperException as exc:  # typer's vendored click: ClickException and its usage errors
            message = " ".join(exc.format_message().split())
            typer.echo(f"error: {message}", err=True)
            typer.echo(ErrorReport(error=message).model_dump_json(indent=2))
            code = EXIT_USAGE
        except typer.Abort:
            code = EXIT_FAILED
        if not standalone_mode:
            return code
        sys.exit(code or 0)


app = typer.Typer(
    cls=_Commands,
    name="policy-evaluator",
    help="Evaluate MettaGrid policy checkpoints on an evaluation suite with Ray actors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_redact = Redactor(())
MARKER_START, MARKER_END = "===JSON_OUTPUT_START===", "===JSON_OUTPUT_END==="
"""The seed's docker-entrypoint markers: the JSON can be cut out of Ray job logs between them."""


@app.command()
def run(
    policy_uri: Annotated[
        list[str],
        typer.Option(
            "--policy-uri",
            "-p",
            envvar="POLICY_URI",
            help="Policy to evaluate (repeat, or comma-separate): a path or file:// URI to a checkpoint file or "
            "directory of checkpoints, s3://bucket/key or s3://bucket/prefix/, wandb://entity/project/name:version, "
            "wandb://run/<name>, or builtin://<name> (random, noop, navigator, ...).",
        ),
    ],
    checkpoints: Annotated[
        str,
        typer.Option(envvar="CHECKPOINTS", help="Which checkpoints: latest, all, last:N, every:K or versions v3,v7."),
    ] = "latest",
    suite: Annotated[
        str, typer.Option(envvar="SIMULATION_SUITE", help="Suite name or suite file (.yaml/.json).")
    ] = "navigation",
    device: Annotated[Device, typer.Option(envvar="DEVICE", help="Where policies run.")] = Device.CPU,
    data_dir: Annotated[
        Path, typer.Option(envvar="DATA_DIR", help="Where runs and the checkpoint cache are written.")
    ] = Path("data"),
    run_name: Annotated[
        str, typer.Option(envvar="RUN_NAME", help="Run directory name [default: eval_<policy>_<UTC time>].")
    ] = "",
    output_uri: Annotated[
        str | None,
        typer.Option(
            envvar="OUTPUT_URI",
            help="Also deliver the results there: a path, file://, s3://bucket/prefix or wandb://entity/project[/run_id].",
        ),
    ] = None,
    episodes: Annotated[
        int | None, typer.Option(envvar="EPISODES", help="Episodes per environment [default: the suite's].")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Override the suite's seed.")] = None,
    env: Annotated[str | None, typer.Option(help="Only environments matching this glob, e.g. 'maze*'.")] = None,
    num_workers: Annotated[
        int | None, typer.Option(envvar="NUM_WORKERS", help="Ray actors [default: fill the cluster].")
    ] = None,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs per actor (also its torch threads).")] = 1.0,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per actor with --device cuda (fractions share).")] = 1.0,
    shard_size: Annotated[int, typer.Option(help="Episodes per work unit.")] = 8,
    cache_size: Annotated[int, typer.Option(help="Loaded policies each actor keeps (LRU).")] = 4,
    replays: Annotated[bool, typer.Option(help="Record episode 0 of each checkpoint and environment.")] = True,
    unit_timeout: Annotated[
        float | None,
        typer.Option(envvar="UNIT_TIMEOUT", help="Seconds a work unit may run before it fails (hung policy or env)."),
    ] = None,
    max_attempts: Annotated[
        int, typer.Option(help="Tries per work unit (worker deaths) before its checkpoint fails.")
    ] = 3,
    trust_remote_code: Annotated[
        bool,
        typer.Option(help="Run code shipped inside mettagrid submission archives. Only for archives you trust."),
    ] = False,
    use_cache: Annotated[
        bool, typer.Option("--cache/--no-cache", help="Reuse episode results cached in DATA_DIR.")
    ] = True,
    ray_address: Annotated[
        str | None,
        typer.Option(envvar="RAY_ADDRESS", help="Ray cluster to attach to [default: start locally]."),
    ] = None,
    wandb_entity: Annotated[str, typer.Option(envvar="WANDB_ENTITY", help="W&B entity for wandb://run/.")] = (
        "metta-ai"
    ),
    wandb_project: Annotated[
        str, typer.Option(envvar="WANDB_PROJECT", help="W&B project for wandb://run/.")
    ] = "metta-research",
    wandb_api_key: Annotated[
        str | None,
        typer.Option(envvar="WANDB_API_KEY", show_default=False, help="W&B API key (needed for wandb:// only)."),
    ] = None,
    markers: Annotated[
        bool, typer.Option(help=f"Wrap the JSON in {MARKER_START} / {MARKER_END} lines (for Ray job logs).")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
) -> None:
    """Evaluate the selected checkpoints of the given policies and print the JSON report on stdout."""
    options = {name: value for name, value in locals().items() if name not in ("markers", "progress")}
    options["policy_uris"] = tuple(options.pop("policy_uri"))
    _execute(options, markers=markers, progress=progress, usage_exit=EXIT_USAGE)


@app.command()
def entrypoint() -> None:
    """The container's command: configuration from environment variables only (POLICY_URI required, and
    the variables `run` reads, see .env.example); the JSON between markers; every failure exits 1."""
    options: dict[str, object] = {"policy_uris": os.environ.get("POLICY_URI", "")}
    for field, variable in ENTRYPOINT_VARIABLES.items():
        if os.environ.get(variable):
            options[field] = os.environ[variable]
    _execute(options, markers=True, progress=False, usage_exit=EXIT_FAILED)


ENTRYPOINT_VARIABLES = {
    "suite": "SIMULATION_SUITE",
    "device": "DEVICE",
    "data_dir": "DATA_DIR",
    "run_name": "RUN_NAME",
    "output_uri": "OUTPUT_URI",
    "checkpoints": "CHECKPOINTS",
    "episodes": "EPISODES",
    "num_workers": "NUM_WORKERS",
    "unit_timeout": "UNIT_TIMEOUT",
    "ray_address": "RAY_ADDRESS",
    "wandb_entity": "WANDB_ENTITY",
    "wandb_project": "WANDB_PROJECT",
    "wandb_api_key": "WANDB_API_KEY",
}
"""EvalConfig field -> environment variable: the seed's list plus CHECKPOINTS, EPISODES, NUM_WORKERS,
UNIT_TIMEOUT and RAY_ADDRESS (the same variables `run` reads)."""


def _execute(options: dict[str, object], *, markers: bool, progress: bool, usage_exit: int) -> None:
    """Validate, evaluate, print; map exceptions to exit codes (the only place that does)."""
    global _redact
    _redact = Redactor([os.environ.get(name) for name in SECRET_VARIABLES] + [options.get("wandb_api_key")])
    _setup_logging()
    _redact.install()
    uris = options.get("policy_uris") or ()
    first_uri = (uris.split(",")[0] if isinstance(uris, str) else next(iter(uris), None)) or None
    try:
        config = EvalConfig.model_validate(options)
        outcome = evaluate(config, show_progress=progress)
    except ValidationError as exc:
        _fail(_validation_message(exc), usage_exit, first_uri, markers=markers)
    except UsageError as exc:
        _fail(str(exc), usage_exit, first_uri, markers=markers)
    except EvaluatorError as exc:
        _fail(str(exc), EXIT_FAILED, first_uri, traceback.format_exc(), markers=markers)
    except Exception as exc:  # the whole run failed: the error JSON still goes out, with the traceback
        _fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED, first_uri, traceback.format_exc(), markers=markers)
    _emit(outcome.report.model_dump_json(indent=2), markers)
    logging.getLogger(__name__).info("wrote %s", outcome.run_dir)
    if outcome.failed:
        failures = [
            f"{c.name} ({c.version}): {c.error}" for p in outcome.report.policies for c in p.checkpoints if c.error
        ]
        if outcome.report.output and outcome.report.output.error:
            failures.append(outcome.report.output.error)
        typer.echo(_redact(f"error: {len(failures)} failure(s): " + "; ".join(failures)), err=True)
        raise typer.Exit(EXIT_FAILED)


def _validation_message(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    if where == "policy_uris" and error["type"] == "too_short":
        return "no policy given: pass --policy-uri or set POLICY_URI"
    return f"invalid {where}: {error['msg'].removeprefix('Value error, ')}"


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
    if not console.is_terminal:  # piped or in `make demo`: don't squeeze the tables into 80 columns
        console = Console(width=160)
    for table in summary_tables(report):
        console.print(table)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the report."""
    typer.echo(json.dumps(report_schema(), indent=2))


def _fail(
    message: str, code: int, policy_uri: str | None, trace: str | None = None, *, markers: bool = False
) -> NoReturn:
    """One line on stderr, the error JSON on stdout, then exit with `code`."""
    typer.echo(_redact(f"error: {message}"), err=True)
    _emit(ErrorReport(error=message, traceback=trace, policy_uri=policy_uri).model_dump_json(indent=2), markers)
    raise typer.Exit(code)


def _emit(document: str, markers: bool) -> None:
    document = _redact(document)
    typer.echo(f"{MARKER_START}\n{document}\n{MARKER_END}" if markers else document)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    app()
