"""`policy-evaluator`: thin typer commands over the evaluator.

Options are `Annotated[..., typer.Option(envvar=...)]` with the seed's environment variables, declared once
in `evaluator.cli.options` and validated once into an `EvalConfig`. Exceptions map to exit codes only here,
in `command`, for every command (`sim.errors.ExitCode`): 0 every checkpoint evaluated, 1 the evaluation
failed (report with per-checkpoint errors, or the error JSON), 2 bad usage, 3 a service the run needs could
not be reached (W&B, S3, Ray; the error JSON says `"retryable": true`). stdout carries the JSON and nothing
else; logs and progress go to stderr.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from typer._click.exceptions import NoArgsIsHelpError  # typer 0.29 vendors click; no public name for this
from typer.core import TyperGroup

from evaluator.cli.options import (
    Checkpoints,
    DataDir,
    IncludeCached,
    JobDataDir,
    JobDevice,
    JobEntrypoint,
    JobEpisodes,
    JobNumWorkers,
    JobOutputUri,
    JobSuite,
    JobUnitTimeout,
    JobWandbEntity,
    JobWandbProject,
    LeaseTtl,
    Markers,
    OptionalPolicyUris,
    PoliciesFile,
    PolicyUris,
    PolicyUriTemplate,
    RayAuthToken,
    ResultsDb,
    ServiceHost,
    ServicePort,
    ServiceRayAddress,
    ServiceWandbApiKey,
    ShowProgress,
    SweepCheckpoints,
    SweepPolicyUris,
    WaitForLeases,
    WebhookSecret,
    with_evaluation_options,
    with_signature,
)
from evaluator.config import EvalConfig
from evaluator.markers import MARKER_END, MARKER_START, wrap
from evaluator.reduce.report import ErrorReport, Report
from evaluator.secrets import SECRET_VARIABLES, Redactor, url_secrets
from sim.errors import EvaluatorError, ExitCode, ServiceUnavailable, UsageError, first_line, validation_line

__all__ = ["MARKER_END", "MARKER_START", "app", "main"]

SECRET_OPTIONS = ("wandb_api_key", "webhook_secret", "ray_auth_token")
DATABASE_URL_OPTIONS = (("RESULTS_DB_URL", "results_db"),)
"""(environment variable, option) of database URLs: their secrets (password, secret query values) are masked
wherever they appear."""
"""Options whose values are masked in everything printed, besides the SECRET_VARIABLES of the environment."""


@dataclass(frozen=True)
class Output:
    """stdout (the JSON, between the markers when asked) and the `error:` line on stderr, both redacted."""

    markers: bool
    redact: Redactor

    def emit(self, document: str) -> None:
        document = self.redact(document)
        typer.echo(wrap(document) if self.markers else document)

    def emit_file(self, path: Path) -> None:
        """`emit` of a file's text, streamed in blocks of whole lines (a 10,000-checkpoint report is ~100 MB:
        never one string)."""
        if self.markers:
            typer.echo(MARKER_START)
        with path.open(encoding="utf-8") as document:
            while lines := document.readlines(1 << 20):
                typer.echo(self.redact("".join(lines)), nl=False)
        typer.echo("")
        if self.markers:
            typer.echo(MARKER_END)

    def error(self, message: str, code: int, policy_uri: str | None = None, trace: str | None = None) -> None:
        """One line on stderr, the error JSON on stdout (`retryable` for an outage)."""
        typer.echo(self.redact(f"error: {message}"), err=True)
        document = ErrorReport(error=message, traceback=trace, policy_uri=policy_uri).model_dump(mode="json")
        self.emit(json.dumps(document | {"retryable": code == ExitCode.OUTAGE}, indent=2))

    def failures(self, failures: list[str]) -> None:
        """The report is out; name what failed on stderr and exit 1."""
        typer.echo(self.redact(f"error: {len(failures)} failure(s): " + "; ".join(failures)), err=True)
        raise typer.Exit(ExitCode.FAILED)


class _Commands(TyperGroup):
    """Usage errors found while parsing (an unknown flag, `--device gpu`, a non-number in an env var) in the
    product's own format: one line on stderr, the error JSON on stdout, the command's usage exit code."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
            code = ExitCode.USAGE
        except typer.TyperException as exc:  # typer's vendored click: ClickException and its usage errors
            callback = exc.ctx.command.callback if getattr(exc, "ctx", None) and exc.ctx.command else None
            code = getattr(callback, "usage_exit", ExitCode.USAGE)
            output = Output(markers=getattr(callback, "always_markers", False), redact=_redactor({}))
            output.error(" ".join(exc.format_message().split()), code)
        except typer.Abort:
            code = ExitCode.FAILED
        if not standalone_mode:
            return code
        sys.exit(int(code or 0))


