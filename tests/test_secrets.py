"""Secrets never leave the program: `evaluator.secrets.redact_url` on its own (passwords in the userinfo and
in secret query parameters, however they are spelled or encoded), on URLs inside text, and the values they
carry; then every output of a failing and a succeeding run grepped for the password given in
RESULTS_DB_URL's query string (stdout, stderr, the run directory, the `runs` table, `results`, `view`)."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from evaluator import secrets as redaction
from tests.support.view import running_view

VENV_BIN = Path(sys.executable).parent
SECRET = "QzSECRETcore7/p@ss w+rd%&=?#"
"""Has every character a URL must encode; its core (below) survives any encoding, so any partial leak shows."""
CORE = "QzSECRETcore7"
FORMS = {SECRET, quote(SECRET, safe=""), quote_plus(SECRET, safe=""), quote(SECRET), CORE}


def leaks(text: str | bytes) -> list[str]:
    """Which forms of SECRET the text holds (raw, percent-encoded, or its core)."""
    data = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return sorted(form for form in FORMS if form in data)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- redact_url ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:S3cret@host:5432/db", "postgresql://u:***@host:5432/db"),
        ("postgres://u:S3cret@host/db", "postgres://u:***@host/db"),
        ("postgresql+psycopg://u:S3cret@host/db", "postgresql+psycopg://u:***@host/db"),
        ("postgresql://host:5432/db?user=u&password=S", "postgresql://host:5432/db?user=u&password=***"),
        ("postgresql+psycopg://host/db?password=S&user=u", "postgresql+psycopg://host/db?password=***&user=u"),
        ("postgresql://u:a@host/db?password=b", "postgresql://u:***@host/db?password=***"),
        ("postgresql://u:p%40ss%2Fw@host/db", "postgresql://u:***@host/db"),
        ("postgresql://u:pa/ss@host/db", "postgresql://u:***@host/db"),  # SQLAlchemy: password is [^@]*
        ("postgresql://u:p@ss@host/db", "postgresql://u:***@host/db"),  # urlsplit: up to the last @
        ("postgresql://u:S@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
        ("postgresql://[2001:db8::1]:5432/db?password=S", "postgresql://[2001:db8::1]:5432/db?password=***"),
        ("http://[::1]:8080/p?token=S", "http://[::1]:8080/p?token=***"),
        ("https://x-access-token:ghs_S@github.com/o/r.git", "https://x-access-token:***@github.com/o/r.git"),
        ("mysql://u:S@h/db", "mysql://u:***@h/db"),
        ("redis://:S@h:6379/0", "redis://:***@h:6379/0"),
        ("postgresql//u:S@host/db", "postgresql//u:***@host/db"),  # a typo: no scheme to go by
        ("postgresql:/u:S@host/db", "postgresql:***@host/db"),
        ("host=h user=u password=S", "host=h user=u password=***"),  # libpq's keyword/value form
        ("u:S@host:5432/db", "u:***@host:5432/db"),  # no scheme
        ("host:5432/db?password=S", "host:5432/db?password=***"),
        ("/data/run?token=S", "/data/run?token=***"),
        ("postgresql://h/db?pass%77ord=S", "postgresql://h/db?pass%77ord=***"),  # the name percent-encoded
        ("postgresql://h/db?%70%61%73%73%77%6F%72%64=S", "postgresql://h/db?%70%61%73%73%77%6F%72%64=***"),
        ("postgresql://h/db?pass%2577ord=S", "postgresql://h/db?pass%2577ord=***"),  # twice
        ("postgresql://h/db?password=p%40ss%2Fw%3Ard%26x", "postgresql://h/db?password=***"),  # the value encoded
        ("postgresql://h/db?password=a+b&user=u", "postgresql://h/db?password=***&user=u"),
        ("postgresql://h/db?password=abc==&sslmode=require", "postgresql://h/db?password=***&sslmode=require"),
        ("postgresql://h/db?password=&user=u", "postgresql://h/db?password=&user=u"),  # nothing to hide
        ("https://app/cb#access_token=S&state=x", "https://app/cb#access_token=***&state=x"),
        ("https://h/p?a=b#token=S", "https://h/p?a=b#token=***"),
        ("https://h/p?a=b&amp;token=S", "https://h/p?a=b&amp;token=***"),  # HTML-escaped
        ("https://h/p;token=S", "https://h/p;token=***"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIAEXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z"
            "&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Security-Token=IQoJb3JpZ2lu"
            "&X-Amz-Signature=0123abcd",
            "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***"
            "&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Security-Token=***"
            "&X-Amz-Signature=***",
        ),
        ("https://a.blob.core.windows.net/c/b?sv=2022&sig=S%3D", "https://a.blob.core.windows.net/c/b?sv=2022&sig=***"),
        (
            "https://g/o?X-Goog-Credential=c&X-Goog-Signature=s",
            "https://g/o?X-Goog-Credential=***&X-Goog-Signature=***",
        ),
        ("https://b.s3.amazonaws.com/k?AWSAccessKeyId=A&Signature=S&Expires=1", None),
    ],
)
def test_redact_url_masks_the_password_and_secret_parameters(url: str, expected: str | None):
    masked = redaction.redact_url(url)
    if expected is not None:
        assert masked == expected
    assert "S3cret" not in masked and "=S" not in masked and ":S@" not in masked
    assert redaction.redact_url(masked) == masked, "redacting twice changes nothing"


SECRET_NAMES = [
    "password", "Password", "PASSWORD", "sslpassword", "passwd", "pwd", "pass", "passphrase", "token",
    "access_token", "refresh_token", "id_token", "auth_token", "sessionToken", "api_key", "apikey", "apiKey",
    "api-key", "api+key", "key", "sslkey", "secret_key", "private_key", "secret", "client_secret", "sig",
    "signature", "Signature", "X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-Credential", "credential",
    "credentials", "AWSAccessKeyId", "auth", "hmac", "pass%77ord", "%50WD", "amp;password",
]  # fmt: skip
PLAIN_NAMES = [
    "user", "username", "sslmode", "host", "dbname", "port", "application_name", "options", "keyspace",
    "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Algorithm", "authSource", "expires", "state",
]  # fmt: skip


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_every_secret_parameter_is_masked_whatever_its_case_or_encoding(name: str):
    for base in ("postgresql://h/db", "https://h/p", "s3://bucket/key"):
        assert redaction.redact_url(f"{base}?user=u&{name}=hidden-val") == f"{base}?user=u&{name}=***"


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_other_parameters_are_kept(name: str):
    url = f"postgresql://h/db?{name}=visible-val"
    assert redaction.redact_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "wandb://metta-ai/proj/model:v3",
        "wandb://run/name:v30",
        "file:///tmp/ckpt@v3/model.pt",
        "builtin://random",
        "sqlite:////tmp/results.db",
        "sqlite:///relative.db?mode=ro",
        "s3://bucket/user@example.com/key",
        "https://host:8080/a@b",
        "https://example.com/a?b=c&d=e#top",
        "postgresql://u@host/db",
        "postgresql://host/db?user=u&sslmode=require",
        "",
    ],
)
def test_urls_without_secrets_come_back_unchanged(url: str):
    assert redaction.redact_url(url) == url


@pytest.mark.parametrize(
    "garbage",
    [
        "://",
        "::::@@@",
        "%%%",
        "%zz=%zz&password=%",
        "postgresql://u:S-secret@",
        "postgresql://[::1",
        "http://a b c",
        "\x00\x01password=S-secret\x7f",
        "?" * 10_000,
        "postgresql://" + "@" * 5000 + "password=S-secret",
        "a" * 100_000 + "?token=S-secret",
    ],
)
def test_unparseable_input_never_raises_and_hides_what_it_can(garbage: str):
    masked = redaction.redact_url(garbage)
    assert isinstance(masked, str) and "S-secret" not in masked
    assert "S-secret" not in redaction.redact_text(garbage)
    redaction.url_secrets(garbage)


def test_non_strings_are_a_placeholder():
    assert redaction.redact_url(None) == redaction.redact_url(b"x") == "<unparseable URL>"  # type: ignore[arg-type]


# -- URLs in text, and the values a URL carries ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "results database postgresql://h:1/db?user=u&password=S unavailable: refused",
            "results database postgresql://h:1/db?user=u&password=*** unavailable: refused",
        ),
        ("(see postgresql://u:S@h/db).", "(see postgresql://u:***@h/db)."),
        (
            '{"error": "cannot open postgresql://u:S@h/db, nor https://x/y?token=S"}',
            '{"error": "cannot open postgresql://u:***@h/db, nor https://x/y?token=***"}',
        ),
        ("url='postgres://u:S@h/db' failed", "url='postgres://u:***@h/db' failed"),
        ('<a href="https://h/p?a=1&amp;sig=S">', '<a href="https://h/p?a=1&amp;sig=***">'),
        ("host=h user=u password=S dbname=d", "host=h user=u password=*** dbname=d"),
        ("host=h password='a b c' port=5", "host=h password=*** port=5"),
        ("nothing to see at https://example.com/a?b=c", "nothing to see at https://example.com/a?b=c"),
        ("name:version pairs like wandb://e/p/m:v3 stay", "name:version pairs like wandb://e/p/m:v3 stay"),
        ("key: value, user@example.com", "key: value, user@example.com"),
    ],
)
def test_redact_text_masks_every_url_it_holds(text: str, expected: str):
    assert redaction.redact_text(text) == expected


def test_json_stays_json_once_redacted():
    """What the CLI prints is redacted after it is serialised: masking must never break the JSON."""
    import json

    document = {
        "error": 'postgresql://u:p"w@h/db?password=a"b&x=1 and https://h/p?token=t\\"u and host=h password=\'q r\'',
        "traceback": 'connect("postgresql://u:S@h/db", password="S2")\n  token=abc\\def',
        "nested": json.dumps({"url": 'postgres://h/db?user=u&password=x"y', "note": 'password="z" x'}),
        "uri": "file:///tmp/a=b/c@d",
    }
    text = json.dumps(document, indent=2)
    redacted = redaction.Redactor([])(text)
    assert json.loads(redacted)["uri"] == "file:///tmp/a=b/c@d"
    assert "***" in redacted and all(s not in redacted for s in ('a"b', 'p\\"w', 't\\\\\\"u', "q r", "abc"))


def test_redact_text_is_quick_on_a_large_report():
    import time

    block = '    {"uri": "file:///data/run/ckpt_1.pt", "error": "x=1", "replay_url": "file:///r/x.json.z"},\n' * 12_000
    started = time.perf_counter()
    assert redaction.redact_text(block) == block
    assert time.perf_counter() - started < 0.5, "about 1 MB: a 100 MB report is streamed through this"


def test_url_secrets_are_every_form_of_each_secret():
    found = redaction.url_secrets("postgresql://u:p%40ss-word@h/db?user=u&token=a%2Bb%20c-tok&sslmode=require")
    assert {"p%40ss-word", "p@ss-word", "a%2Bb%20c-tok", "a+b c-tok", "a%2Bb+c-tok"} <= found
    assert "u" not in found and "require" not in found
    assert redaction.url_secrets("sqlite:////tmp/results.db") == set()
    url = f"postgresql://h/db?user=u&password={quote(SECRET, safe='')}"
    assert {SECRET, quote(SECRET, safe=""), quote_plus(SECRET, safe="")} <= redaction.url_secrets(url)


def test_the_redactor_masks_url_secrets_without_their_url_and_urls_it_was_never_told_of():
    url = f"postgresql://h/db?user=u&password={quote(SECRET, safe='')}"
    redact = redaction.Redactor(redaction.url_secrets(url))
    assert leaks(redact(f"the driver said: password {SECRET!r} refused, {quote_plus(SECRET)}")) == []
    assert redact("other: https://h/x?X-Amz-Signature=abc") == "other: https://h/x?X-Amz-Signature=***"


def test_the_log_filter_masks_messages_and_tracebacks(caplog: pytest.LogCaptureFixture):
    url = f"postgresql://h/db?password={quote(SECRET, safe='')}"
    redact = redaction.Redactor(redaction.url_secrets(url))
    stream = io.StringIO()
    stream_handler = logging.StreamHandler(stream)
    stream_handler.addFilter(redact)
    logger = logging.getLogger("test_secrets")
    logger.addHandler(stream_handler)
    try:
        logger.error("connecting to %s", url)
        try:
            raise RuntimeError(f"cannot connect to {url} (password {SECRET})")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(stream_handler)
    assert "password=***" in stream.getvalue() and "RuntimeError" in stream.getvalue()
    assert leaks(stream.getvalue()) == []


def test_database_errors_name_the_database_without_its_secrets():
    from evaluator.store.database import close_database, masked, open_database
    from sim.errors import ServiceUnavailable

    url = f"postgresql://127.0.0.1:{closed_port()}/db?user=u&password={quote(SECRET, safe='')}"
    assert masked(url) == url.split("password=")[0] + "password=***"
    try:
        with pytest.raises(ServiceUnavailable) as raised:
            open_database(url)
    finally:
        close_database(url)
    assert "password=***" in str(raised.value) and leaks(str(raised.value)) == []


def test_the_service_never_shows_a_ray_address_password():
    from evaluator.service.jobs import _unreachable

    message = _unreachable(f"http://admin:{CORE}@head:8265", ConnectionError(f"http://admin:{CORE}@head:8265 refused"))
    assert "http://admin:***@head:8265" in message and leaks(message) == []


def test_the_reports_delivery_status_names_output_uri_without_secrets():
    from evaluator.reduce.report import OutputStatus

    status = OutputStatus(
        uri=f"https://b.s3.amazonaws.com/out?X-Amz-Signature={CORE}",
        error=f"upload to https://u:{CORE}@minio:9000/out failed: 403",
    )
    assert status.uri == "https://b.s3.amazonaws.com/out?X-Amz-Signature=***"
    assert status.error == "upload to https://u:***@minio:9000/out failed: 403"
    assert OutputStatus.model_validate_json(status.model_dump_json()) == status


def test_a_run_records_its_configuration_without_secrets(tmp_path: Path):
    from sqlalchemy import select

    from evaluator.store.database import open_database
    from evaluator.store.runs import RunLog
    from evaluator.store.schema import runs

    url = f"sqlite:///{tmp_path / 'results.db'}"
    config = {
        "output_uri": f"https://h/out?X-Amz-Signature={quote(SECRET, safe='')}",
        "ray_address": f"http://admin:{quote(SECRET, safe='')}@head:8265",
        "results_db": "**********",
        "policy_uris": [f"s3://b/k?token={CORE}"],
        "nested": {"note": f"postgresql://h/db?password={CORE}"},
    }
    RunLog(url, "r", "smoke", config)
    with open_database(url).connect() as connection:
        stored = connection.execute(select(runs.c.config)).scalar()
    assert stored["ray_address"] == "http://admin:***@head:8265" and stored["results_db"] == "**********"
    assert leaks(str(stored)) == []


# -- every output of a failing and a succeeding run ------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "RESULTS_DB_URL"} | (env or {})
    return subprocess.run(
        [str(VENV_BIN / "policy-evaluator"), *args], capture_output=True, text=True, env=environment, timeout=timeout
    )


def run_smoke(data_dir: Path, name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return cli(
        "run", "--no-progress", "-p", "builtin://random", "--suite", "smoke", "--episodes", "1",
        "--data-dir", str(data_dir), "--run-name", name, env=env,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    "template",
    [
        "postgresql://127.0.0.1:{port}/db?user=u&password={secret}",
        "postgres://127.0.0.1:{port}/db?user=u&pass%77ord={secret}",
        "postgresql+psycopg://u:{secret}@127.0.0.1:{port}/db?sslmode=disable",
    ],
)
def test_a_failing_run_prints_no_secret(tmp_path: Path, template: str):
    url = template.format(port=closed_port(), secret=quote(SECRET, safe=""))
    done = run_smoke(tmp_path, "failing", {"RESULTS_DB_URL": url})
    assert done.returncode == 3, done.stderr
    assert "unavailable" in done.stderr and "***" in done.stderr
    assert leaks(done.stdout) == [] and leaks(done.stderr) == [], done.stdout + done.stderr
    error = json.loads(done.stdout)  # redacted after it was serialised: still the error JSON
    assert error["retryable"] is True and "***" in error["error"] and "***" in error["traceback"]


@contextlib.contextmanager
def view_server(data_dir: Path, results_db: str) -> Iterator[str]:
    """`policy-evaluator view DATA_DIR --results-db URL` on a free port; yields its base URL. Nothing it prints
    holds the secret."""
    with running_view(data_dir, "--results-db", results_db) as view:
        assert leaks(view.banner) == []
        yield view.url
    assert leaks(view.output) == [], view.output


def get(base: str, path: str) -> tuple[int, str]:
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read().decode()


@pytest.fixture
def secret_database(postgres_server) -> Iterator[str]:
    """A database owned by a role whose password is SECRET, and its URL with the user and the password (percent-
    encoded) in the query string; the server authenticates with scram-sha-256, so the password is checked."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    from evaluator.store.database import close_database

    suffix = uuid.uuid4().hex[:8]
    role, database = f"redact_{suffix}", f"redact_{suffix}"
    admin = make_conninfo(
        host="127.0.0.1", port=postgres_server.port, user=postgres_server.user, password=postgres_server.password,
        dbname="postgres", sslmode="disable",
    )  # fmt: skip
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(SECRET))
        )
        connection.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role))
        )
    url = (
        f"postgresql://127.0.0.1:{postgres_server.port}/{database}"
        f"?user={role}&password={quote(SECRET, safe='')}&sslmode=disable"
    )
    with psycopg.connect(url) as connection:
        connection.execute("select 1")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url.replace(quote(SECRET, safe=""), "wrong-password"))
    yield url
    close_database(url)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_succeeding_run_leaves_the_secret_nowhere(tmp_path: Path, secret_database: str):
    import psycopg

    url = secret_database
    data_dir = tmp_path / "data"
    done = run_smoke(data_dir, "succeeding", {"RESULTS_DB_URL": url})
    assert done.returncode == 0, done.stderr
    assert leaks(done.stdout) == [] and leaks(done.stderr) == [], done.stdout + done.stderr

    files = [path for path in data_dir.rglob("*") if path.is_file()]
    assert {"report.json", "report.html", "episodes.parquet"} <= {path.name for path in files}
    leaked = {str(path.relative_to(data_dir)): leaks(path.read_bytes()) for path in files}
    assert {name: forms for name, forms in leaked.items() if forms} == {}

    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT * FROM runs").fetchall()
        config = connection.execute("SELECT config::text FROM runs").fetchall()
        every_table = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
        dumped = [connection.execute(f'SELECT * FROM "{name}"').fetchall() for (name,) in every_table]
    assert len(rows) == 1 and leaks(repr(rows)) == [] and leaks(repr(config)) == []
    assert '"results_db": "**********"' in config[0][0]
    assert leaks(repr(dumped)) == []

    for args in (["results"], ["results", "--json"], ["results", "--run", "succeeding"], ["results", "--best"]):
        shown = cli(*args, "--results-db", url)
        assert shown.returncode == 0, shown.stderr
        assert leaks(shown.stdout) == [] and leaks(shown.stderr) == [], shown.stdout + shown.stderr
    header = cli("results", env={"RESULTS_DB_URL": url}).stdout
    assert "password=***" in header and leaks(header) == []

    with view_server(data_dir, url) as base:
        for path in ("/", "/leaderboard", "/runs/succeeding/", "/runs/succeeding/report.json"):
            status, body = get(base, path)
            assert status == 200, (path, body)
            assert leaks(body) == [], (path, body)
        assert "password=***" in get(base, "/leaderboard")[1]


@pytest.mark.slow
def test_view_of_an_unreachable_or_missing_database_shows_no_secret(tmp_path: Path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "report.json").write_text('{"simulation_suite": "smoke"}')
    away = f"postgresql://127.0.0.1:{closed_port()}/db?user=u&password={quote(SECRET, safe='')}"
    with view_server(tmp_path, away) as base:
        status, body = get(base, "/leaderboard")
        assert status == 503 and "unavailable" in body and "password=***" in body, body
        assert leaks(body) == [], body
        status, body = get(base, "/")
        assert status == 200 and "results database unavailable" in body, body
        assert leaks(body) == [], body
    missing = f"sqlite:///{tmp_path / 'none.db'}?token={quote(SECRET, safe='')}"
    with view_server(tmp_path, missing) as base:
        status, body = get(base, "/leaderboard")
        assert status == 404 and "token=***" in body, body
        assert leaks(body) == [], body
