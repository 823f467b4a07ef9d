"""The report: declared shapes (pydantic) reduced once, at the end, from raw per-episode results
(`evaluator.reduce.assembly` does the reducing). Only pydantic here, so that anything reading reports (the
webhook service, the summary) imports neither mettagrid nor torch.

Keeps the seed service's JSON shape and Metta's metric names (`<suite>/score`, `<suite>/<env>/score`,
`reward_avg`) so existing dashboards keep working; richer per-environment statistics sit beside them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from evaluator.secrets import redact_text, redact_url


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LineupPlayer(_Model):
    """A co-player of a mixed env."""

    uri: str
    digest: str
    proportion: float
    agents: int = Field(description="agents it plays in each episode")


class Lineup(_Model):
    """A mixed env's line-up (`--npc`, `--candidate-share`, or the env's own `npcs`): agents per policy by largest
    remainder, seats shuffled by each episode's seed."""

    candidate_agents: int = Field(description="agents the candidate plays in each episode")
    candidate_share: float | None = Field(description="as asked; null: proportion 1 beside the co-players'")
    npcs: list[LineupPlayer]


class Vor(_Model):
    """Value over replacement against a pool (cogames' `pickup`): the candidate's agent-weighted mean reward over
    the scenarios where it plays n, n/2 and 1 of n agents beside the pool, minus the pool-only per-agent mean."""

    value: float
    ci95: tuple[float, float] | None = Field(description="BCa bootstrap 95% interval, paired by episode seed")
    verdict: str = Field(description="better / worse than the pool (the interval excludes 0) or no difference")
    pool: list[str] = Field(description="the pool's policy URIs")
    seats: list[int] = Field(description="the candidate's agent counts played (0: the pool alone)")


MIXED_ONLY = ("lineup", "npc_score", "all_score", "vor")
"""EnvironmentMetrics keys written only for a mixed env."""


class EnvironmentMetrics(_Model):
    """One environment's statistics over its episodes (score = mean per-agent episode reward of the candidate's
    agents: every agent unless co-players share the episode)."""

    episodes: int
    score: float
    std: float
    ci95: tuple[float, float] | None = Field(
        description="BCa bootstrap 95% confidence interval of the score (null with fewer than 2 episodes)"
    )
    success_rate: float = Field(description="fraction of episodes in which every agent collected a heart")
    success_ci95: tuple[float, float] | None = Field(
        default=None, description="Wilson 95% interval of the success rate (null with fewer than 2 episodes)"
    )
    mean_steps: float
    agent_steps: int
    lineup: Lineup | None = Field(
        default=None,
        description="who played beside the candidate (mixed envs); null: the candidate played every agent",
    )
    npc_score: float | None = Field(default=None, description="the co-players' mean per-agent reward (mixed envs)")
    all_score: float | None = Field(default=None, description="the mean per-agent reward over every agent (mixed envs)")
    vor: Vor | None = Field(default=None, description="value over replacement on this environment (--vor)")

    @model_serializer(mode="wrap")
    def _unmixed_as_before(self, handler: SerializerFunctionWrapHandler) -> dict:
        """An env the candidate played alone keeps the report's shape from before line-ups: no mixed-only keys."""
        data = handler(self)
        for key in MIXED_ONLY:
            if getattr(self, key) is None:
                data.pop(key, None)
        return data


class NormalizedScores(_Model):
    """Scores mapped, per environment, to 0 at the LOW policy's score and 1 at the HIGH one's (`--normalize`),
    so environments with different reward scales weigh alike in the aggregate."""

    low: str = Field(description="policy URI scored 0")
    high: str = Field(description="policy URI scored 1")
    score: float = Field(description="mean of the normalised environment scores")
    ci95: tuple[float, float] | None = Field(description="stratified bootstrap 95% interval of score")
    iqm: float = Field(description="interquartile mean of every normalised episode score")
    iqm_ci95: tuple[float, float] | None
    environments: dict[str, float]
    excluded: list[str] = Field(description="environments where LOW and HIGH score the same (no scale to map to)")


class CheckpointMetrics(_Model):
    suite_scores: dict[str, float] = Field(description='{"<suite>/score": mean of the environment scores}')
    simulation_scores: dict[str, float] = Field(description='{"<suite>/<env>/score": environment score}')
    reward_avg: float = Field(description="mean per-agent episode reward over every episode of the suite")
    suite_ci95: tuple[float, float] | None = Field(
        default=None,
        description="95% interval of the suite score: stratified bootstrap (episodes resampled within environments)",
    )
    iqm: float | None = Field(default=None, description="interquartile mean of every episode's score in the suite")
    iqm_ci95: tuple[float, float] | None = Field(default=None, description="stratified bootstrap 95% interval of iqm")
    normalized: NormalizedScores | None = Field(default=None, description="with --normalize LOW,HIGH")
    environments: dict[str, EnvironmentMetrics]
    vor: Vor | None = Field(default=None, description="value over replacement over the suite's environments (--vor)")

    @model_serializer(mode="wrap")
    def _without_vor_as_before(self, handler: SerializerFunctionWrapHandler) -> dict:
        """A run without --vor keeps the report's shape from before it."""
        data = handler(self)
        if self.vor is None:
            data.pop("vor", None)
        return data


