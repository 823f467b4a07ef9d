"""The exceptions every part of the evaluator raises, and the few rules for writing their messages.

An error's class says what the user should do, and so which exit code the CLI gives it (`ExitCode`; the CLI
is the only place that maps one to the other, library code only raises):
- `UsageError`: the input is wrong; change it (exit 2, nothing ran).
- `ServiceUnavailable`: a service the run needs (W&B, S3, Ray) could not be reached or failed; the input is
  fine and the same command may succeed later (exit 3, the error JSON says `"retryable": true`).
- `PolicyError`: one checkpoint cannot be fetched, loaded or run; it fails alone (its `error` in the report,
  the other checkpoints complete, exit 1).

Messages are one line naming the problem and the fix. The helpers below write the recurring parts of such
lines the same way everywhere: an exception's first line, a pydantic error, a "did you mean" hint.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class ExitCode(IntEnum):
    """The process's exit status (docs/errors.md lists the cases of each)."""

    OK = 0
    """Every checkpoint evaluated (and delivered)."""
    FAILED = 1
    """The evaluation failed: a checkpoint's `error`, a failed delivery, or an unexpected exception."""
    USAGE = 2
    """Bad input: nothing ran; the input must change."""
    OUTAGE = 3
    """A service the run needs could not be reached or failed: a retry may succeed."""


class EvaluatorError(Exception):
    """Base of every error the evaluator reports to a user (message = one line naming problem and fix)."""


class UsageError(EvaluatorError):
    """Bad input from the user: exit code 2, nothing evaluated."""


class SuiteError(UsageError):
    """Unknown suite, or a suite/map file that cannot be used."""


class PolicyError(EvaluatorError):
    """A checkpoint cannot be fetched, loaded or misbehaves; fails that checkpoint only."""


class ServiceUnavailable(EvaluatorError):
    """W&B, S3 or Ray could not be reached or answered with a server error after the client's own retries:
    exit code 3, retryable. Raised only where the service's answer (or silence) proves the input is not the
    problem; a rejected key or a missing object is a UsageError."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line for a user-facing message: its first line (at most `limit` characters), or
    its class name when it has no text."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def did_you_mean(name: str, known: Iterable[str], show: Callable[[str], str] = repr) -> str:
    """` (did you mean 'navigation'?)` for the known name closest to a mistyped `name`, or '' when none is
    close; `show` writes the suggestion as the user would type it (e.g. `builtin://random`)."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {show(close[0])}?)" if close else ""


def validation_line(exc: ValidationError, *, every: bool = False, root: str = "", located: bool = True) -> str:
    """A pydantic error as one line: `envs.0.max_steps: Field required` (the first error, or with `every`
    all of them joined by '; '). An error with no location is named `root` (or has no prefix); `located=False`
    leaves the location out, for a caller that names it its own way."""
    parts = []
    for error in exc.errors() if every else exc.errors()[:1]:
        where = (".".join(str(part) for part in error["loc"]) or root) if located else ""
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