app = typer.Typer(
    cls=_Commands,
    name="policy-evaluator",
    rich_markup_mode=None,  # help texts hold URI syntax like project[/run_id], which is not markup
    help="Evaluate MettaGrid policy checkpoints on an evaluation suite with Ray actors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def command(
    *, evaluation: bool = False, usage_exit: ExitCode = ExitCode.USAGE, always_markers: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command. The one place exceptions become exit codes: bad usage `usage_exit`, an outage 3,
    anything else 1 (with the traceback in the error JSON). With `evaluation`, the command is offered every
    evaluation option (`cli_options.with_evaluation_options`). A command that takes `out` gets the
    invocation's `Output` (markers from `--markers`, or always)."""

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        offered = with_evaluation_options(function) if evaluation else function
        parameters = [p for p in inspect.signature(offered, eval_str=True).parameters.values() if p.name != "out"]
        wants_out = "out" in inspect.signature(offered).parameters

        def invoke(**values: Any) -> None:
            out = Output(markers=always_markers or values.get("markers", False), redact=_redactor(values))
            _setup_logging(out.redact)
            try:
                offered(**values, **({"out": out} if wants_out else {}))
            except (typer.Exit, typer.Abort):
                raise
            except Exception as exc:  # noqa: BLE001 - every failure gets a code and the error JSON
                code, message, trace = _classify(exc, usage_exit)
                out.error(message, code, _first_policy(values.get("policy_uri")), trace)
                raise typer.Exit(code) from None

        invoke.__name__, invoke.__doc__ = function.__name__, function.__doc__
        invoke.usage_exit, invoke.always_markers = usage_exit, always_markers  # type: ignore[attr-defined]
        return app.command()(with_signature(invoke, parameters))

    return register


def _classify(exc: Exception, usage_exit: ExitCode) -> tuple[ExitCode, str, str | None]:
    """(exit code, the one-line message, the traceback or None) of a command's exception."""
    if isinstance(exc, ValidationError):
        return usage_exit, _validation_message(exc), None
    if isinstance(exc, UsageError):
        return usage_exit, str(exc), None
    trace = traceback.format_exc()
    if isinstance(exc, ServiceUnavailable):
        return ExitCode.OUTAGE, str(exc), trace
    if isinstance(exc, EvaluatorError):
        return ExitCode.FAILED, str(exc), trace
    return ExitCode.FAILED, f"{type(exc).__name__}: {exc}", trace  # a bug: the whole message, and the trace


def _validation_message(exc: ValidationError) -> str:
    error = exc.errors()[0]
    if error["loc"] == ("policy_uris",) and error["type"] == "too_short":
        return "no policy given: pass --policy-uri or set POLICY_URI"
    return f"invalid {validation_line(exc)}" if error["loc"] else validation_line(exc)  # a model rule says what


def _first_policy(policy_uri: Iterable[str] | None) -> str | None:
    """The first policy URI given, for the error JSON."""
    return next((part.strip() for item in policy_uri or () for part in item.split(",") if part.strip()), None)


def _redactor(values: dict[str, Any]) -> Redactor:
    """Masks the secret variables and options, the secrets the database URLs carry (the userinfo's password and
    secret query values, not the whole URL: where it points is useful) and those of any other URL given (an
    OUTPUT_URI or RAY_ADDRESS with a token); `Redactor` itself masks the secrets of every URL it sees."""
    urls = dict(DATABASE_URL_OPTIONS)
    secrets: list[str | None] = [os.environ.get(name) for name in SECRET_VARIABLES if name not in urls]
    secrets += [values.get(name) for name in SECRET_OPTIONS]
    for variable, option in DATABASE_URL_OPTIONS:
        for url in (os.environ.get(variable), values.get(option)):
            secrets += url_secrets(url) if url else []
    for value in values.values():
        for item in value if isinstance(value, list | tuple) else [value]:
            secrets += url_secrets(item) if isinstance(item, str) and "://" in item else []
    return Redactor(secrets)


def _setup_logging(redact: Redactor) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact.install()


def main() -> None:
    """The `policy-evaluator` command. Once a command has returned, every output is written and renamed into
    place, Ray is shut down and the database committed: the process then leaves without tearing down the
    modules it imported (torch, scipy, mettagrid: ~0.5 s of a 3-4 s quick check), after flushing what it
    printed and logged."""
    # Ray prints the autoscaler's events ("Adding 1 node(s) of type gpu") on a driver's stdout, which carries
    # only the JSON; the driver logs its own wait for nodes on stderr. Read by Ray when it is imported.
    os.environ.setdefault("RAY_SCHEDULER_EVENTS", "0")
    try:
        app()
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a reader that went away (`| head`) has what it wanted
            stream.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


# -- evaluate ---------------------------------------------------------------------------------------------------


@command(evaluation=True)
def run(
    out: Output,
    evaluation: dict[str, Any],
    policy_uri: PolicyUris,
    checkpoints: Checkpoints = "latest",
    markers: Markers = False,
    progress: ShowProgress = True,
) -> None:
    """Evaluate the selected checkpoints of the given policies and print the JSON report on stdout."""
    _evaluate(out, evaluation, policy_uri, checkpoints, progress)


@command(evaluation=True, usage_exit=ExitCode.FAILED, always_markers=True)
def entrypoint(
    out: Output, evaluation: dict[str, Any], policy_uri: OptionalPolicyUris = None, checkpoints: Checkpoints = "latest"
) -> None:
    """The container's command: configured by environment variables (POLICY_URI required, and the variables
    `run` reads, see .env.example); the JSON between markers; bad input exits 1 (the seed's contract), an
    outage 3."""
    _evaluate(out, evaluation, policy_uri or [], checkpoints, progress=False)


def _evaluate(out: Output, evaluation: dict[str, Any], policy_uri: list[str], checkpoints: str, progress: bool) -> None:
    from evaluator.cli.progress_bar import EpisodeProgressBar
    from evaluator.run.driver import evaluate

    config = EvalConfig.model_validate({**evaluation, "policy_uris": tuple(policy_uri), "checkpoints": checkpoints})
    with EpisodeProgressBar() if progress else contextlib.nullcontext() as bar:
        outcome = evaluate(config, on_progress=bar)
    out.emit_file(outcome.run_dir / "report.json")
    logging.getLogger(__name__).info("wrote %s", outcome.run_dir)
    if outcome.failed:
        out.failures(outcome.failures)


# -- look ----------------------------------------------------------------------------------------------------------


@command()
def suites(
    name: Annotated[str | None, typer.Argument(help="Show only this suite (name or file).")] = None,
) -> None:
    """List suites and their environments."""
    from sim.suites import SUITES, get_suite

    selected = [get_suite(name)] if name else [SUITES[key]() for key in sorted(SUITES)]
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


@command()
def summary(
    report_path: Annotated[Path, typer.Argument(help="A report.json written by `run`.")],
) -> None:
    """Print a report's scores as tables: one row per checkpoint, then environments x checkpoints."""
    from evaluator.cli.summary import summary_tables

    try:
        report = Report.model_validate_json(report_path.read_text())
    except (OSError, ValidationError) as exc:
        raise UsageError(f"cannot read report {report_path}: {first_line(exc)}") from None
    console = Console()
    if not console.is_terminal:  # piped or in `make demo`: don't squeeze the tables into 80 columns
        console = Console(width=160)
    for table in summary_tables(report):
        console.print(table)


@command()
def view(
    data_dir: Annotated[
        Path, typer.Argument(envvar="DATA_DIR", help="The data directory whose runs to serve.", show_default=True)
    ] = Path("data"),
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")] = 8765,
    results_db: ResultsDb = None,
) -> None:
    """Serve DATA_DIR read-only in the browser: the runs, each run's page and replays, and a leaderboard of the
    best checkpoints per suite and environment from the results database."""
    from pydantic import SecretStr

    from evaluator.config import results_db_url
    from evaluator.scorecard.server import serve as serve_view

    if not data_dir.is_dir():
        raise UsageError(f"no data directory {data_dir}; pass the DATA_DIR of `run` (default: data)")
    secret = SecretStr(results_db) if results_db else None
    url = results_db_url(EvalConfig.model_construct(data_dir=data_dir, results_db=secret))  # only these two read
    serve_view(data_dir, url, host, port)


@command()
def schema() -> None:
    """Print the JSON Schema of the report."""
    from evaluator.reduce.report import report_schema

    typer.echo(json.dumps(report_schema(), indent=2))


@command()
def results(
    out: Output,
    run: Annotated[str | None, typer.Option("--run", help="Show this run: its checkpoints in order.")] = None,
    policy: Annotated[
        str | None, typer.Option("--policy", help="Show this policy's checkpoints over time (URI as given to -p).")
    ] = None,
    best: Annotated[bool, typer.Option("--best", help="The best checkpoints per suite across all runs.")] = False,
    suite: Annotated[
        str | None, typer.Option("--suite", help="Only this suite (recent runs, --policy, --best).")
    ] = None,
    env: Annotated[str | None, typer.Option("--env", help="With --best: rank by this environment's score.")] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, max=100_000, help="Runs to list [default: 20], or per suite with --best [10]."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout instead of tables.")] = False,
    results_db: ResultsDb = None,
    data_dir: DataDir = Path("data"),
) -> None:
    """Past evaluations from the results database: recent runs (default), one run (--run), a policy's
    checkpoints over time (--policy), or the best checkpoints (--best [--suite S] [--env E])."""
    from pydantic import SecretStr

    from evaluator.cli.results_view import render
    from evaluator.config import results_db_url
    from evaluator.store import queries
    from evaluator.store.database import masked

    if sum((run is not None, policy is not None, best)) > 1:
        raise UsageError("choose one of --run, --policy and --best")
    if env is not None and not best:
        raise UsageError("--env ranks checkpoints: use it with --best")
    secret = SecretStr(results_db) if results_db else None
    url = results_db_url(EvalConfig.model_construct(data_dir=data_dir, results_db=secret))  # only these two read
    answer: queries.RecentRuns | queries.RunDetail | queries.PolicyHistory | queries.BestCheckpoints
    if run is not None:
        answer = queries.run_detail(url, run)
    elif not queries.has_runs(url):
        answer = queries.RecentRuns(database=masked(url), runs=[])
    elif policy is not None:
        answer = queries.policy_history(url, policy, suite)
    elif best:
        answer = queries.best_checkpoints(url, suite, env, limit or 10)
    else:
        answer = queries.recent_runs(url, limit or 20, suite)
    out.emit(answer.model_dump_json(indent=2) if as_json else render(answer))


# -- sweep and serve -------------------------------------------------------------------------------------------------


@command(evaluation=True)
def sweep(
    out: Output,
    evaluation: dict[str, Any],
    policy_uri: SweepPolicyUris = None,
    policies_file: PoliciesFile = None,
    checkpoints: SweepCheckpoints = "all",
    lease_ttl: LeaseTtl = 900.0,
    wait_for_leases: WaitForLeases = 0.0,
    include_cached: IncludeCached = False,
    markers: Markers = False,
    progress: ShowProgress = True,
) -> None:
    """Evaluate only the checkpoints not yet in the results database, each once even when sweeps overlap
    (leases in the same database, `--results-db`); print every checkpoint's state and the report of what was
    evaluated."""
    from datetime import UTC, datetime

    from evaluator.run.sweep import SweepConfig, read_policy_list
    from evaluator.run.sweep import sweep as run_sweep

    uris = [u.strip() for item in policy_uri or [] for u in item.split(",") if u.strip()]
    if policies_file is not None:
        try:
            uris += read_policy_list(policies_file)
        except OSError as exc:
            raise UsageError(f"cannot read the policies file {policies_file}: {exc.strerror or exc}") from None
    if not uris:
        raise UsageError("no policy given: pass --policy-uri / POLICY_URI or --policies-file / SWEEP_POLICIES_FILE")
    run_name = evaluation["run_name"] or f"sweep_{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    config = SweepConfig(
        evaluation=EvalConfig.model_validate(
            {**evaluation, "policy_uris": tuple(uris), "checkpoints": checkpoints, "run_name": run_name}
        ),
        lease_ttl_s=lease_ttl,
        wait_for_leases_s=wait_for_leases,
        include_cached=include_cached,
    )
    from evaluator.cli.progress_bar import EpisodeProgressBar

    with EpisodeProgressBar() if progress else contextlib.nullcontext() as bar:
        result = run_sweep(config, on_progress=bar)
    out.emit(result.model_dump_json(indent=2))
    if result.failed:
        failures = [f"{c.name} ({c.version}): {c.error}" for c in result.checkpoints if c.error]
        report = result.report
        out.failures(failures + ([report.output.error] if report and report.output and report.output.error else []))


