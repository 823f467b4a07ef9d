"""Opening the results database: the URL (SQLite in DATA_DIR unless told), the engine (one per URL and
process), SQLite's WAL mode and write locks, migrations on first use, and the errors users see.

Errors: a database that cannot be reached or that goes away mid-run is an outage (`ServiceUnavailable`,
exit 3, retryable); a URL that is wrong is bad usage (exit 2). Either message names the database by its URL
with its secrets masked (`masked`: the password, and secret query parameters such as `?password=`), never
the driver's raw message (which could carry the connection string).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect, literal_column, select, table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError, SQLAlchemyError

from evaluator.secrets import Redactor, redact_url, url_secrets
from sim.errors import ServiceUnavailable, UsageError, first_line

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
SCHEMA_VERSION = "0005"
"""The latest revision in `migrations/versions/` (a test checks they agree)."""
_ENGINES: dict[str, Engine] = {}
"""One engine (and its connection pool) per URL and process."""
_MIGRATED: set[str] = set()
_LOCK = threading.Lock()


def masked(url: str) -> str:
    """The URL with its secrets replaced by ***, for every message and log line: the userinfo's password and
    secret query parameters (`?user=u&password=...`, which libpq and SQLAlchemy accept too): `redact_url`."""
    return redact_url(url)


def normalized(url: str) -> str:
    """`postgresql://` and `postgres://` (what RDS and most tools print) mean psycopg 3, the driver we ship."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def open_database(url: str) -> Engine:
    """The engine for `url`, its schema migrated to the latest version (once per process)."""
    url = normalized(url)
    with _LOCK:
        if url not in _ENGINES:
            _ENGINES[url] = _engine(url)
        engine = _ENGINES[url]
        if url not in _MIGRATED:
            with errors_of(url, "migrating"):
                if schema_version(engine) != SCHEMA_VERSION:
                    migrate(engine)
            _MIGRATED.add(url)
    return engine


def schema_version(engine: Engine) -> str | None:
    """The revision the database is at (None: empty). One query, so a database already at the latest
    revision never loads Alembic (a quarter of a second on every quick check)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(select(literal_column("version_num")).select_from(table("alembic_version"))).scalar()


def close_database(url: str) -> None:
    """Close the pooled connections to `url`: a long-lived process done with a database (`view` when it stops;
    tests, one database each)."""
    url = normalized(url)
    with _LOCK:
        engine = _ENGINES.pop(url, None)
        _MIGRATED.discard(url)
    if engine is not None:
        engine.dispose()


def _engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(f"--results-db / RESULTS_DB_URL is not a database URL: {masked(url)}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise UsageError(
            f"unsupported results database {masked(url)}: use sqlite:///path/results.db or postgresql://..."
        )
    try:
        if parsed.get_backend_name() == "sqlite":
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30})
            _sqlite_write_locks(engine)
            return engine
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    except NoSuchModuleError as exc:
        raise UsageError(f"cannot open {masked(url)}: {first_line(exc)}") from None


def _sqlite_write_locks(engine: Engine) -> None:
    """WAL (readers never wait for the writer) and transactions that take the write lock when they begin
    (`BEGIN IMMEDIATE`), so a lease's read-check-write cannot interleave with another process's: the
    pysqlite recipe from SQLAlchemy's documentation ("Serializable isolation / Savepoints / Transactional DDL")."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # pysqlite's own BEGIN handling off: we emit it below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`, the latest by default (from empty or any earlier one). Two processes migrating an
    empty PostgreSQL at once: one creates the tables, the other fails on them and, retried, finds them."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # before its import: it logs a line per plugin
    from alembic import command
    from alembic.config import Config

    for attempt in range(3):
        try:
            with engine.begin() as connection:
                config = Config()
                config.set_main_option("script_location", str(MIGRATIONS))
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
            return
        except DBAPIError as exc:
            if attempt == 2 or isinstance(exc, OperationalError):
                raise
            logger.info("schema migration raced another process (%s); retrying", type(exc.orig).__name__)


@contextlib.contextmanager
def errors_of(url: str, doing: str) -> Iterator[None]:
    """SQLAlchemy's errors as ours: unreachable or gone -> outage (exit 3), anything else -> a bug surfaced
    with a one-line message that names the database without its password."""
    try:
        yield
    except OperationalError as exc:
        reason = first_line(exc.orig) if exc.orig is not None else type(exc).__name__
        raise ServiceUnavailable(
            f"results database {masked(url)} unavailable while {doing}: {_without_url(reason, url)}; "
            "retry when it is up"
        ) from None
    except SQLAlchemyError as exc:
        raise RuntimeError(f"results database {masked(url)} failed while {doing}: {type(exc).__name__}") from None


def _without_url(message: str, url: str) -> str:
    """A driver's message without the URL's secrets, in any of their forms, nor any URL's."""
    return Redactor(url_secrets(url))(message)
