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


@pytest.fixture
def checkpoint_dir(tmp_path: Path) -> Path:
    """A directory of two small state-dict checkpoints, named so natural sort differs from lexical sort."""
    directory = tmp_path / "run"
    directory.mkdir()
    for seed, name in ((1, "ckpt_2.pt"), (2, "ckpt_10.pt")):
        model, kwargs = tiny_model(seed)
        (directory / name).write_bytes(state_dict_bytes(model, kwargs))
    return directory
