"""Shared fixtures. One Ray instance per pytest session (started only if a test asks for it), with its
own auth token so no test depends on what a previous run left in the home directory."""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sim.models import TokenGridMLP

pytest_plugins = ["tests.support.s3", "tests.support.fake_wandb"]
"""Fixtures `s3` (moto on loopback) and `fake_wandb` (our fake W&B backend) for every test module."""

SMOKE_INIT = {"num_tags": 5, "num_actions": 5, "tag_feature_id": 6, "obs_height": 13, "obs_width": 13, "hidden": 16}
"""TokenGridMLP arguments fitting the navigation environments (tags agent, generator_red, hub, mine_red, wall)."""


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def state_dict_bytes(model: torch.nn.Module, init_kwargs: dict, class_path: str = "sim.models.TokenGridMLP") -> bytes:
    buffer = io.BytesIO()
    torch.save(
        {"format_version": 1, "class_path": class_path, "init_kwargs": init_kwargs, "state_dict": model.state_dict()},
        buffer,
    )
    return buffer.getvalue()


def tiny_model(seed: int, **overrides) -> tuple[TokenGridMLP, dict]:
    torch.manual_seed(seed)
    kwargs = {**SMOKE_INIT, **overrides}
    return TokenGridMLP(**kwargs), kwargs


def large_checkpoints(directory: Path, count: int) -> tuple[Path, float]:
    """`count` state-dict checkpoints of ~7.6 MB each in `directory` (memory-bound tests); (directory, MB each)."""
    directory.mkdir()
    for index in range(count):
        model, kwargs = tiny_model(index, hidden=1024)
        (directory / f"ckpt_{index}.pt").write_bytes(state_dict_bytes(model, kwargs))
    size_mb = (directory / "ckpt_0.pt").stat().st_size / 2**20
    assert size_mb > 7
    return directory, size_mb


@pytest.fixture
def checkpoint_dir(tmp_path: Path) -> Path:
    """A directory of two small state-dict checkpoints, named so natural sort differs from lexical sort."""
    directory = tmp_path / "run"
    directory.mkdir()
    for seed, name in ((1, "ckpt_2.pt"), (2, "ckpt_10.pt")):
        model, kwargs = tiny_model(seed)
        (directory / name).write_bytes(state_dict_bytes(model, kwargs))
    return directory


BUNDLED_POLICY = """
import os
from mettagrid.policy.policy import AgentPolicy, MultiAgentPolicy
from mettagrid.simulator import Action


class _Agent(AgentPolicy):
    def step(self, obs):
        {step}
        return Action(name="noop")


class BundledPolicy(MultiAgentPolicy):
    def agent_policy(self, agent_id):
        return _Agent(self.policy_env_info)
"""


def submission_zip(step: str = "pass", setup_script: str | None = None) -> bytes:
    """A mettagrid submission archive shipping its own policy module (`bundled_pkg.policy.BundledPolicy`);
    `step` is a Python statement run at every agent step."""
    import zipfile

    spec = {"class_path": "bundled_pkg.policy.BundledPolicy"}
    if setup_script is not None:
        spec["setup_script"] = "setup_policy.py"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("policy_spec.json", __import__("json").dumps(spec))
        archive.writestr("bundled_pkg/__init__.py", "")
        archive.writestr("bundled_pkg/policy.py", BUNDLED_POLICY.replace("{step}", step))
        if setup_script is not None:
            archive.writestr("setup_policy.py", setup_script)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL 15 server for the whole session (started on first use, stopped by pid at the end)."""
    from tests.support.postgres import PostgresServer

    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def results_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty results database per test, once on SQLite and once on PostgreSQL: a SQLAlchemy URL."""
    import uuid

    from evaluator.store.database import close_database

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'results.db'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database(f"t_{uuid.uuid4().hex[:12]}")
    yield url
    close_database(url)  # each test's pool closed, so the server's connection limit is never reached


@pytest.fixture(scope="module")
def chromium():
    """The system Chromium, launched through Playwright (tests/support/browser.py); skipped only when no
    Chromium is installed (the Makefile installs Debian's `chromium`). Once per module, not per session:
    while Playwright's sync API is started it keeps an asyncio loop marked running on the main thread, so
    `asyncio.run()` in any later module (test_service.py) would raise."""
    from tests.support.browser import chromium_path, launch_chromium

    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium); Playwright cannot download one here")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, executable)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium):
    """A fresh watched page (console errors, page errors and outbound requests recorded; outbound requests
    aborted unless `page.allow_origin(url)`), saving screenshots under TEST_ARTIFACTS_DIR."""
    from tests.support.browser import browser_page as watched_page

    with watched_page(chromium) as page:
        yield page
