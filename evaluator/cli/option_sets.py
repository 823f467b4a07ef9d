"""Which commands offer which shared options: every evaluation option for `run`, `sweep` and `entrypoint`
(`EVALUATION_OPTIONS`, one per `EvalConfig` field, with that field's default), the job options for `serve`
(`JOB_OPTIONS`, the same declarations), and `with_options`, which offers a set to a command.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from evaluator.config import EvalConfig
from evaluator.options import (
    Baseline,
    CandidateShare,
    CpusPerWorker,
    CrossPlay,
    DataDir,
    DeviceOption,
    EnvGlob,
    Episodes,
    ExecutionOption,
    GpusPerWorker,
    MaxAttempts,
    MaxEpisodes,
    MaxResidentCheckpoints,
    MinEpisodes,
    Normalize,
    Npcs,
    NumWorkers,
    OutputUri,
    PolicyCacheSize,
    Prices,
    RatingOption,
    RayAddress,
    Replays,
    ResultsDb,
    ReuseResults,
    RunName,
    ScaleUpTimeout,
    SeatingOption,
    Seed,
    ShardSize,
    Suite,
    TargetCi,
    TrustRemoteCode,
    UnitTimeout,
    VorPool,
    WandbApiKey,
    WandbEntity,
    WandbProject,
    envvar,
)

Command = TypeVar("Command", bound=Callable[..., Any])

_EVALUATION: dict[str, Any] = {
    "baseline": Baseline,
    "normalize": Normalize,
    "trust_remote_code": TrustRemoteCode,
    "suite": Suite,
    "env": EnvGlob,
    "episodes": Episodes,
    "seed": Seed,
    "target_ci": TargetCi,
    "min_episodes": MinEpisodes,
    "max_episodes": MaxEpisodes,
    "npcs": Npcs,
    "candidate_share": CandidateShare,
    "cross_play": CrossPlay,
    "seating": SeatingOption,
    "rating": RatingOption,
    "vor": VorPool,
    "device": DeviceOption,
    "num_workers": NumWorkers,
    "cpus_per_worker": CpusPerWorker,
    "gpus_per_worker": GpusPerWorker,
    "shard_size": ShardSize,
    "policy_cache_size": PolicyCacheSize,
    "max_resident_checkpoints": MaxResidentCheckpoints,
    "unit_timeout": UnitTimeout,
    "max_attempts": MaxAttempts,
    "ray_address": RayAddress,
    "execution": ExecutionOption,
    "scale_up_timeout": ScaleUpTimeout,
    "prices_file": Prices,
    "data_dir": DataDir,
    "run_name": RunName,
    "output_uri": OutputUri,
    "replays": Replays,
    "results_db": ResultsDb,
    "reuse_results": ReuseResults,
    "wandb_entity": WandbEntity,
    "wandb_project": WandbProject,
    "wandb_api_key": WandbApiKey,
}
"""EvalConfig field -> its option. Not here: policy_uris and checkpoints (each command says which)."""

EVALUATION_OPTIONS = tuple(
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=option, default=field.default)
    for name, option in _EVALUATION.items()
    for field in [EvalConfig.model_fields[name]]
)
"""The evaluation options as keyword parameters, with EvalConfig's defaults (a SecretStr's is None)."""

JOB_FIELDS = (
    "suite", "device", "data_dir", "output_uri", "episodes", "num_workers", "unit_timeout", "wandb_entity",
    "wandb_project",
)  # fmt: skip
"""The evaluation options `serve` forwards into every job's runtime_env (none of them a secret)."""
JOB_OPTIONS = tuple(option.replace(default=None) for option in EVALUATION_OPTIONS if option.name in JOB_FIELDS)
"""`serve`'s job options: an unset one (None) is not forwarded, and jobs read it from the Ray head's environment."""


def job_environment(values: dict[str, Any]) -> dict[str, str]:
    """The job options given to `serve` (None: not given), as the variables a job reads them from."""
    return {envvar(_EVALUATION[name]): str(value) for name, value in values.items() if value is not None}


def with_options(options: tuple[inspect.Parameter, ...]) -> Callable[[Command], Command]:
    """Offer `options` as keyword parameters of a command that takes their values as `**values`.

    The one signature this CLI writes, because typer has no other way to give several commands the same group of
    options: it makes a command's options from its function's signature only. A callback on the app takes
    options before the command name (`policy-evaluator --suite smoke run`, a different CLI), and `Annotated`
    aliases still need one parameter per option in every command (32 each for `run`, `sweep` and
    `entrypoint`). So typer is shown the command's own parameters as written followed by `options` (keyword-only);
    it calls the function with every value by name, and the options' values land in `**values`."""

    def offer(function: Command) -> Command:
        signature = inspect.signature(function, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        function.__signature__ = signature.replace(parameters=[*own, *options])  # type: ignore[attr-defined]
        return function

    return offer
