"""The built image, run. These tests need a container engine and the image: they carry the `image` marker,
which `make test` leaves out and `make test-image` selects after building the image (README, "Container image").

Without the image (a plain `pytest` on a machine that never built it) they are skipped, unless IMAGE_TESTS is
`required` (`make test-image` sets it): then a missing engine or image fails them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "image" / "containers.conf"


def load_image_module(name: str):
    """image/<name>.py (build.py: what `make image` runs; stage.py: the build stages' helper), imported under a
    name of its own (`build` is also a PyPI package)."""
    spec = importlib.util.spec_from_file_location(f"image_{name}", ROOT / "image" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


image_build = load_image_module("build")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "image: builds or runs the container image (make test-image, not make test)")


@dataclass(frozen=True)
class Engine:
    """The engine `make image` used: docker where a daemon answers, else podman (buildah's image storage),
    configured by image/containers.conf (runc, cgroupfs, ulimits this kind of machine allows)."""

    tool: str
    tag: str

    @property
    def env(self) -> dict[str, str]:
        return image_build.engine_env()

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([self.tool, *args], capture_output=True, text=True, timeout=timeout, env=self.env)

    def container(
        self, options: list[str], command: list[str] = (), image: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        """`run --rm <options> <image (default: the one under test)> <command>`."""
        return self.run("run", "--rm", *options, image or self.tag, *command, timeout=timeout)

    def inspect(self, image: str) -> dict:
        done = self.run("image", "inspect", image)
        assert done.returncode == 0, done.stderr
        (found,) = json.loads(done.stdout)
        return found

    def has(self, image: str) -> bool:
        return self.run("image", "inspect", image).returncode == 0


@pytest.fixture(scope="session")
def engine() -> Engine:
    tool = "docker" if image_build.docker_answers() else "podman"
    found = Engine(tool, image_build.default_tag("production", "cpu"))
    if not shutil.which(tool):
        problem = f"{tool} is not installed (make image-tools)"
    elif not found.has(found.tag):
        problem = f"{found.tag} is not built (make image)"
    elif tool == "podman" and os.geteuid() != 0:
        problem = "podman runs these as root only (the data folder is handed to uid 1000 with chown)"
    else:
        return found
    if os.environ.get("IMAGE_TESTS") == "required":
        pytest.fail(problem)
    pytest.skip(problem)
