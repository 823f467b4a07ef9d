"""A throwaway PostgreSQL server for tests: its own data directory, a random superuser password, loopback TCP
only, started and stopped by process id, so the suite needs no database set up beforehand and leaves none behind.

PostgreSQL refuses to run as root; when the tests run as root, the server runs as the `postgres` OS user (the
child process drops privileges itself, `subprocess` `user=`/`group=`), so the pid we hold is the postmaster's own.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL

SUPERUSER = "pytest"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


def bindir() -> Path:
    """Where `initdb` and `postgres` live: Debian keeps them off PATH, `pg_config --bindir` knows."""
    if shutil.which("pg_config") is None:
        raise RuntimeError("pg_config not found: install PostgreSQL 15 (Debian: postgresql-15) to run these tests")
    out = subprocess.run(["pg_config", "--bindir"], check=True, capture_output=True, text=True).stdout
    return Path(out.strip())


def free_port() -> int:
    """A loopback port nothing listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PortInUse(RuntimeError):
    """The postmaster exited because its port was taken between free_port() and its bind."""


class PostgresServer:
    """One postmaster in a temp directory. `start()` returns once it accepts connections; `stop()` ends it by
    pid and removes the directory."""

    def __init__(self) -> None:
        self.bin = bindir()
        self.password = secrets.token_hex(16)
        self.user = SUPERUSER
        self.port = 0
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root, but there is no `postgres` OS user to run the server as") from None
            self._run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        self.root = Path(tempfile.mkdtemp(prefix="pytest-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"

    def _own(self, path: Path) -> None:
        if self._run_as:
            os.chown(path, self._run_as["user"], self._run_as["group"])

    def _env(self) -> dict[str, str]:
        # Nothing from the caller's PG* variables or locale may change what initdb/postgres do.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_", "LANG"))}
        return {**env, "LC_ALL": "C"}

    def start(self) -> PostgresServer:
        self._own(self.root)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._own(pwfile)
        try:
            subprocess.run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "--auth=scram-sha-256",
                    f"--username={self.user}",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                cwd=self.root,
                env=self._env(),
                **self._run_as,
            )
        except subprocess.CalledProcessError as error:
            raise RuntimeError(f"initdb failed:\n{error.stdout.decode()}\n{error.stderr.decode()}") from error
        finally:
            pwfile.unlink(missing_ok=True)
        # free_port() can race with another process taking the port first: then postgres exits at once, so retry.
        for attempt in range(3):
            self._launch(free_port())
            try:
                self._wait_ready()
                return self
            except PortInUse:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _launch(self, port: int) -> None:
        self.port = port
        args = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        for setting in (
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={self.root}",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
        ):
            args += ["-c", setting]
        with open(self.log, "wb") as log:
            # A session of its own: a Ctrl-C in the terminal reaches pytest, which then stops us in order.
            self._proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                env=self._env(),
                start_new_session=True,
                **self._run_as,
            )
        self.pid = self._proc.pid

    def _conninfo(self, database: str = "postgres") -> str:
        return make_conninfo(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database,
            connect_timeout=2,
            sslmode="disable",
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                if "could not create any TCP/IP sockets" in self.log_tail():
                    raise PortInUse(f"port {self.port} taken:\n{self.log_tail()}")
                raise RuntimeError(f"postgres exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with psycopg.connect(self._conninfo()) as conn:
                    conn.execute("select 1")
                return
            except psycopg.OperationalError as error:
                last = error
                time.sleep(0.05)
        raise RuntimeError(
            f"postgres not accepting connections after {START_TIMEOUT_S:.0f}s ({last}):\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no server log)"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3 driver) for `database` on this server, password included."""
        url = URL.create(
            "postgresql+psycopg",
            username=self.user,
            password=self.password,
            host="127.0.0.1",
            port=self.port,
            database=database,
        )
        return url.render_as_string(hide_password=False)

    def create_database(self, name: str) -> str:
        """CREATE DATABASE (outside a transaction, as PostgreSQL requires); returns its URL."""
        with psycopg.connect(self._conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of our postmaster by pid, SIGKILL if it hangs; then remove the directory."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