class EnvironmentDifference(_Model):
    difference: float = Field(description="this checkpoint's score minus the other's")
    ci95: tuple[float, float] | None = Field(description="paired BCa bootstrap 95% interval (same episode seeds)")
    probability_of_improvement: float = Field(description="P(an episode of this > one of the other), ties half")


class Comparison(_Model):
    """This checkpoint against another of the run, episode by episode (both played the same seeds)."""

    against: str = Field(description="previous (the policy's checkpoint before), best (of the run) or baseline")
    name: str
    version: str
    digest: str
    difference: float = Field(description="suite score difference, this minus the other")
    ci95: tuple[float, float] | None = Field(description="stratified paired bootstrap 95% interval of difference")
    probability_of_improvement: float = Field(description="mean over environments of P(this > other), ties half")
    verdict: str = Field(description="better / worse (the interval excludes 0) or no difference, at 95%")
    environments: dict[str, EnvironmentDifference]


class CheckpointReport(_Model):
    name: str
    uri: str
    version: str
    digest: str
    metrics: CheckpointMetrics | None = None
    replay_url: str | None = Field(default=None, description="the checkpoint's first replay (mettagrid format)")
    replays: dict[str, str] = Field(
        default_factory=dict, description="{environment: URL of its episode-0 replay}, for the environments recorded"
    )
    error: str | None = None
    env_errors: dict[str, str] = Field(
        default_factory=dict,
        description="{environment: why this checkpoint could not play it} (a policy's spaces do not fit the game); "
        "its metrics cover the other environments and it is in no comparison",
    )
    comparisons: list[Comparison] = Field(
        default_factory=list, description="against the previous checkpoint, the run's best and --baseline"
    )


class AdaptiveEpisodes(_Model):
    """The stopping rule of an adaptive run (`--target-ci`); each environment's `episodes` says what it used."""

    target_ci: float = Field(description="an environment stops once its 95% CI half-width is at most this")
    min_episodes: int = Field(description="episodes per environment in the first round")
    max_episodes: int = Field(description="episodes per environment at most")
    rule: str = "double an environment's episodes while its BCa 95% CI half-width is above target_ci"


class PolicyReport(_Model):
    policy_uri: str
    checkpoints: list[CheckpointReport]


class WorkerReport(_Model):
    worker: str
    device: str
    node_id: str = Field(description="the Ray node the worker ran on")
    gpu_ids: list[str] = Field(description="the GPUs Ray assigned it (a fractional share names the one it shares)")
    gpu_share: float = Field(
        default=0.0, description="the GPUs its actor asked for (num_gpus), a fraction when workers share one; 0 on CPU"
    )
    policy_loads: int
    cache_hits: int
    loaded_checkpoints: list[str] = Field(description="digests this worker loaded, in load order")
    cached_policies: int = Field(default=0, description="policies in the worker's LRU cache at the end")
    peak_rss_mb: float = Field(default=0.0, description="the worker process's peak resident memory")


class NodeTypeCost(_Model):
    """The nodes of one type that the evaluation's workers ran on."""

    nodes: int = Field(description="how many nodes of this type ran workers")
    node_seconds: float = Field(description="their time up during the evaluation, summed")
    usd_per_hour: float | None = Field(description="the price table's price of a node-hour; null: not in the table")
    usd: float | None = Field(description="node_seconds / 3600 x usd_per_hour; null when unpriced")


class CheckpointCost(_Model):
    policy_uri: str
    name: str
    version: str
    digest: str
    busy_s: float = Field(description="worker seconds its units took in this run (loading and playing)")
    usd: float = Field(description="total_usd times this checkpoint's share of every checkpoint's busy_s")


class CostReport(_Model):
    """An ESTIMATE of what the evaluation cost in compute (`evaluator.cost.estimate`): the time each node where its
    workers ran was up during the evaluation, times a list price per node-hour. Not a bill."""

    estimate: str = Field(description="what is counted and what is not")
    prices: str = Field(description="the price table: source, as of, file")
    total_usd: float = Field(description="the priced node types' usd, summed (a lower bound when some are unpriced)")
    usd_per_million_agent_steps: float | None = Field(
        description="total_usd per million agent-steps played in this run; null when none were played"
    )
    node_types: dict[str, NodeTypeCost] = Field(
        description="by node type: the node's Ray label instance-type, else ray.io/node-group, else local"
    )
    checkpoints: list[CheckpointCost] = Field(description="total_usd apportioned by each checkpoint's busy_s")
    unpriced: list[str] = Field(
        default_factory=list, description="node types that ran workers but have no price: left out of total_usd"
    )


