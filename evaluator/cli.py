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

from evaluator.cli_options import (
    MARKER_END,
    MARKER_START,
    DataDir,
    DeviceOption,
    Episodes,
    Markers,
    NumWorkers,
    OutputUri,
    RayAddress,
    Replays,
    RunName,
    ShowProgress,
    Suite,
    UnitTimeout,
    WandbApiKey,
    WandbEntity,
    WandbProject,
)
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
    rich_markup_mode=None,  # help texts hold URI syntax like project[/run_id], which is not markup
    help="Evaluate MettaGrid policy checkpoints on an evaluation suite with Ray actors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_redact = Redactor(())


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
    suite: Suite = "navigation",
    device: DeviceOption = Device.CPU,
    data_dir: DataDir = Path("data"),
    run_name: RunName = "",
    output_uri: OutputUri = None,
    episodes: Episodes = None,
    seed: Annotated[int | None, typer.Option(help="Override the suite's seed.")] = None,
    env: Annotated[str | None, typer.Option(help="Only environments matching this glob, e.g. 'maze*'.")] = None,
    num_workers: NumWorkers = None,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs per actor (also its torch threads).")] = 1.0,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per actor with --device cuda (fractions share).")] = 1.0,
    shard_size: Annotated[int, typer.Option(help="Episodes per work unit (at most; split evenly).")] = 32,
    cache_size: Annotated[int, typer.Option(help="Loaded policies each actor keeps (LRU).")] = 4,
    replays: Replays = True,
    unit_timeout: UnitTimeout = None,
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
    ray_address: RayAddress = None,
    wandb_entity: WandbEntity = "metta-ai",
    wandb_project: WandbProject = "metta-research",
    wandb_api_key: WandbApiKey = None,
    markers: Markers = False,
    progress: ShowProgress = True,
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


# -- sweep and serve (issue 7) ----------------------------------------------------------------------------------


@app.command()
def sweep(
    policy_uri: Annotated[
        list[str] | None,
        typer.Option(
            "--policy-uri",
            "-p",
            envvar="POLICY_URI",
            help="Policy whose checkpoints to sweep (repeat, or comma-separate); same URIs as `run`.",
        ),
    ] = None,
    policies_file: Annotated[
        Path | None,
        typer.Option(
            envvar="SWEEP_POLICIES_FILE", help="A file of policy URIs, one per line ('#' comments), added to -p."
        ),
    ] = None,
    checkpoints: Annotated[
        str,
        typer.Option(envvar="SWEEP_CHECKPOINTS", help="Which checkpoints of each policy to consider (as `run`)."),
    ] = "all",
    suite: Suite = "navigation",
    device: DeviceOption = Device.CPU,
    data_dir: DataDir = Path("data"),
    run_name: RunName = "",
    output_uri: OutputUri = None,
    episodes: Episodes = None,
    num_workers: NumWorkers = None,
    unit_timeout: UnitTimeout = None,
    replays: Replays = True,
    ray_address: RayAddress = None,
    wandb_entity: WandbEntity = "metta-ai",
    wandb_project: WandbProject = "metta-research",
    wandb_api_key: WandbApiKey = None,
    lease_ttl: Annotated[
        float,
        typer.Option(
            envvar="SWEEP_LEASE_TTL", help="Seconds after which an unrenewed lease is stale (renewed every third)."
        ),
    ] = 900.0,
    wait_for_leases: Annotated[
        float,
        typer.Option(
            envvar="SWEEP_WAIT_FOR_LEASES", help="Seconds to wait for checkpoints another sweep is evaluating."
        ),
    ] = 0.0,
    include_cached: Annotated[
        bool,
        typer.Option(help="Also report checkpoints already in the results cache (from the cache, nothing replayed)."),
    ] = False,
    markers: Markers = False,
    progress: ShowProgress = True,
) -> None:
    """Evaluate only the checkpoints not yet in the results cache, each once even when sweeps overlap
    (leases in DATA_DIR/leases); print every checkpoint's state and the report of what was evaluated."""
    from evaluator.sweep import SweepConfig, read_policy_list
    from evaluator.sweep import sweep as run_sweep

    global _redact
    _redact = Redactor([os.environ.get(name) for name in SECRET_VARIABLES] + [wandb_api_key])
    _setup_logging()
    _redact.install()
    uris = [u.strip() for item in policy_uri or [] for u in item.split(",") if u.strip()]
    try:
        if policies_file is not None:
            try:
                uris += read_policy_list(policies_file)
            except OSError as exc:
                raise UsageError(f"cannot read the policies file {policies_file}: {exc.strerror or exc}") from None
        if not uris:
            raise UsageError("no policy given: pass --policy-uri / POLICY_URI or --policies-file / SWEEP_POLICIES_FILE")
        evaluation = EvalConfig.model_validate(
            {
                "policy_uris": tuple(uris),
                "checkpoints": checkpoints,
                "suite": suite,
                "device": device,
                "data_dir": data_dir,
                "run_name": run_name or default_sweep_name(),
                "output_uri": output_uri,
                "episodes": episodes,
                "num_workers": num_workers,
                "unit_timeout": unit_timeout,
                "replays": replays,
                "ray_address": ray_address,
                "wandb_entity": wandb_entity,
                "wandb_project": wandb_project,
                "wandb_api_key": wandb_api_key,
            }
        )
        config = SweepConfig(
            evaluation=evaluation,
            lease_ttl_s=lease_ttl,
            wait_for_leases_s=wait_for_leases,
            include_cached=include_cached,
        )
        result = run_sweep(config, show_progress=progress)
    except ValidationError as exc:
        _fail(_validation_message(exc), EXIT_USAGE, uris[0] if uris else None, markers=markers)
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE, uris[0] if uris else None, markers=markers)
    except Exception as exc:  # the whole sweep failed: the error JSON still goes out, with the traceback
        first = uris[0] if uris else None
        _fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED, first, traceback.format_exc(), markers=markers)
    _emit(result.model_dump_json(indent=2), markers)
    if result.failed:
        failures = [f"{c.name} ({c.version}): {c.error}" for c in result.checkpoints if c.error]
        if result.report and result.report.output and result.report.output.error:
            failures.append(result.report.output.error)
        typer.echo(_redact(f"error: {len(failures)} failure(s): " + "; ".join(failures)), err=True)
        raise typer.Exit(EXIT_FAILED)


