"""The CLI's options, each declared once with its environment variable, and the decorator that offers every
evaluation option to `run`, `sweep` and `entrypoint` alike.

An evaluation option is a field of `EvalConfig`: its default is that field's default and, for a number, its
bounds are that field's bounds (`bounded_like`), so the CLI and the config cannot drift apart. Every int and
float option has a minimum and a maximum: typer refuses a huge, negative, infinite or nan value while parsing
(one usage line, exit 2), before it could overflow anywhere. The options that differ by command (which
policies, which checkpoints, markers, the progress bar) are declared here too and listed in each command's own
signature.
"""

from __future__ import annotations

import copy
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.models import OptionInfo

from evaluator.config import MAX_SECONDS, Device, EvalConfig, Execution
from evaluator.markers import MARKER_END, MARKER_START


def bounded_like(field: str, annotation: Any) -> Any:
    """`annotation` (an `Annotated[number, typer.Option(...)]`) with the bounds of EvalConfig's `field` as the
    option's min and max (`ge`/`gt` -> min, `le`/`lt` -> max; typer's min is inclusive, so a `gt` bound's own
    value passes the parser and is refused by EvalConfig). A min or max the option sets itself is kept."""
    bounds: dict[str, Any] = {}
    for constraint in EvalConfig.model_fields[field].metadata:
        for attribute, bound in (("ge", "min"), ("gt", "min"), ("le", "max"), ("lt", "max")):
            if getattr(constraint, attribute, None) is not None:
                bounds[bound] = getattr(constraint, attribute)
    kind, *extras = typing.get_args(annotation)
    options = []
    for extra in extras:
        if isinstance(extra, OptionInfo):
            extra = copy.copy(extra)
            extra.min = bounds.get("min") if extra.min is None else extra.min
            extra.max = bounds.get("max") if extra.max is None else extra.max
        options.append(extra)
    return Annotated[(kind, *options)]  # type: ignore[valid-type]


