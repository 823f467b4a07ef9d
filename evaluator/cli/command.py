"""What every command shares: its exceptions mapped to exit codes (`command`, the one place), and its stdout
(`Output`: the JSON, between the markers when asked, and the `error:` line on stderr, both redacted).

Exit codes (`sim.errors.ExitCode`): 0 every checkpoint evaluated, 1 the evaluation failed (report with
per-checkpoint errors, or the error JSON), 2 bad usage, 3 a service the run needs could not be reached (W&B, S3,
Ray; the error JSON says `"retryable": true`). stdout carries the JSON and nothing else; logs and progress go to
stderr.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from evaluator.markers import MARKER_END, MARKER_START, wrap
from evaluator.options import ResultsDb, envvar
from evaluator.reduce.report import ErrorReport
from evaluator.secrets import SECRET_VARIABLES, Redactor, url_secrets
from sim.errors import EvaluatorError, ExitCode, ServiceUnavailable, UsageError, validation_line

SECRET_OPTIONS = ("wandb_api_key", "webhook_secret", "ray_auth_token")
"""Options whose values are masked in everything printed, besides the SECRET_VARIABLES of the environment."""
DATABASE_URL_OPTIONS = ((envvar(ResultsDb), "results_db"),)
"""(environment variable, option) of database URLs: their secrets (password, secret query values) are masked
wherever they appear."""


@dataclass(frozen=True)
class Printed:
    """What a command prints on stdout: a document, or a file's text streamed; then, when something failed
    (`failures` not None), what failed on stderr, and the command exits 1."""

    document: str | Path
    failures: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Output:
    """stdout (the JSON, between the markers when asked) and the `error:` line on stderr, both redacted."""

    markers: bool
    redact: Redactor

    def print(self, printed: Printed) -> None:
        if isinstance(printed.document, Path):
            self.emit_file(printed.document)
        else:
            self.emit(printed.document)
        if printed.failures is not None:
            self.failures(list(printed.failures))

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


def command(
    *, usage_exit: ExitCode = ExitCode.USAGE, always_markers: bool = False
) -> Callable[[Callable[..., Printed | None]], Callable[..., None]]:
    """A command function made a command callback. The one place exceptions become exit codes: bad usage
    `usage_exit`, an outage 3, anything else 1 (with the traceback in the error JSON). What the function returns
    is printed through the invocation's `Output` (markers from `--markers`, or always). typer reads the
    function's own signature (`functools.wraps`); `usage_exit` and `always_markers` are read by the usage-error
    path too (`evaluator.cli.app`), for errors found before the command runs."""

    def wrap_command(function: Callable[..., Printed | None]) -> Callable[..., None]:
        @functools.wraps(function)
        def invoke(**values: Any) -> None:
            out = Output(markers=always_markers or values.get("markers", False), redact=redactor(values))
            _setup_logging(out.redact)
            try:
                printed = function(**values)
                if printed is not None:
                    out.print(printed)
            except (typer.Exit, typer.Abort):
                raise
            except Exception as exc:  # noqa: BLE001 - every failure gets a code and the error JSON
                code, message, trace = _classify(exc, usage_exit)
                out.error(message, code, _first_policy(values.get("policy_uri")), trace)
                raise typer.Exit(code) from None

        invoke.usage_exit, invoke.always_markers = usage_exit, always_markers  # type: ignore[attr-defined]
        return invoke

    return wrap_command


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


def redactor(values: dict[str, Any]) -> Redactor:
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
