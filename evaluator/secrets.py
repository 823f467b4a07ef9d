"""Keeping secrets out of everything we print: the JSON on stdout, the error line, log records, the pages and
answers we serve, and what we store.

Every URL we print, log, serve or store goes through `redact_url`: the password of its userinfo
(`user:***@host`) and the values of its secret query parameters (`password=***`, `token=***`,
`X-Amz-Signature=***`, ...: `is_secret_name`) are masked, whatever the spelling or percent-encoding of the
name and value. `redact_text` does the same to every URL inside a text (a driver's error message embeds
its connection URL) and to libpq's `password=...` keyword pairs. `url_secrets` gives the secret values a
URL carries, in each form they may be printed in, so that `Redactor` masks them where they appear without
their URL.

Secrets are never formatted into messages on purpose; this is the second line of defence for text that
comes from elsewhere (a client library's exception message, say).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote, unquote_plus

SECRET_VARIABLES = ("WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN", "RESULTS_DB_URL")
MASK = "***"
UNPARSEABLE = "<unparseable URL>"

_SECRET_FRAGMENTS = (
    "password", "passwd", "passphrase", "secret", "token", "signature", "credential", "apikey", "accesskey",
    "privatekey",
)  # fmt: skip
"""A parameter whose (decoded, lower-case) name contains one of these is secret: `sslpassword`,
`client_secret`, `X-Amz-Security-Token`, `X-Amz-Credential`, `AWSAccessKeyId`..."""
_SECRET_WORDS = frozenset({"pass", "pwd", "key", "keys", "sig", "auth", "hmac"})
"""...and one with one of these as a word of its name (`sig`, `api_key`, `api-key`), or a word ending in
`key` (`apikey`, `sslkey`). `keyspace` or `authSource` are not secret."""
_WEB_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp", "s3", "s3a", "gs", "file", "wandb", "builtin"})
"""Schemes whose clients end the authority at the first `/`, `?` or `#` (urllib's rule). Any other (the
databases') also gets SQLAlchemy's: the password runs from the user's `:` to the next `@`, `/` included."""

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
_AUTHORITY_END = re.compile(r"[/?#]")
_QUERY_START = re.compile(r"[?#]")
_SQLALCHEMY_USERINFO = re.compile(r"[^:/]*:([^@]*)@")
_PARAMETERS_START = re.compile(r"[?#;]")
_PAIR_SEPARATOR = re.compile(r"([&;])")
_URL_IN_TEXT = re.compile(r"""(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://(?:[^\s"<>`\\]|\\\S)+""")
"""A URL in text: up to a space, a quote or a bracket; a backslash escape (JSON's `\\"`) is part of it, so that
masking a value never leaves half an escape behind."""
_MARKER = re.compile(r"[@=]")
"""What a URL or `name=value` pair needs to have anything to mask."""
_TRAILING = ".,;:!?)]}'"
"""Punctuation after a URL in prose, not part of it."""
_KEYWORD = re.compile(
    r"""(?<![\w%.\-])([A-Za-z_][\w.%\-]*)(\s*=\s*)('(?:[^'"\\\n]|\\.)*'|\\"(?:[^"\\]|\\[^"])*\\"|(?:[^\s&;'"<>\\]|\\[^\s"])+)"""
)
"""`name=value`: libpq's keyword/value connection strings (`host=h password='a b'`), bare query strings. The
value: single-quoted (libpq), JSON-escaped double quotes, or up to a space, `&`, `;` or a quote."""


def is_secret_name(name: str) -> bool:
    """Whether a query parameter (or keyword) named `name` holds a secret; case-insensitive, and the name is
    percent-decoded first (`pass%77ord` is `password`)."""
    decoded = name
    for _ in range(3):  # encoded twice is still the name
        step = unquote_plus(decoded)
        if step == decoded:
            break
        decoded = step
    lowered = decoded.strip().lower()
    if any(fragment in lowered for fragment in _SECRET_FRAGMENTS):
        return True
    return any(word in _SECRET_WORDS or word.endswith("key") for word in re.split(r"[^a-z0-9]+", lowered) if word)


def redact_url(url: str) -> str:
    """`url` with the password of its userinfo and the values of its secret parameters replaced by ***; the
    rest exactly as given (a URL without secrets comes back unchanged). Never raises: what cannot be parsed
    comes back with what can be found masked (or a placeholder for what is not text at all)."""
    if not isinstance(url, str):
        return UNPARSEABLE
    try:
        return _mask_keywords(_mask_url(url, []), [])
    except Exception:  # noqa: BLE001 - a redactor must not be what fails; hide everything instead
        return UNPARSEABLE


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted (`redact_url`), and the values of secret `name=value` pairs."""
    if not isinstance(text, str):
        return UNPARSEABLE
    if "@" not in text and "=" not in text:  # fast path: nothing can be masked (a 100 MB report, streamed)
        return text
    try:
        # Only the lines with an `@` or `=` are searched (neither URL nor pair spans lines): a report's 1 MB
        # block with a few of them costs a millisecond, not the 50 ms of searching it all.
        parts, position = [], 0
        while hit := _MARKER.search(text, position):
            start = max(position, text.rfind("\n", position, hit.start()) + 1)
            end = text.find("\n", hit.end())
            end = len(text) if end < 0 else end
            line = text[start:end]
            parts += [text[position:start], _mask_keywords(_URL_IN_TEXT.sub(_mask_match, line), [])]
            position = end
        parts.append(text[position:])
        return "".join(parts)
    except Exception:  # noqa: BLE001
        return UNPARSEABLE


def url_secrets(url: str) -> set[str]:
    """The secret values `url` carries (its password, its secret parameters' values), each as given, percent-
    decoded and percent-encoded: the forms a driver or a library may print them in."""
    found: list[str] = []
    try:
        _mask_keywords(_mask_url(url, found), found)
    except Exception:  # noqa: BLE001
        return set()
    forms: set[str] = set()
    for raw in found:
        raw = raw[1:-1] if len(raw) > 1 and raw[0] == raw[-1] and raw[0] in "'\"" else raw
        decoded = {raw, unquote(raw), unquote_plus(raw)}
        forms |= decoded
        for value in decoded:
            forms |= {quote(value, safe=""), quote_plus(value, safe=""), quote(value), quote_plus(value)}
            forms.add(re.sub(r"[:@/%]", lambda m: f"%{ord(m.group(0)):02X}", value))  # SQLAlchemy's quoting
    return {form for form in forms if form and form != MASK}


def redact_tree(value: object) -> object:
    """A JSON-like value (dicts, lists, strings) with every string redacted: URLs in text, and strings that
    are one URL (even without a scheme, `user:password@host/db`)."""
    if isinstance(value, str):
        text = redact_text(value)
        return text if any(c.isspace() for c in text) else redact_url(text)
    if isinstance(value, dict):
        return {key: redact_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(item) for item in value]
    return value


def _mask_match(match: re.Match[str]) -> str:
    candidate = match.group(0)
    if "@" not in candidate and "=" not in candidate:
        return candidate
    url = candidate.rstrip(_TRAILING)
    return _mask_url(url, []) + candidate[len(url) :]


def _mask_url(url: str, found: list[str]) -> str:
    """`url` with its userinfo password and secret parameter values masked; appends the raw values to `found`."""
    scheme_match = _SCHEME.match(url)
    scheme = scheme_match.group(1).lower() if scheme_match else ""
    start = scheme_match.end() if scheme_match else 0
    rest = url[start:]
    spans = []
    # Without a scheme (`u:pw@host/db`, or a mistyped `postgresql//u:pw@host`) a `/` may come before the `@`.
    end = (_AUTHORITY_END if scheme_match else _QUERY_START).search(rest)
    authority = rest[: end.start() if end else len(rest)]
    at = authority.rfind("@")
    if at >= 0 and (colon := authority.find(":", 0, at)) >= 0:
        spans.append((colon + 1, at))
    if scheme not in _WEB_SCHEMES and (userinfo := _SQLALCHEMY_USERINFO.match(rest)):
        spans.append(userinfo.span(1))
    after, swallowed = 0, False
    if spans:
        first, last = min(s for s, _ in spans), max(e for _, e in spans)
        if last > first:
            found.append(rest[first:last])
            swallowed = any(c in rest[first:last] for c in "?#")
            rest = rest[:first] + MASK + rest[last:]
        after = first + len(MASK) + 1 if last > first else last + 1
    if swallowed:  # the query began inside what was masked: all that follows the `@` is parameters
        return url[:start] + rest[:after] + _mask_pairs(rest[after:], found)
    parameters = _PARAMETERS_START.search(rest, after)
    if parameters is None:
        return url[:start] + rest
    return url[:start] + rest[: parameters.end()] + _mask_pairs(rest[parameters.end() :], found)


def _mask_pairs(parameters: str, found: list[str]) -> str:
    parts = _PAIR_SEPARATOR.split(parameters)
    for index in range(0, len(parts), 2):
        name, equals, value = parts[index].partition("=")
        if not equals:
            continue
        if is_secret_name(name):
            if value and value != MASK:
                found.append(value)
                parts[index] = f"{name}={MASK}"
        elif "#" in value:  # a fragment's own parameters (`#access_token=...`)
            head, _, fragment = value.partition("#")
            parts[index] = f"{name}={head}#{_mask_pairs(fragment, found)}"
    return "".join(parts)


def _mask_keywords(text: str, found: list[str]) -> str:
    if "=" not in text:
        return text

    def masked(match: re.Match[str]) -> str:
        name, equals, value = match.groups()
        if value == MASK or not is_secret_name(name):
            return match.group(0)
        found.append(value)
        return f"{name}{equals}{MASK}"

    return _KEYWORD.sub(masked, text)


class Redactor(logging.Filter):
    """Masks every URL's secrets (`redact_text`) and known secret values; usable directly and as a logging
    handler filter (the message, and the traceback of a record logged with one)."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = redact_text(text)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:  # the formatter uses this text once it is set
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self(record.exc_text)
        if record.stack_info:
            record.stack_info = self(record.stack_info)
        return True

    def install(self) -> None:
        """Filter every record that reaches a root handler."""
        for handler in logging.getLogger().handlers:
            if self not in handler.filters:
                handler.addFilter(self)