Suite = Annotated[str, typer.Option(envvar="SIMULATION_SUITE", help="Suite name or suite file (.yaml/.json).")]
DeviceOption = Annotated[Device, typer.Option("--device", envvar="DEVICE", help="Where policies run.")]
DataDir = Annotated[
    Path, typer.Option(envvar="DATA_DIR", help="Where runs, the results store and the download cache are written.")
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
Seed = Annotated[int | None, typer.Option(help="Override the suite's seed.")]
EnvGlob = Annotated[str | None, typer.Option(help="Only environments matching this glob, e.g. 'maze*'.")]
NumWorkers = Annotated[int | None, typer.Option(envvar="NUM_WORKERS", help="Ray actors [default: fill the cluster].")]
CpusPerWorker = Annotated[float | None, typer.Option(help="CPUs per actor (also its torch threads) [default: 1].")]
GpusPerWorker = Annotated[
    float | None,
    typer.Option(
        help="GPUs per actor with --device cuda (fractions share) [default: fill each GPU node with one actor per "
        "--cpus-per-worker CPUs sharing its GPUs; 1 with --num-workers]."
    ),
]
ShardSize = Annotated[int, typer.Option(help="Episodes per work unit (at most; split evenly).")]
PolicyCacheSize = Annotated[
    int, typer.Option("--policy-cache-size", "--cache-size", help="Loaded policies each actor keeps (LRU).")
]
MaxResidentCheckpoints = Annotated[
    int | None,
    typer.Option(
        envvar="MAX_RESIDENT_CHECKPOINTS",
        help="Checkpoints held in the driver's memory at once [default: 16, or twice the workers].",
    ),
]
Replays = Annotated[bool, typer.Option(help="Record episode 0 of each checkpoint and environment.")]
UnitTimeout = Annotated[
    float | None,
    typer.Option(envvar="UNIT_TIMEOUT", help="Seconds a work unit may run before it fails (hung policy or env)."),
]
MaxAttempts = Annotated[int, typer.Option(help="Tries per work unit (worker deaths) before its checkpoint fails.")]
TrustRemoteCode = Annotated[
    bool, typer.Option(help="Run code shipped inside mettagrid submission archives. Only for archives you trust.")
]
ReuseResults = Annotated[
    bool,
    typer.Option(
        "--reuse-results/--no-reuse-results",
        "--cache/--no-cache",
        help="Reuse episodes already in the results database (--results-db).",
    ),
]
RayAddress = Annotated[
    str | None, typer.Option(envvar="RAY_ADDRESS", help="Ray cluster to attach to [default: start locally].")
]
ScaleUpTimeout = Annotated[
    float,
    typer.Option(
        envvar="SCALE_UP_TIMEOUT",
        min=1,
        help="Seconds to wait for the autoscaler to add a GPU node (--device cuda on a cluster with none).",
    ),
]
Prices = Annotated[
    Path | None,
    typer.Option(
        "--prices",
        envvar="PRICES_FILE",
        help="Price table (YAML, USD per node-hour by node type) of the report's cost estimate "
        "[default: the packaged AWS on-demand list prices].",
    ),
]
ExecutionOption = Annotated[
    Execution,
    typer.Option(
        envvar="EXECUTION",
        help="Where episodes run: auto (small plans in this process when no --ray-address), ray, in-process.",
    ),
]
WandbEntity = Annotated[str, typer.Option(envvar="WANDB_ENTITY", help="W&B entity for wandb://run/.")]
WandbProject = Annotated[str, typer.Option(envvar="WANDB_PROJECT", help="W&B project for wandb://run/.")]
Baseline = Annotated[
    str | None,
    typer.Option(
        envvar="BASELINE",
        help="A policy URI every checkpoint is compared with, episode by episode (evaluated in the same run).",
    ),
]
Normalize = Annotated[
    str | None,
    typer.Option(
        envvar="NORMALIZE",
        help="LOW,HIGH: two policy URIs; each environment's score maps to 0 at LOW's and 1 at HIGH's "
        "(e.g. builtin://random,builtin://navigator).",
    ),
]
TargetCi = Annotated[
    float | None,
    typer.Option(
        envvar="TARGET_CI",
        help="Adaptive episodes: add episodes (doubling) to environments whose 95% CI half-width is above this.",
    ),
]
MinEpisodes = Annotated[int, typer.Option(help="With --target-ci: episodes per environment in the first round.")]
MaxEpisodes = Annotated[int, typer.Option(help="With --target-ci: episodes per environment at most.")]
ResultsDb = Annotated[
    str | None,
    typer.Option(
        "--results-db",
        envvar="RESULTS_DB_URL",
        show_default=False,
        help="Results database URL: postgresql://user:password@host/db on clusters [default: sqlite in DATA_DIR].",
    ),
]
WandbApiKey = Annotated[
    str | None,
    typer.Option(envvar="WANDB_API_KEY", show_default=False, help="W&B API key (needed for wandb:// only)."),
]

POLICY_URI_FORMS = (
    "a path or file:// URI to a checkpoint file or directory of checkpoints, s3://bucket/key or "
    "s3://bucket/prefix/, wandb://entity/project/name:version, wandb://run/<name>, or builtin://<name> "
    "(random, noop, navigator, ...)"
)
PolicyUris = Annotated[
    list[str],
    typer.Option(
        "--policy-uri",
        "-p",
        envvar="POLICY_URI",
        help=f"Policy to evaluate (repeat, or comma-separate): {POLICY_URI_FORMS}.",
    ),
]
OptionalPolicyUris = Annotated[
    list[str] | None,
    typer.Option(
        "--policy-uri",
        "-p",
        envvar="POLICY_URI",
        help=f"Policy to evaluate (repeat, or comma-separate): {POLICY_URI_FORMS}.",
    ),
]
Checkpoints = Annotated[
    str,
    typer.Option(envvar="CHECKPOINTS", help="Which checkpoints: latest, all, last:N, every:K or versions v3,v7."),
]
SweepPolicyUris = Annotated[
    list[str] | None,
    typer.Option(
        "--policy-uri",
        "-p",
        envvar="POLICY_URI",
        help="Policy whose checkpoints to sweep (repeat, or comma-separate); same URIs as `run`.",
    ),
]
PoliciesFile = Annotated[
    Path | None,
    typer.Option(envvar="SWEEP_POLICIES_FILE", help="A file of policy URIs, one per line ('#' comments), added to -p."),
]
SweepCheckpoints = Annotated[
    str, typer.Option(envvar="SWEEP_CHECKPOINTS", help="Which checkpoints of each policy to consider (as `run`).")
]
LeaseTtl = Annotated[
    float,
    typer.Option(
        envvar="SWEEP_LEASE_TTL",
        min=0,
        max=MAX_SECONDS,
        help="Seconds after which an unrenewed lease is stale (renewed every third).",
    ),
]
WaitForLeases = Annotated[
    float,
    typer.Option(
        envvar="SWEEP_WAIT_FOR_LEASES",
        min=0,
        max=MAX_SECONDS,
        help="Seconds to wait for checkpoints another sweep is evaluating.",
    ),
]
IncludeCached = Annotated[
    bool,
    typer.Option(help="Also report checkpoints already in the results store (from the cache, nothing replayed)."),
]
Markers = Annotated[
    bool, typer.Option(help=f"Wrap the JSON in {MARKER_START} / {MARKER_END} lines (for Ray job logs).")
]
ShowProgress = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")]

# `serve`: the service's own settings, then the options it forwards into every job's runtime_env.
ServiceRayAddress = Annotated[
    str | None,
    typer.Option(
        envvar="RAY_ADDRESS", help="The Ray cluster's dashboard (job API), e.g. http://policy-evaluator-head-svc:8265."
    ),
]
WebhookSecret = Annotated[
    str | None,
    typer.Option(
        envvar="WEBHOOK_SECRET",
        show_default=False,
        help="Shared with W&B: the webhook's access token and/or signing secret (16+ characters).",
    ),
]
RayAuthToken = Annotated[
    str | None, typer.Option(envvar="RAY_AUTH_TOKEN", show_default=False, help="Ray's auth token for the job API.")
]
ServiceWandbApiKey = Annotated[
    str | None, typer.Option(envvar="WANDB_API_KEY", show_default=False, help="To pin deliveries naming an alias.")
]
ServiceHost = Annotated[str, typer.Option(envvar="SERVICE_HOST", help="Address to listen on.")]
ServicePort = Annotated[int, typer.Option(envvar="SERVICE_PORT", min=0, max=65535, help="Port to listen on.")]
JobEntrypoint = Annotated[
    str | None, typer.Option(envvar="JOB_ENTRYPOINT", help="The command of each job (default: a lease-aware sweep).")
]
PolicyUriTemplate = Annotated[
    str | None,
    typer.Option(
        envvar="POLICY_URI_TEMPLATE",
        help="POLICY_URI of each job from {entity} {project} {name} {version} (default: wandb://...).",
    ),
]
JobSuite = Annotated[str | None, typer.Option(envvar="SIMULATION_SUITE", help="Jobs' suite.")]
JobDevice = Annotated[Device | None, typer.Option(envvar="DEVICE", help="Jobs' device.")]
JobDataDir = Annotated[str | None, typer.Option(envvar="DATA_DIR", help="Jobs' DATA_DIR (on the head).")]
JobOutputUri = Annotated[
    str | None,
    typer.Option(envvar="OUTPUT_URI", help="Jobs deliver there; GET /jobs/{id} reads reports back from it."),
]
JobEpisodes = bounded_like(
    "episodes", Annotated[int | None, typer.Option(envvar="EPISODES", help="Jobs' episodes per env.")]
)
JobNumWorkers = bounded_like(
    "num_workers", Annotated[int | None, typer.Option(envvar="NUM_WORKERS", help="Jobs' Ray actors.")]
)
JobUnitTimeout = bounded_like(
    "unit_timeout", Annotated[float | None, typer.Option(envvar="UNIT_TIMEOUT", help="Jobs' unit timeout.")]
)
JobWandbEntity = Annotated[str | None, typer.Option(envvar="WANDB_ENTITY", help="Jobs' W&B entity.")]
JobWandbProject = Annotated[str | None, typer.Option(envvar="WANDB_PROJECT", help="Jobs' W&B project.")]

_EVALUATION_TYPES: dict[str, Any] = {
    "suite": Suite,
    "device": DeviceOption,
    "data_dir": DataDir,
    "run_name": RunName,
    "output_uri": OutputUri,
    "episodes": Episodes,
    "seed": Seed,
    "env": EnvGlob,
    "num_workers": NumWorkers,
    "cpus_per_worker": CpusPerWorker,
    "gpus_per_worker": GpusPerWorker,
    "shard_size": ShardSize,
    "policy_cache_size": PolicyCacheSize,
    "max_resident_checkpoints": MaxResidentCheckpoints,
    "replays": Replays,
    "unit_timeout": UnitTimeout,
    "max_attempts": MaxAttempts,
    "trust_remote_code": TrustRemoteCode,
    "reuse_results": ReuseResults,
    "results_db": ResultsDb,
    "baseline": Baseline,
    "normalize": Normalize,
    "target_ci": TargetCi,
    "min_episodes": MinEpisodes,
    "max_episodes": MaxEpisodes,
    "ray_address": RayAddress,
    "execution": ExecutionOption,
    "prices_file": Prices,
    "scale_up_timeout": ScaleUpTimeout,
    "wandb_entity": WandbEntity,
    "wandb_project": WandbProject,
    "wandb_api_key": WandbApiKey,
}
"""EvalConfig field -> its option. Not here: policy_uris and checkpoints (each command says which)."""

EVALUATION_OPTIONS = tuple(
    inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=bounded_like(name, annotation), default=_field.default
    )
    for name, annotation in _EVALUATION_TYPES.items()
    for _field in [EvalConfig.model_fields[name]]
)
"""The evaluation options as keyword parameters, with EvalConfig's defaults (a SecretStr default is None) and,
for numbers, its bounds."""

LAST = ("markers", "progress")
"""Options listed after the evaluation options in --help, as they always were."""


def with_evaluation_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command(evaluation=..., **own)` offered with every evaluation option: typer reads the returned
    function's signature (the command's own options plus `EVALUATION_OPTIONS`), and the evaluation values
    reach the command together as `evaluation`, a dict of EvalConfig fields."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "evaluation"]
    first = [p for p in own if p.name not in LAST]
    parameters = [*first, *EVALUATION_OPTIONS, *(p for p in own if p.name in LAST)]

    @functools.wraps(command)
    def offered(**values: Any) -> Any:
        evaluation = {p.name: values.pop(p.name) for p in EVALUATION_OPTIONS}
        return command(evaluation=evaluation, **values)

    return with_signature(offered, parameters)


def with_signature(function: Callable[..., Any], parameters: list[inspect.Parameter]) -> Callable[..., Any]:
    """`function` showing `parameters` (keyword-only) to typer, which reads `__signature__` and the
    annotations."""
    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in parameters]
    function.__signature__ = inspect.Signature(keyword)  # type: ignore[attr-defined]
    function.__annotations__ = {p.name: p.annotation for p in keyword}
    return function
