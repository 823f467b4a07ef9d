"""Keeping secrets out of everything we print: the JSON on stdout, the error line, and log records.

Secrets are never formatted into messages on purpose; this is the second line of defence for text that
comes from elsewhere (a client library's exception message, say).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

SECRET_VARIABLES = ("WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN", "RESULTS_DB_URL")
MASK = "***"


class Redactor(logging.Filter):
    """Masks known secret values; usable directly and as a logging handler filter."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True

    def install(self) -> None:
        """Filter every record that reaches a root handler."""
        for handler in logging.getLogger().handlers:
            if self not in handler.filters:
                handler.addFilter(self)