class Timing(_Model):
    wall_s: float = Field(description="driver wall time from start to report, Ray start included")
    ray_init_s: float
    workers_start_s: float = Field(default=0.0, description="until every worker process was up; not in evaluation_s")
    evaluation_s: float = Field(description="from the first unit sent to the last result received")
    agent_steps: int = Field(description="agent-steps of the episodes played in this run (cached ones excluded)")
    agent_steps_per_s: float = Field(description="agent_steps / evaluation_s")
    episodes: int
    episodes_cached: int = Field(default=0, description="episodes taken from the results store, not played")
    policy_loads: int = Field(description="checkpoint loads over all workers (cache misses)")
    workers: int
    workers_replaced: int = Field(default=0, description="workers that died or hung and were replaced")
    driver_peak_rss_mb: float = Field(default=0.0, description="the driver process's peak resident memory so far")
    driver_cpu_s: float = Field(default=0.0, description="CPU time of the driver process (all its threads) so far")
    units: int = Field(
        default=0, description="work units run in this run (episodes of one checkpoint batched together)"
    )


class OutputStatus(_Model):
    uri: str = Field(description="OUTPUT_URI the results were delivered to")
    error: str | None = Field(default=None, description="why delivery failed; null when it succeeded")

    @field_validator("uri")
    @classmethod
    def _uri_redacted(cls, value: str) -> str:
        """report.json is shared and served: the URI's secrets (a presigned query string, a password) masked."""
        return redact_url(value)

    @field_validator("error")
    @classmethod
    def _error_redacted(cls, value: str | None) -> str | None:
        return None if value is None else redact_text(value)


class PolicyRating(_Model):
    """A policy's rating from the run's mixed episodes (each episode ranks the policies seated in it by their
    agents' mean reward): openskill's Plackett-Luce (mu, sigma, ordinal) and elote's Elo over its pairings."""

    policy_uri: str
    name: str
    version: str
    digest: str
    mu: float
    sigma: float
    ordinal: float = Field(description="mu - 3 sigma: what the ratings are sorted by with `rating_system` openskill")
    elo: float = Field(description="Elo (elote: start 400, K 32) over every pairing in its episodes")
    games: int = Field(description="mixed episodes it played in")


class CrossPlayCell(_Model):
    """Ordered pair (policy, against): from the episodes both played in."""

    policy: str = Field(description="`name:version` of a checkpoint, or a co-player's URI")
    against: str
    games: int
    mean_reward: float = Field(description="the policy's agents' mean reward in those episodes")
    win_rate: float = Field(description="share of those episodes where its agents' mean beat the other's")
    loss_rate: float
    tie_rate: float


class Report(_Model):
    simulation_suite: str
    run_name: str
    evaluator_version: str
    seed: int
    policies: list[PolicyReport]
    timing: Timing
    workers: list[WorkerReport] = Field(default_factory=list)
    output: OutputStatus | None = None
    adaptive: AdaptiveEpisodes | None = Field(default=None, description="the stopping rule, with --target-ci")
    cost: CostReport | None = Field(default=None, description="an estimate of the evaluation's compute cost")
    ratings: list[PolicyRating] = Field(
        default_factory=list,
        description="from the run's mixed episodes, best first by `rating_system` (absent without them)",
    )
    rating_system: Literal["openskill", "elo"] | None = Field(
        default=None, description="what `ratings` are sorted by (--rating; absent without ratings)"
    )
    cross_play: list[CrossPlayCell] = Field(
        default_factory=list, description="every ordered pair of policies that met in a mixed episode"
    )

    @model_serializer(mode="wrap")
    def _unmixed_as_before(self, handler: SerializerFunctionWrapHandler) -> dict:
        """A run without mixed episodes keeps the report's shape from before line-ups."""
        data = handler(self)
        for key in ("ratings", "rating_system", "cross_play"):
            if not getattr(self, key):
                data.pop(key, None)
        return data


class ErrorReport(_Model):
    """What stdout carries when nothing could be evaluated."""

    error: str
    traceback: str | None = None
    policy_uri: str | None = None
    retryable: bool = Field(
        default=False, description="an outage (exit 3: W&B, S3 or Ray unreachable): the same command may succeed later"
    )


def report_schema() -> dict:
    return Report.model_json_schema()