def default_sweep_name() -> str:
    from datetime import UTC, datetime

    return f"sweep_{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"


@app.command()
def serve(
    ray_address: Annotated[
        str | None,
        typer.Option(
            envvar="RAY_ADDRESS",
            help="The Ray cluster's dashboard (job API), e.g. http://policy-evaluator-head-svc:8265.",
        ),
    ] = None,
    webhook_secret: Annotated[
        str | None,
        typer.Option(
            envvar="WEBHOOK_SECRET",
            show_default=False,
            help="Shared with W&B: the webhook's access token and/or signing secret (16+ characters).",
        ),
    ] = None,
    ray_auth_token: Annotated[
        str | None,
        typer.Option(envvar="RAY_AUTH_TOKEN", show_default=False, help="Ray's auth token for the job API."),
    ] = None,
    wandb_api_key: Annotated[
        str | None,
        typer.Option(envvar="WANDB_API_KEY", show_default=False, help="To pin deliveries naming an alias."),
    ] = None,
    host: Annotated[str, typer.Option(envvar="SERVICE_HOST", help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(envvar="SERVICE_PORT", help="Port to listen on.")] = 8080,
    job_entrypoint: Annotated[
        str | None,
        typer.Option(envvar="JOB_ENTRYPOINT", help="The command of each job (default: a lease-aware sweep)."),
    ] = None,
    policy_uri_template: Annotated[
        str | None,
        typer.Option(
            envvar="POLICY_URI_TEMPLATE",
            help="POLICY_URI of each job from {entity} {project} {name} {version} (default: wandb://...).",
        ),
    ] = None,
    suite: Annotated[str | None, typer.Option(envvar="SIMULATION_SUITE", help="Jobs' suite.")] = None,
    device: Annotated[Device | None, typer.Option(envvar="DEVICE", help="Jobs' device.")] = None,
    data_dir: Annotated[str | None, typer.Option(envvar="DATA_DIR", help="Jobs' DATA_DIR (on the head).")] = None,
    output_uri: Annotated[
        str | None,
        typer.Option(envvar="OUTPUT_URI", help="Jobs deliver there; GET /jobs/{id} reads reports back from it."),
    ] = None,
    episodes: Annotated[int | None, typer.Option(envvar="EPISODES", help="Jobs' episodes per env.")] = None,
    num_workers: Annotated[int | None, typer.Option(envvar="NUM_WORKERS", help="Jobs' Ray actors.")] = None,
    unit_timeout: Annotated[float | None, typer.Option(envvar="UNIT_TIMEOUT", help="Jobs' unit timeout.")] = None,
    wandb_entity: Annotated[str | None, typer.Option(envvar="WANDB_ENTITY", help="Jobs' W&B entity.")] = None,
    wandb_project: Annotated[str | None, typer.Option(envvar="WANDB_PROJECT", help="Jobs' W&B project.")] = None,
) -> None:
    """The webhook service: W&B Automations deliveries -> one evaluation job per artifact version on the Ray
    cluster. Job options given here (or in their variables) go into every job's runtime_env; unset ones come
    from the Ray head's own environment. Secrets never go into a job's runtime_env."""
    from evaluator.service import ServiceSettings
    from evaluator.service import serve as run_service

    global _redact
    _redact = Redactor([webhook_secret, ray_auth_token, wandb_api_key])
    _setup_logging()
    _redact.install()
    forwarded = {
        "SIMULATION_SUITE": suite,
        "DEVICE": device.value if device else None,
        "DATA_DIR": data_dir,
        "OUTPUT_URI": output_uri,
        "EPISODES": episodes,
        "NUM_WORKERS": num_workers,
        "UNIT_TIMEOUT": unit_timeout,
        "WANDB_ENTITY": wandb_entity,
        "WANDB_PROJECT": wandb_project,
    }
    options: dict[str, object] = {
        "ray_address": ray_address,
        "webhook_secret": webhook_secret,
        "ray_auth_token": ray_auth_token,
        "wandb_api_key": wandb_api_key,
        "host": host,
        "port": port,
        "job_env": {name: str(value) for name, value in forwarded.items() if value is not None},
        "output_uri": output_uri,
        "job_entrypoint": job_entrypoint,
        "policy_uri_template": policy_uri_template,
    }
    try:
        if not ray_address or not webhook_secret:
            raise UsageError("serve needs RAY_ADDRESS (the dashboard URL) and WEBHOOK_SECRET")
        settings = ServiceSettings.model_validate({k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        _fail(_validation_message(exc), EXIT_USAGE, None)
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE, None)
    run_service(settings)
