"""Every option of the program, each declared once: `Annotated[..., typer.Option(envvar=..., rich_help_panel=...)]`.
The CLI offers them; the webhook service reads the same declarations to name the variables it forwards to the
jobs it submits (so it sits below both, and imports nothing of either).

Which command offers which is `evaluator.cli.option_sets`. A number option's bounds are those of its EvalConfig
field (`bounds`): every int and float option has a minimum and a maximum, so typer refuses a huge, negative,
infinite or nan value while parsing (one usage line, exit 2) before it could overflow anywhere. The panels group
the options in `--help`; an option without one is the command's own.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from evaluator.config import Device, EvalConfig, Execution, RatingSystem, Seating

SELECTION, SUITE, WORKERS = "Selection", "Suite & episodes", "Workers & cluster"
STORAGE, WANDB = "Storage & outputs", "W&B"
PANELS = (SELECTION, SUITE, WORKERS, STORAGE, WANDB)
"""The `--help` panels of the shared options, in their order."""


def bounds(field: str, **own: float) -> dict[str, Any]:
    """`min=`/`max=` of an option from the bounds of EvalConfig's `field` (`ge`/`gt` -> min, `le`/`lt` -> max;
    typer's min is inclusive, so a `gt` bound's own value passes the parser and is refused by EvalConfig), or
    `own` where the option sets one itself."""
    found: dict[str, Any] = {"min": None, "max": None}
    for constraint in EvalConfig.model_fields[field].metadata:
        for attribute, bound in (("ge", "min"), ("gt", "min"), ("le", "max"), ("lt", "max")):
            if getattr(constraint, attribute, None) is not None:
                found[bound] = getattr(constraint, attribute)
    return found | own


def envvar(option: Any) -> str:
    """The environment variable of an `Annotated[..., typer.Option(envvar=...)]` declaration."""
    return next(extra.envvar for extra in typing.get_args(option)[1:] if getattr(extra, "envvar", None))


# -- selection: which policies, which checkpoints ---------------------------------------------------------------
PolicyUris = Annotated[
    list[str] | None,
    typer.Option(
        "--policy-uri",
        "-p",
        envvar="POLICY_URI",
        rich_help_panel=SELECTION,
        help="Policy to evaluate (repeat, or comma-separate): a path or file:// URI to a checkpoint file or directory "
        "of checkpoints, s3://bucket/key or s3://bucket/prefix/, wandb://entity/project/name:version, "
        "wandb://run/<name>, or builtin://<name> (random, noop, navigator, ...).",
    ),
]
Checkpoints = Annotated[
    str,
    typer.Option(
        envvar="CHECKPOINTS",
        rich_help_panel=SELECTION,
        help="Which checkpoints: latest, all, last:N, every:K or versions v3,v7.",
    ),
]
SweepCheckpoints = Annotated[
    str,
    typer.Option(
        envvar="SWEEP_CHECKPOINTS",
        rich_help_panel=SELECTION,
        help="Which checkpoints of each policy to consider (as `run`).",
    ),
]
Baseline = Annotated[
    str | None,
    typer.Option(
        envvar="BASELINE",
        rich_help_panel=SELECTION,
        help="A policy URI every checkpoint is compared with, episode by episode (evaluated in the same run).",
    ),
]
Normalize = Annotated[
    str | None,
    typer.Option(
        envvar="NORMALIZE",
        rich_help_panel=SELECTION,
        help="LOW,HIGH: two policy URIs; each environment's score maps to 0 at LOW's and 1 at HIGH's "
        "(e.g. builtin://random,builtin://navigator).",
    ),
]
TrustRemoteCode = Annotated[
    bool,
    typer.Option(
        rich_help_panel=SELECTION,
        help="Run code shipped inside mettagrid submission archives. Only for archives you trust.",
    ),
]

# -- suite & episodes ------------------------------------------------------------------------------------------
Suite = Annotated[
    str, typer.Option(envvar="SIMULATION_SUITE", help="Suite name or suite file (.yaml/.json).", rich_help_panel=SUITE)
]
EnvGlob = Annotated[
    str | None, typer.Option(help="Only environments matching this glob, e.g. 'maze*'.", rich_help_panel=SUITE)
]
Episodes = Annotated[
    int | None,
    typer.Option(
        envvar="EPISODES",
        help="Episodes per environment [default: the suite's].",
        rich_help_panel=SUITE,
        **bounds("episodes"),
    ),
]
Seed = Annotated[int | None, typer.Option(help="Override the suite's seed.", rich_help_panel=SUITE, **bounds("seed"))]
TargetCi = Annotated[
    float | None,
    typer.Option(
        envvar="TARGET_CI",
        help="Adaptive episodes: add episodes (doubling) to environments whose 95% CI half-width is above this.",
        rich_help_panel=SUITE,
        **bounds("target_ci"),
    ),
]
MinEpisodes = Annotated[
    int,
    typer.Option(
        help="With --target-ci: episodes per environment in the first round.",
        rich_help_panel=SUITE,
        **bounds("min_episodes"),
    ),
]
MaxEpisodes = Annotated[
    int,
    typer.Option(
        help="With --target-ci: episodes per environment at most.", rich_help_panel=SUITE, **bounds("max_episodes")
    ),
]
Npcs = Annotated[
    list[str] | None,
    typer.Option(
        "--npc",
        envvar="NPC_POLICY_URI",
        rich_help_panel=SUITE,
        help="Co-player (repeat; NPC_POLICY_URI comma-separates): URI[,proportion=N] as cogames takes it. Co-players "
        "play some agents of every episode of each environment of 2 or more agents, beside the evaluated checkpoint; "
        "its score is then its own agents' mean reward.",
    ),
]
CandidateShare = Annotated[
    float | None,
    typer.Option(
        envvar="CANDIDATE_SHARE",
        help="With --npc: the evaluated checkpoint's share of each episode's agents (at least one) "
        "[default: proportion 1 beside the co-players'].",
        rich_help_panel=SUITE,
        **bounds("candidate_share"),
    ),
]
CrossPlay = Annotated[
    bool,
    typer.Option(
        "--cross-play/--no-cross-play",
        envvar="CROSS_PLAY",
        help="The run's checkpoints and --npc co-players play each other on the suite's multi-agent environments: "
        "the report's ratings and cross-play matrix.",
        rich_help_panel=SUITE,
    ),
]
VorPool = Annotated[
    list[str] | None,
    typer.Option(
        "--vor",
        envvar="VOR_POOL",
        rich_help_panel=SUITE,
        help="Value over replacement (cogames' pickup) against this pool of policy URIs (repeat, or comma-separate): "
        "each checkpoint plays n, n/2 and 1 of a multi-agent environment's n agents beside the pool, and the pool "
        "plays alone, on the same seeds.",
    ),
]
RatingOption = Annotated[
    RatingSystem,
    typer.Option(
        "--rating",
        envvar="RATING",
        help="What the ratings of mixed episodes are ranked by: openskill (Plackett-Luce ordinal, mu - 3 sigma) or "
        "elo (elote's Elo over every pairing in an episode). Both are reported.",
        rich_help_panel=SUITE,
    ),
]
SeatingOption = Annotated[
    Seating,
    typer.Option(
        "--seating",
        envvar="SEATING",
        help="With --cross-play: round_robin (every pair at equal shares) or all (every policy in each episode).",
        rich_help_panel=SUITE,
    ),
]

# -- workers & cluster -----------------------------------------------------------------------------------------
DeviceOption = Annotated[
    Device, typer.Option("--device", envvar="DEVICE", help="Where policies run.", rich_help_panel=WORKERS)
]
NumWorkers = Annotated[
    int | None,
    typer.Option(
        envvar="NUM_WORKERS",
        help="Ray actors [default: fill the cluster].",
        rich_help_panel=WORKERS,
        **bounds("num_workers"),
    ),
]
CpusPerWorker = Annotated[
    float | None,
    typer.Option(
        help="CPUs per actor (also its torch threads) [default: 1].",
        rich_help_panel=WORKERS,
        **bounds("cpus_per_worker"),
    ),
]
GpusPerWorker = Annotated[
    float | None,
    typer.Option(
        help="GPUs per actor with --device cuda (fractions share) [default: fill each GPU node with one actor per "
        "--cpus-per-worker CPUs sharing its GPUs; 1 with --num-workers].",
        rich_help_panel=WORKERS,
        **bounds("gpus_per_worker"),
    ),
]
ShardSize = Annotated[
    int,
    typer.Option(
        help="Episodes per work unit (at most; split evenly).", rich_help_panel=WORKERS, **bounds("shard_size")
    ),
]
PolicyCacheSize = Annotated[
    int,
    typer.Option(
        "--policy-cache-size",
        "--cache-size",
        help="Loaded policies each actor keeps (LRU).",
        rich_help_panel=WORKERS,
        **bounds("policy_cache_size"),
    ),
]
MaxResidentCheckpoints = Annotated[
    int | None,
    typer.Option(
        envvar="MAX_RESIDENT_CHECKPOINTS",
        help="Checkpoints held in the driver's memory at once [default: 16, or twice the workers].",
        rich_help_panel=WORKERS,
        **bounds("max_resident_checkpoints"),
    ),
]
UnitTimeout = Annotated[
    float | None,
    typer.Option(
        envvar="UNIT_TIMEOUT",
        help="Seconds a work unit may run before it fails (hung policy or env).",
        rich_help_panel=WORKERS,
        **bounds("unit_timeout"),
    ),
]
MaxAttempts = Annotated[
    int,
    typer.Option(
        help="Tries per work unit (worker deaths) before its checkpoint fails.",
        rich_help_panel=WORKERS,
        **bounds("max_attempts"),
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        envvar="RAY_ADDRESS",
        help="Ray cluster to attach to [default: start locally]; for `serve`, its dashboard (job API), e.g. "
        "http://policy-evaluator-head-svc:8265.",
        rich_help_panel=WORKERS,
    ),
]
ExecutionOption = Annotated[
    Execution,
    typer.Option(
        envvar="EXECUTION",
        help="Where episodes run: auto (small plans in this process when no --ray-address), ray, in-process.",
        rich_help_panel=WORKERS,
    ),
]
ScaleUpTimeout = Annotated[
    float,
    typer.Option(
        envvar="SCALE_UP_TIMEOUT",
        help="Seconds to wait for the autoscaler to add a GPU node (--device cuda on a cluster with none).",
        rich_help_panel=WORKERS,
        **bounds("scale_up_timeout", min=1),
    ),
]
Prices = Annotated[
    Path | None,
    typer.Option(
        "--prices",
        envvar="PRICES_FILE",
        help="Price table (YAML, USD per node-hour by node type) of the report's cost estimate "
        "[default: the packaged AWS on-demand list prices].",
        rich_help_panel=WORKERS,
    ),
]

# -- storage & outputs -----------------------------------------------------------------------------------------
DataDir = Annotated[
    Path,
    typer.Option(
        envvar="DATA_DIR",
        help="Where runs, the results store and the download cache are written.",
        rich_help_panel=STORAGE,
    ),
]
RunName = Annotated[
    str,
    typer.Option(
        envvar="RUN_NAME", help="Run directory name [default: eval_/sweep_<UTC time>].", rich_help_panel=STORAGE
    ),
]
OutputUri = Annotated[
    str | None,
    typer.Option(
        envvar="OUTPUT_URI",
        help="Also deliver the results there: a path, file://, s3://bucket/prefix or wandb://entity/project[/run_id].",
        rich_help_panel=STORAGE,
    ),
]
Replays = Annotated[
    bool, typer.Option(help="Record episode 0 of each checkpoint and environment.", rich_help_panel=STORAGE)
]
ResultsDb = Annotated[
    str | None,
    typer.Option(
        "--results-db",
        envvar="RESULTS_DB_URL",
        show_default=False,
        help="Results database URL: postgresql://user:password@host/db on clusters [default: sqlite in DATA_DIR].",
        rich_help_panel=STORAGE,
    ),
]
ReuseResults = Annotated[
    bool,
    typer.Option(
        "--reuse-results/--no-reuse-results",
        "--cache/--no-cache",
        help="Reuse episodes already in the results database (--results-db).",
        rich_help_panel=STORAGE,
    ),
]

# -- W&B ---------------------------------------------------------------------------------------------------------
WandbEntity = Annotated[
    str, typer.Option(envvar="WANDB_ENTITY", help="W&B entity for wandb://run/.", rich_help_panel=WANDB)
]
WandbProject = Annotated[
    str, typer.Option(envvar="WANDB_PROJECT", help="W&B project for wandb://run/.", rich_help_panel=WANDB)
]
WandbApiKey = Annotated[
    str | None,
    typer.Option(
        envvar="WANDB_API_KEY",
        show_default=False,
        help="W&B API key (needed for wandb:// only; `serve` pins deliveries naming an alias with it).",
        rich_help_panel=WANDB,
    ),
]
