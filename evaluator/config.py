"""`EvalConfig`: every option of an evaluation, validated once at the edge (the CLI builds it from flags
and the seed's environment variables; nothing below the CLI reads `os.environ`), then handed out in frozen
slices, each taken by the module that owns it: `selection` (the sources), `play` (the suite and its episodes),
`workers` (the executors, worker layout, Ray cluster and autoscaling), `storage` (DATA_DIR, the results
database, OUTPUT_URI) and `wandb` (the W&B account). Only the driver's `evaluate` and the sweep take it whole,
to hand the slices out."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from evaluator.sources.selection import check_selector
from sim.errors import UsageError
from sim.lineup import parse_co_player

MAX_SECONDS = 7 * 24 * 3600
"""The longest timeout, wait or lease of any option (a week): every number option is bounded both ways, so a
huge, infinite or nan value is a usage error instead of an overflow wherever it would be used."""
MAX_SEED = 2**63 - 1
"""Seeds are 64-bit signed integers (a database's BIGINT, numpy's generators)."""


class Device(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"


class Execution(StrEnum):
    AUTO = "auto"
    """Small plans in this process when no cluster is asked for (evaluator.run.in_process), else Ray."""
    RAY = "ray"
    IN_PROCESS = "in-process"


class _Slice(BaseModel):
    """A frozen part of `EvalConfig`, taken by the module that owns it (validated once, with the whole)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


SliceT = TypeVar("SliceT", bound=_Slice)


class Selection(_Slice):
    """Which checkpoints of which policies (`evaluator.sources`), and the references they are compared with."""

    policy_uris: tuple[str, ...]
    checkpoints: str
    baseline: str | None
    normalize: tuple[str, str] | None


class Seating(StrEnum):
    ROUND_ROBIN = "round_robin"
    ALL = "all"


class RatingSystem(StrEnum):
    OPENSKILL = "openskill"
    ELO = "elo"


class Play(_Slice):
    """The suite and how its episodes are played: which environments, how many episodes (fixed or adaptive),
    in units of how many, with replays or not."""

    suite: str
    env: str | None
    seed: int | None
    episodes: int | None
    target_ci: float | None
    min_episodes: int
    max_episodes: int
    shard_size: int
    replays: bool
    npcs: tuple[str, ...]
    candidate_share: float | None
    cross_play: bool
    seating: Seating
    rating: RatingSystem
    vor: tuple[str, ...]


class Workers(_Slice):
    """Where episodes run: the executor, the worker pool and its resources, the Ray cluster
    (`evaluator.run.worker_layout`, `ray_cluster`, `in_process`, `autoscaling`)."""

    execution: Execution
    device: Device
    num_workers: int | None
    cpus_per_worker: float | None
    gpus_per_worker: float | None
    policy_cache_size: int
    max_attempts: int
    unit_timeout: float | None
    trust_remote_code: bool
    ray_address: str | None
    scale_up_timeout: float


class Storage(_Slice):
    """Where the run's results go: DATA_DIR and the run's name, the results database, OUTPUT_URI, the
    checkpoints held in memory, the price table of the cost estimate."""

    data_dir: Path
    run_name: str
    output_uri: str | None
    results_db: SecretStr | None
    reuse_results: bool
    max_resident_checkpoints: int | None
    prices_file: Path | None


class WandbAccount(_Slice):
    """The W&B entity, project and key wandb:// URIs are read and written with."""

    wandb_entity: str
    wandb_project: str
    wandb_api_key: SecretStr | None


SLICES: tuple[type[_Slice], ...] = (Selection, Play, Workers, Storage, WandbAccount)
"""Every field of `EvalConfig` is in exactly one slice (a test checks it)."""


