"""`policy-evaluator view` started as a user starts it (its own process, a free port) and stopped by its process
group when the test is done."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


@dataclass
class RunningView:
    url: str
    """The base URL it printed, without the trailing slash."""
    banner: str
    """Its first line (`serving DATA_DIR at URL ...`)."""
    output: str = ""
    """What it printed after the banner, filled in once it has stopped."""


@contextlib.contextmanager
def running_view(data_dir: Path, *options: str) -> Iterator[RunningView]:
    process = subprocess.Popen(
        [str(VENV_BIN / "policy-evaluator"), "view", str(data_dir), "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    view = None
    try:
        banner = process.stdout.readline()
        assert banner.startswith("serving "), banner
        view = RunningView(url=banner.split(" at ", 1)[1].split(" ", 1)[0].rstrip("/"), banner=banner)
        yield view
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        rest = process.communicate(timeout=10)[0]
        if view is not None:
            view.output = rest
