"""A real Ray head for one test module: `ray start --head --block` in its own process session, on free
ports, with its own temp dir and its own auth token, stopped by the ids of the processes in that session.

Never `ray stop` (it ends every Ray process of the user, other tests' instances included) and never a
kill by process name: only the processes whose session id is the one `ray start` opened are signalled.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAX_TEMP_DIR_CHARS = 40
"""107 bytes for a socket path, minus `/session_2026-01-01_00-00-00_000000_1234567/sockets/plasma_store`."""
VENV_BIN = Path(sys.executable).parent
"""The test interpreter's bin directory: `ray`, `python` and `policy-evaluator` of this install."""


def free_ports(count: int) -> list[int]:
    """`count` distinct ports the OS says are free now (bound to port 0, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class RayHead:
    """One head node. `env` is what every `ray` CLI call against it needs (the token, our venv first)."""

    temp_dir: Path
    num_cpus: int = 2
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    process: subprocess.Popen | None = field(default=None, init=False)
    ports: dict[str, int] = field(default_factory=dict, init=False)
    _alias: Path | None = field(default=None, init=False, repr=False)

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.token,
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            RAY_USAGE_STATS_ENABLED="0",
        )
        return env

    @property
    def process_env(self) -> dict[str, str]:
        """The environment of the `ray start` process itself (subclasses add what only the head needs)."""
        return self.env

    def extra_start_args(self) -> list[str]:
        """More `ray start` arguments, asked once the ports are chosen (subclasses: an autoscaling config)."""
        return []

    def start(self, timeout_s: float = 60.0) -> None:
        names = ("gcs", "dashboard", "client", "node_manager", "object_manager", "agent_http", "agent_grpc")
        self.ports = dict(zip(names + ("runtime_env", "metrics"), free_ports(len(names) + 2), strict=True))
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(VENV_BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--disable-usage-stats",
            *self.extra_start_args(),
            f"--temp-dir={self._short_temp_dir()}",
            f"--num-cpus={self.num_cpus}",
            "--num-gpus=0",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--port={self.ports['gcs']}",
            f"--dashboard-port={self.ports['dashboard']}",
            f"--ray-client-server-port={self.ports['client']}",
            f"--node-manager-port={self.ports['node_manager']}",
            f"--object-manager-port={self.ports['object_manager']}",
            f"--dashboard-agent-listen-port={self.ports['agent_http']}",
            f"--dashboard-agent-grpc-port={self.ports['agent_grpc']}",
            f"--runtime-env-agent-port={self.ports['runtime_env']}",
            f"--metrics-export-port={self.ports['metrics']}",
            # 0/0: workers bind OS-chosen ports instead of the shared default range 10002-19999.
            "--min-worker-port=0",
            "--max-worker-port=0",
        ]
        log = (self.temp_dir / "ray-start.log").open("wb")
        # Its own session: every daemon it forks (gcs_server, raylet, dashboard, workers) carries this
        # session id, which is how stop() finds exactly these processes and no others.
        self.process = subprocess.Popen(
            command, env=self.process_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self._wait_until_jobs_api_answers(timeout_s)

    def _short_temp_dir(self) -> Path:
        """Ray puts AF_UNIX sockets under <temp-dir>/session_<date>_<pid>/sockets/ and refuses paths over
        107 bytes; pytest's tmp_path is often longer. Then Ray gets a short symlink to our dir (removed by
        stop()), so the files still live under tmp_path."""
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        if len(str(self.temp_dir)) <= MAX_TEMP_DIR_CHARS:
            return self.temp_dir
        self._alias = Path(tempfile.mkdtemp(prefix="rh"))
        self._alias.rmdir()
        self._alias.symlink_to(self.temp_dir, target_is_directory=True)
        return self._alias

    def _wait_until_jobs_api_answers(self, timeout_s: float) -> None:
        """The dashboard serves job submission; ready when GET /api/jobs/ answers 200 with our token."""
        deadline = time.monotonic() + timeout_s
        request = urllib.request.Request(
            f"{self.dashboard_url}/api/jobs/", headers={"Authorization": f"Bearer {self.token}"}
        )
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.process.returncode}:\n{self.log_tail()}")
            with (
                contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
                urllib.request.urlopen(request, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.25)
        raise TimeoutError(f"the Ray dashboard did not answer within {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        path = self.temp_dir / "ray-start.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def session_pids(self) -> list[int]:
        """Every live process in the session `ray start` opened (its session id is its own pid), from /proc;
        zombies (exited, waiting to be reaped by whoever adopted them) are not counted."""
        if self.process is None:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
                if state != "Z" and os.getsid(int(entry.name)) == self.process.pid:
                    found.append(int(entry.name))
        return found

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to `ray start --block` (it stops its own daemons), then SIGTERM and at last SIGKILL to
        whatever of this session is left. Only processes of this session are ever signalled."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace_s)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.session_pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline:
                time.sleep(0.1)
                pids = self.session_pids()
            if not pids:
                break
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)
        if self._alias is not None:
            self._alias.unlink(missing_ok=True)

    def ray(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
        """Ray's own CLI against this head (`ray job submit ...`), with this head's token."""
        return subprocess.run(
            [str(VENV_BIN / "ray"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )


@contextlib.contextmanager
def running_head(temp_dir: Path, num_cpus: int = 2) -> Iterator[RayHead]:
    """A started head for the body of the `with`; stopped after, and no process of its session may survive."""
    head = RayHead(temp_dir=temp_dir, num_cpus=num_cpus)
    try:
        head.start()
        yield head
    finally:
        head.stop()
    assert head.session_pids() == [], "a process of the head's session survived stop()"