@command()
def serve(
    ray_address: ServiceRayAddress = None,
    webhook_secret: WebhookSecret = None,
    ray_auth_token: RayAuthToken = None,
    wandb_api_key: ServiceWandbApiKey = None,
    host: ServiceHost = "0.0.0.0",
    port: ServicePort = 8080,
    job_entrypoint: JobEntrypoint = None,
    policy_uri_template: PolicyUriTemplate = None,
    suite: JobSuite = None,
    device: JobDevice = None,
    data_dir: JobDataDir = None,
    output_uri: JobOutputUri = None,
    episodes: JobEpisodes = None,
    num_workers: JobNumWorkers = None,
    unit_timeout: JobUnitTimeout = None,
    wandb_entity: JobWandbEntity = None,
    wandb_project: JobWandbProject = None,
    results_db: ResultsDb = None,
) -> None:
    """The webhook service: W&B Automations deliveries -> one evaluation job per artifact version on the Ray
    cluster. Job options given here (or in their variables) go into every job's runtime_env; unset ones come
    from the Ray head's own environment. Secrets never go into a job's runtime_env."""
    from evaluator.service import ServiceSettings
    from evaluator.service import serve as run_service

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
        "results_db": results_db,
        "host": host,
        "port": port,
        "job_env": {name: str(value) for name, value in forwarded.items() if value is not None},
        "output_uri": output_uri,
        "job_entrypoint": job_entrypoint,
        "policy_uri_template": policy_uri_template,
    }
    if not ray_address or not webhook_secret:
        raise UsageError("serve needs RAY_ADDRESS (the dashboard URL) and WEBHOOK_SECRET")
    run_service(ServiceSettings.model_validate({k: v for k, v in options.items() if v is not None}))
