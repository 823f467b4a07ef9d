"""The collector, the run's pure reduction: takes episode results as units finish (and from the results store)
and lets go of each as soon as it can. It writes nothing: the run's sink (`evaluator.reduce.sink`) has
written each replay and episode row before the collector sees the episode, and hands it the replays' URIs.
A checkpoint's episodes are reduced to its metrics the moment its last one is in (sorted, so the figures
never depend on arrival order) and dropped, its metrics kept as compressed JSON (1-2% of the models' size),
so the driver's memory is the episodes of checkpoints still in flight plus a few KB per finished checkpoint.
Comparisons are made in one final pass, as the report is written one checkpoint at a time.
"""

from __future__ import annotations

import resource
import zlib
from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace

from actors.protocol import UnitResult, WorkerStats, WorkUnit
from evaluator.reduce.assembly import checkpoint_metrics, episode_scores
from evaluator.reduce.comparisons import RunScores
from evaluator.reduce.ratings import Game, game_of
from evaluator.reduce.report import CheckpointMetrics, CheckpointReport, Timing
from evaluator.sources import Checkpoint
from sim.metrics import EpisodeResult
from sim.suites import Suite


@dataclass(frozen=True)
class Entry:
    """A checkpoint with the policy URI it came from; its index in the run is its position in the plan."""

    policy_uri: str
    checkpoint: Checkpoint


