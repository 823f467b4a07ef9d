"""Options shared by `run` and `sweep`: declared once, each with its environment variable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evaluator.config import Device

MARKER_START, MARKER_END = "===JSON_OUTPUT_START===", "===JSON_OUTPUT_END==="
"""The seed's docker-entrypoint markers: the JSON can be cut out of Ray job logs between them."""

Suite = Annotated[str, typer.Option(envvar="SIMULATION_SUITE", help="Suite name or suite file (.yaml/.json).")]
DeviceOption = Annotated[Device, typer.Option("--device", envvar="DEVICE", help="Where policies run.")]
DataDir = Annotated[
    Path, typer.Option(envvar="DATA_DIR", help="Where runs, the results cache and checkpoint downloads are written.")
]
RunName = Annotated[str, typer.Option(envvar="RUN_NAME", help="Run directory name [default: eval_/sweep_<UTC time>].")]
OutputUri = Annotated[
    str | None,
    typer.Option(
        envvar="OUTPUT_URI",
        help="Also deliver the results there: a path, file://, s3://bucket/prefix or wandb://entity/project[/run_id].",
    ),
]
Episodes = Annotated[
    int | None, typer.Option(envvar="EPISODES", help="Episodes per environment [default: the suite's].")
]
NumWorkers = Annotated[int | None, typer.Option(envvar="NUM_WORKERS", help="Ray actors [default: fill the cluster].")]
UnitTimeout = Annotated[
    float | None,
    typer.Option(envvar="UNIT_TIMEOUT", help="Seconds a work unit may run before it fails (hung policy or env)."),
]
Replays = Annotated[bool, typer.Option(help="Record episode 0 of each checkpoint and environment.")]
RayAddress = Annotated[
    str | None, typer.Option(envvar="RAY_ADDRESS", help="Ray cluster to attach to [default: start locally].")
]
WandbEntity = Annotated[str, typer.Option(envvar="WANDB_ENTITY", help="W&B entity for wandb://run/.")]
WandbProject = Annotated[str, typer.Option(envvar="WANDB_PROJECT", help="W&B project for wandb://run/.")]
WandbApiKey = Annotated[
    str | None,
    typer.Option(envvar="WANDB_API_KEY", show_default=False, help="W&B API key (needed for wandb:// only)."),
]
Markers = Annotated[
    bool, typer.Option(help=f"Wrap the JSON in {MARKER_START} / {MARKER_END} lines (for Ray job logs).")
]
ShowProgress = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")]
