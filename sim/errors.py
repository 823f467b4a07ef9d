"""The simulation side's exceptions. The CLI maps them to exit codes; library code only raises."""


class EvaluatorError(Exception):
    """Base of every error the evaluator reports to a user (message = one line naming problem and fix)."""


class UsageError(EvaluatorError):
    """Bad input from the user: exit code 2, nothing evaluated."""


class SuiteError(UsageError):
    """Unknown suite, or a suite/map file that cannot be used."""


class PolicyError(EvaluatorError):
    """A checkpoint cannot be loaded or misbehaves; fails that checkpoint only."""


def first_line(exc: BaseException) -> str:
    """An exception as one line for a user-facing message: its first line, or its class name when empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