class EvalConfig(BaseModel):
    """One evaluation run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_uris: tuple[str, ...] = Field(min_length=1)
    """Policies to evaluate (evaluator.sources): a plain path or file:// URI (a checkpoint file, a policy
    directory, or a directory of checkpoints), s3://bucket/key or s3://bucket/prefix/, wandb://entity/project/
    [model/]name[:version] or wandb://run/name[:version], builtin://<name>. A URI naming a version (W&B's
    `:v3` or alias, Metta's `run:v30`) takes `checkpoints` `latest` only."""
    baseline: str | None = None
    """A policy URI every checkpoint is compared with (paired, episode by episode), evaluated in the same run:
    added to `policy_uris` if it is not one of them."""
    normalize: tuple[str, str] | None = None
    """(LOW, HIGH) policy URIs (`--normalize LOW,HIGH`), evaluated in the same run (added to `policy_uris`):
    each environment's score maps to 0 at LOW's and 1 at HIGH's before aggregating."""
    suite: str = "navigation"
    """Registered suite name, or a path to a suite YAML/JSON file."""
    device: Device = Device.CPU
    data_dir: Path = Path("data")
    """Where `<run_name>/report.json`, `episodes.parquet` and `replays/` are written."""
    run_name: str = ""
    """Defaults to `eval_<first policy>_<UTC timestamp>`."""
    output_uri: str | None = None
    """Also deliver the run's outputs there (evaluator.outputs): a path or file:// URI, s3://bucket/prefix,
    or wandb://entity/project[/run_id]."""
    episodes: int | None = Field(default=None, ge=1, le=100_000)
    """Episodes per environment (default: each environment's own count)."""
    target_ci: float | None = Field(default=None, gt=0, le=1e9)
    """Adaptive episodes: play `min_episodes` per environment, then keep doubling (up to `max_episodes`) the
    environments of a checkpoint whose score's 95% interval half-width is still above this."""
    min_episodes: int = Field(default=8, ge=2, le=100_000)
    max_episodes: int = Field(default=128, ge=2, le=100_000)
    seed: int | None = Field(default=None, ge=-MAX_SEED - 1, le=MAX_SEED)
    """Override the suite's seed (episode seeds derive from it)."""
    env: str | None = None
    """Glob over environment names, e.g. 'maze*'."""
    npcs: tuple[str, ...] = ()
    """Co-players (`--npc URI[,proportion=N]`, cogames' form): they play some agents of every episode of each
    environment of at least 2 agents, beside the evaluated checkpoint (`sim.lineup`); an env's own `npcs` win."""
    candidate_share: float | None = Field(default=None, gt=0, le=1)
    """The evaluated checkpoint's share of each mixed episode's agents (at least one agent); None: proportion 1
    beside the co-players' proportions. Needs co-players."""
    cross_play: bool = False
    """The run's checkpoints and co-players play each other on the suite's multi-agent environments (`seating`),
    for the report's ratings and cross-play matrix (`evaluator.run.lineup.cross_play_suite`)."""
    seating: Seating = Seating.ROUND_ROBIN
    """Cross-play seating: every pair at equal shares (`round_robin`), or every policy in each episode (`all`)."""
    rating: RatingSystem = RatingSystem.OPENSKILL
    """What the report's ratings are sorted by: openskill's ordinal (mu - 3 sigma) or Elo; both are reported."""
    vor: tuple[str, ...] = ()
    """Value over replacement against this pool of policy URIs (`--vor POOL_URI[,POOL_URI...]`): each checkpoint
    plays n, n/2 and 1 of each multi-agent environment's n agents beside the pool, and the pool plays alone
    (`evaluator.run.lineup.vor_suite`, `evaluator.reduce.vor`)."""
    num_workers: int | None = Field(default=None, ge=1, le=1024)
    cpus_per_worker: float | None = Field(default=None, gt=0, le=1024)
    """CPUs per worker actor, also its torch threads; None: 1 (`evaluator.run.worker_layout`)."""
    gpus_per_worker: float | None = Field(default=None, gt=0, le=8)
    """GPUs per worker with `--device cuda`; None: fill the GPU nodes (one worker per `cpus_per_worker` CPUs,
    sharing the node's GPUs), or 1 each with `num_workers` (`evaluator.run.worker_layout`)."""
    shard_size: int = Field(default=32, ge=1, le=100_000)
    """Episodes per work unit: small enough to balance workers, large enough to batch in lockstep."""
    max_resident_checkpoints: int | None = Field(default=None, ge=1, le=100_000)
    """Checkpoints held in the driver's memory at once (downloading, or with units to run); the rest wait
    their turn. Default: 16, or twice the workers if more. Bounds the driver's memory whatever the run's size."""
    policy_cache_size: int = Field(default=4, ge=1, le=1024)
    """The worker's policy cache: loaded policies each worker keeps (LRU)."""
    max_attempts: int = Field(default=3, ge=1, le=100)
    """Tries per work unit before its checkpoint is marked failed (worker deaths, crashes)."""
    unit_timeout: float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    """Seconds a work unit may run before it fails and its worker is replaced (a hung policy or env)."""
    trust_remote_code: bool = False
    """Let mettagrid submission archives run the code they ship (bundled modules, setup scripts)."""
    reuse_results: bool = True
    """Reuse episodes already in the results database (--no-reuse-results plays everything again; the
    episodes are still recorded)."""
    results_db: SecretStr | None = None
    """The results database (evaluator.store): a SQLAlchemy URL, `postgresql://user:password@host/db` on
    clusters; unset: SQLite at DATA_DIR/results.db. A SecretStr: its password never shows in a dump or log."""
    replays: bool = True
    """Record the first episode of every (checkpoint, environment) in mettagrid's replay format."""
    ray_address: str | None = None
    """Attach to this Ray cluster (RAY_ADDRESS); otherwise start a local Ray."""
    scale_up_timeout: float = Field(default=900.0, gt=0, le=24 * 3600)
    """Seconds to wait for Ray's autoscaler to add a GPU node when `--device cuda` finds none (scale from zero,
    `evaluator.run.autoscaling`); then the run fails as an outage (exit 3). An EKS GPU node (EC2 launch, image pull)
    takes minutes, not seconds."""
    prices_file: Path | None = None
    """The price table of the report's cost estimate (`evaluator.cost.prices`); None: the packaged
    evaluator/cost/prices.yaml (AWS on-demand list prices)."""
    execution: Execution = Execution.AUTO
    """Where episodes run: `auto` (small plans in this process, see evaluator.run.in_process), `ray`, `in-process`."""
    checkpoints: str = "latest"
    """Checkpoint selection: latest, all, last:N, every:K, or explicit versions v3,v7."""
    wandb_entity: str = "metta-ai"
    wandb_project: str = "metta-research"
    wandb_api_key: SecretStr | None = None
    """Only needed for wandb:// URIs; a SecretStr so it never shows in a repr, log line or dump."""

    @property
    def selection(self) -> Selection:
        return self._slice(Selection)

    @property
    def play(self) -> Play:
        return self._slice(Play)

    @property
    def workers(self) -> Workers:
        return self._slice(Workers)

    @property
    def storage(self) -> Storage:
        return self._slice(Storage)

    @property
    def wandb(self) -> WandbAccount:
        return self._slice(WandbAccount)

    def _slice(self, kind: type[SliceT]) -> SliceT:
        """The fields of one slice: what the module that owns it takes, and nothing else."""
        return kind(**{name: getattr(self, name) for name in kind.model_fields})

    @field_validator("policy_uris", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            return tuple(part.strip() for item in value for part in str(item).split(",") if part.strip())
        return value

    @field_validator("vor", mode="before")
    @classmethod
    def _pool_from_text(cls, value: object) -> object:
        items = [value] if isinstance(value, str) else ([] if value is None else value)
        if not isinstance(items, list | tuple):
            return value
        return tuple(part.strip() for item in items for part in str(item).split(",") if part.strip())

    @field_validator("npcs", mode="before")
    @classmethod
    def _npcs_from_text(cls, value: object) -> object:
        """NPC_POLICY_URI is comma-separated URIs; `,proportion=N` stays with the URI before it."""
        items = [value] if isinstance(value, str) else ([] if value is None else value)
        if not isinstance(items, list | tuple):
            return value
        found: list[str] = []
        for item in items:
            for part in (piece.strip() for piece in str(item).split(",")):
                if part.startswith("proportion=") and found:
                    found[-1] = f"{found[-1]},{part}"
                elif part:
                    found.append(part)
        return tuple(found)

    @field_validator("npcs")
    @classmethod
    def _npcs_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            parse_co_player(text)
        return value

    @model_validator(mode="after")
    def _share_needs_npcs(self) -> EvalConfig:
        if self.candidate_share is not None and self.candidate_share < 1 and not self.npcs:
            raise ValueError("--candidate-share needs co-players: give --npc URI (or NPC_POLICY_URI)")
        if self.candidate_share == 1 and self.npcs:
            raise ValueError("--candidate-share 1 leaves no agent to the --npc co-players")
        return self

    @field_validator("checkpoints")
    @classmethod
    def _known_selector(cls, value: str) -> str:
        try:
            return check_selector(value)
        except UsageError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("normalize", mode="before")
    @classmethod
    def _low_high(cls, value: object) -> object:
        if isinstance(value, str):
            parts = tuple(part.strip() for part in value.split(","))
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"--normalize takes LOW,HIGH (two policy URIs), got {value!r}")
            return parts
        return value

    @model_validator(mode="after")
    def _adaptive_bounds(self) -> EvalConfig:
        if self.target_ci is not None and self.episodes is not None:
            raise ValueError("--target-ci chooses the episodes: give --min-episodes / --max-episodes, not --episodes")
        if self.min_episodes > self.max_episodes:
            raise ValueError(f"--min-episodes {self.min_episodes} is above --max-episodes {self.max_episodes}")
        return self

    @model_validator(mode="after")
    def _references_are_evaluated(self) -> EvalConfig:
        """The baseline and the normalisation's LOW and HIGH are evaluated in the run (appended if missing)."""
        references = [self.baseline, *(self.normalize or ())]
        missing = [uri for uri in dict.fromkeys(references) if uri is not None and uri not in self.policy_uris]
        if missing:
            object.__setattr__(self, "policy_uris", (*self.policy_uris, *missing))
        return self

    @model_validator(mode="after")
    def _default_run_name(self) -> EvalConfig:
        if not self.run_name:
            object.__setattr__(self, "run_name", default_run_name(self.policy_uris[0]))
        elif not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}", self.run_name):  # a directory of DATA_DIR
            raise ValueError(
                f"run_name {self.run_name!r} may hold only letters, digits, '_', '.', '-' (at most 200), and may not "
                "start with '.' or '-'"
            )
        return self


def results_db_url(storage: Storage) -> str:
    """The results database's URL of an evaluation (`database_url`)."""
    return database_url(storage.results_db.get_secret_value() if storage.results_db else None, storage.data_dir)


def database_url(results_db: str | None, data_dir: Path) -> str:
    """The results database's URL: the one given, else SQLite in DATA_DIR (for commands that only read it)."""
    return results_db or f"sqlite:///{(data_dir / 'results.db').resolve()}"


def default_run_name(policy_uri: str, now: datetime | None = None) -> str:
    """`eval_<policy>_<UTC timestamp>`, the policy part reduced to a file-name-safe slug."""
    stem = policy_uri.split("://", 1)[-1].rstrip("/").rsplit("/", 1)[-1] or "policy"
    slug = re.sub(r"[^A-Za-z0-9_.\-]+", "_", stem)[:48]
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"eval_{slug}_{stamp}"