@dataclass
class Collector:
    """Accumulates unit results as they stream in, and reduces each checkpoint once its episodes are in."""

    entries: list[Entry]
    """In the run's order; a checkpoint's digest and error are known once `fetched`."""
    suite: Suite
    results: dict[int, list[EpisodeResult]] = field(default_factory=dict)
    """Episodes (without replay and stats) of checkpoints not complete yet."""
    metrics: dict[int, bytes] = field(default_factory=dict)
    """Complete checkpoints, reduced: `CheckpointMetrics` as compressed JSON (`metrics_of` reads one back)."""
    episodes: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    replay_urls: dict[int, dict[str, str]] = field(default_factory=dict)
    """Each checkpoint's episode-0 replay per environment (the report links them; the page plays them)."""
    cached_episodes: int = 0
    played_agent_steps: int = 0
    units: int = 0
    baseline: str | None = None
    """The policy URI whose (last) checkpoint every other is compared with (`--baseline`)."""
    normalize: tuple[str, str] | None = None
    """(LOW, HIGH) policy URIs of `--normalize`."""
    reduce_when_complete: bool = True
    """Reduce a checkpoint when the suite's episode count is in; False for adaptive runs, where the unit
    stream decides when a checkpoint has enough episodes and calls `complete`."""
    scores: RunScores = field(init=False)
    """Complete checkpoints' episode scores: for comparisons and normalised scores at the end."""
    games: list[Game] = field(default_factory=list)
    """Every mixed episode as a game among the policies seated in it (`evaluator.reduce.ratings`): a few floats
    each, kept to the end for the run's ratings and cross-play matrix."""
    env_errors: dict[int, dict[str, str]] = field(default_factory=dict)
    """Environments a checkpoint could not play (a policy's spaces do not fit the game): {index: {env: reason}}.
    Its metrics cover the other environments; it is left out of comparisons (its suite score is not the same
    average as the others')."""
    left_out: set[int] = field(default_factory=set)
    """Checkpoints the run's admission did not take (a sweep's cached or leased-elsewhere ones): in no report."""

    def __post_init__(self) -> None:
        self._expected = sum(env.episodes for env in self.suite.envs)
        self._envs = {env.name: (position, env) for position, env in enumerate(self.suite.envs)}
        self.scores = RunScores(
            self.suite.scored(), lambda i: self.entries[i].policy_uri, self.baseline, self.normalize
        )
        for index, entry in enumerate(self.entries):
            if entry.checkpoint.error:
                self.errors[index] = entry.checkpoint.error

    def fetched(self, index: int, checkpoint: Checkpoint) -> None:
        """The checkpoint at `index` was downloaded (or failed to be): keep its identity, never its bytes."""
        self.entries[index] = Entry(self.entries[index].policy_uri, replace(checkpoint, data=b""))
        if checkpoint.error:
            self.errors[index] = checkpoint.error

    def leave_out(self, index: int, checkpoint: Checkpoint) -> None:
        """The checkpoint at `index` is not part of this run (its admission said no): it is in no report."""
        self.entries[index] = Entry(self.entries[index].policy_uri, replace(checkpoint, data=b""))
        self.left_out.add(index)
        self.errors.pop(index, None)

    def policy_uris(self, configured: Sequence[str]) -> list[str]:
        """The `configured` policy URIs that have a checkpoint in the run (one the admission took)."""
        taken = {entry.policy_uri for index, entry in enumerate(self.entries) if index not in self.left_out}
        return [uri for uri in configured if uri in taken]

    def add_stored(
        self,
        index: int,
        found: Sequence[EpisodeResult],
        replay_uris: Mapping[str, str],
        held: Set[tuple[int, str, int]] = frozenset(),
    ) -> set[tuple[int, str, int]]:
        """Take the episodes of checkpoint `index` the results store holds (`found`, their rows already written
        by the sink) that are not `held` already, and each environment's stored episode-0 replay (linked where
        it is, not copied); return their (checkpoint index, env, episode) keys, which its plan then skips."""
        taken: set[tuple[int, str, int]] = set()
        for result in found:
            if (index, result.env, result.episode) in held:
                continue
            self._keep(index, result, None)
            taken.add((index, result.env, result.episode))
        for env, uri in replay_uris.items():
            self.replay_urls.setdefault(index, {})[env] = uri
        self.cached_episodes += len(taken)
        return taken

    def add(self, unit: WorkUnit, result: UnitResult, replay_uris: Sequence[str | None] = ()) -> None:
        """Take a unit's result; `replay_uris`: where the sink wrote each episode's replay (None: no replay)."""
        index = unit.checkpoint_index
        self.units += 1
        if result.error:
            self.errors.setdefault(index, result.error)
            self.results.pop(index, None)
            return
        if result.env_errors:
            self._env_failed(index, dict(result.env_errors))
        uris = list(replay_uris) or [None] * len(result.episodes)
        for episode, replay_uri in zip(result.episodes, uris, strict=True):
            self._keep(index, episode, replay_uri)
            self.played_agent_steps += episode.agent_steps

    def _keep_game(self, index: int, episode: EpisodeResult) -> None:
        position, env = self._envs[episode.env]
        places = (self.entries[index].checkpoint.digest, *(npc.digest for npc in env.npcs))
        rewards = [episode.rewards_of(place) for place in range(len(places))]
        game = game_of((position, episode.episode, index), places, rewards)
        if game is not None:
            self.games.append(game)

    def _env_failed(self, index: int, reasons: dict[str, str]) -> None:
        failed = self.env_errors.setdefault(index, {})
        failed.update(reasons)
        if len(failed) == len(self.suite.envs):  # nothing left to score: the checkpoint fails
            self.errors.setdefault(index, next(iter(failed.values())))
            self.results.pop(index, None)
        elif self.reduce_when_complete and len(self.results.get(index, [])) == self._expected_of(index):
            self.complete(index)

    def _expected_of(self, index: int) -> int:
        failed = self.env_errors.get(index, {})
        return self._expected - sum(env.episodes for env in self.suite.envs if env.name in failed)

    def _suite_of(self, index: int) -> Suite:
        """The suite as checkpoint `index` played it: without the environments it could not play."""
        failed = self.env_errors.get(index)
        if not failed:
            return self.suite
        return self.suite.model_copy(update={"envs": tuple(env for env in self.suite.envs if env.name not in failed)})

    def _keep(self, index: int, episode: EpisodeResult, replay_uri: str | None) -> None:
        if replay_uri is not None and episode.episode == 0:
            self.replay_urls.setdefault(index, {})[episode.env] = replay_uri
        self.episodes += 1
        if index in self.errors:
            return
        if episode.seats:
            self._keep_game(index, episode)
        kept = self.results.setdefault(index, [])
        kept.append(replace(episode, replay=None, stats={}))
        if self.reduce_when_complete and len(kept) == self._expected_of(index):
            self.complete(index)

    def complete(self, index: int) -> None:
        """Every episode of checkpoint `index` is in: reduce them to its metrics and let them go."""
        kept = self.results.pop(index, [])
        if index in self.errors or not kept:
            return
        suite = self._suite_of(index)
        metrics = checkpoint_metrics(suite, kept)
        self.metrics[index] = zlib.compress(metrics.model_dump_json().encode())
        if suite is self.suite:
            scored = suite.scored()
            counted = [r for r in kept if r.env in {env.name for env in scored.envs}]
            self.scores.record(index, episode_scores(scored, counted), next(iter(metrics.suite_scores.values())))

    def metrics_of(self, index: int) -> CheckpointMetrics | None:
        """The reduced metrics of the checkpoint at `index`, if it completed."""
        metrics = self.metrics.get(index)
        return None if metrics is None else CheckpointMetrics.model_validate_json(zlib.decompress(metrics))

    def checkpoint_reports(self, policy_uri: str) -> Iterator[CheckpointReport]:
        """The checkpoints of `policy_uri`, in the run's order, one at a time: metrics, first replay, or error,
        and the comparisons with the policy's previous checkpoint, the run's best and the baseline."""
        previous = None
        for index, entry in enumerate(self.entries):
            if entry.policy_uri != policy_uri or index in self.left_out:
                continue
            checkpoint, error = entry.checkpoint, self.errors.get(index)
            replays = {
                env.name: self.replay_urls[index][env.name]
                for env in self.suite.envs
                if env.name in self.replay_urls.get(index, {})
            }
            metrics = None if error else self.metrics_of(index)
            if metrics is None and not error:  # not every episode came in (cannot happen without an error)
                metrics = checkpoint_metrics(self._suite_of(index), self.results.get(index, []))
            if metrics is not None and self.normalize:
                metrics = metrics.model_copy(update={"normalized": self.scores.normalized(index)})
            yield CheckpointReport(
                name=checkpoint.name,
                uri=checkpoint.uri,
                version=checkpoint.version,
                digest=checkpoint.digest,
                metrics=metrics,
                replay_url=None if error else replays.get(self.suite.envs[0].name),
                replays={} if error else replays,
                error=error,
                env_errors={} if error else self.env_errors.get(index, {}),
                comparisons=self.scores.comparisons(index, previous, self._identity),
            )
            if index in self.scores.scores:
                previous = index

    def _identity(self, index: int) -> CheckpointReport:
        checkpoint = self.entries[index].checkpoint
        return CheckpointReport(name=checkpoint.name, uri=checkpoint.uri, version=checkpoint.version,
                                digest=checkpoint.digest)  # fmt: skip

    def failures(self) -> list[str]:
        """`name (version): error` of each failed checkpoint, in the run's order."""
        return [
            f"{self.entries[i].checkpoint.name} ({self.entries[i].checkpoint.version}): {error}"
            for i, error in sorted(self.errors.items())
        ]

    def timing(
        self,
        wall_s: float,
        ray_init_s: float,
        evaluation_s: float,
        stats: list[WorkerStats],
        *,
        workers_start_s: float = 0.0,
        workers_replaced: int = 0,
    ) -> Timing:
        """The report's timing: the run's own figures (what the executor measured) with the collector's counts."""
        agent_steps = self.played_agent_steps
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return Timing(
            wall_s=wall_s,
            ray_init_s=ray_init_s,
            evaluation_s=evaluation_s,
            agent_steps=agent_steps,
            agent_steps_per_s=agent_steps / evaluation_s if evaluation_s > 0 else 0.0,
            episodes=self.episodes,
            episodes_cached=self.cached_episodes,
            policy_loads=sum(s.policy_loads for s in stats),
            workers=len(stats),
            workers_replaced=workers_replaced,
            workers_start_s=workers_start_s,
            driver_peak_rss_mb=usage.ru_maxrss / 1024,  # Linux reports KiB
            driver_cpu_s=usage.ru_utime + usage.ru_stime,
            units=self.units,
        )
