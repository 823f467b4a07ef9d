"""Checkpoints -> work units, as their bytes arrive: the driver's side of streaming.

For each checkpoint the feed hands over, in the order downloads finish: ask the run's admission whether it
is taken (a sweep's leases; a plain run takes all), record it with the collector (its error, if the download
failed), take what the results store already holds, plan the episodes still missing, and pass them on with
the checkpoint's bytes as one `Batch`. When a checkpoint has nothing left to run (not admitted, failed, fully
cached, or its last unit reported) its place in the feed goes to the next download, so the number of
checkpoints held in memory is the feed's bound, whatever the run's size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from typing import Protocol

from actors.protocol import UnitResult, WorkUnit
from evaluator.reduce.adaptive import AdaptivePlanner
from evaluator.reduce.collector import Collector, Entry
from evaluator.reduce.sink import RunSink
from evaluator.run.checkpoint_feed import CheckpointFeed
from evaluator.run.plan import plan_checkpoint
from evaluator.sources import Checkpoint
from evaluator.store.episodes import EpisodeStore
from sim.suites import Suite

ProgressCallback = Callable[[int, int], None]
"""`(episodes settled, episodes in the run)`; settled = played, taken from the store, or failed."""


@dataclass(frozen=True)
class Batch:
    """One checkpoint's units and its bytes (held only as long as some of those units are unreported)."""

    digest: str
    data: bytes = field(repr=False)
    units: list[WorkUnit]


class Admission(Protocol):
    """Whether the run takes a checkpoint, decided as it arrives (downloaded: its digest and error known), before
    anything of it is planned. The sweep's admission takes a lease (`evaluator.run.sweep`); a plain run has
    none and takes every checkpoint. A checkpoint not taken is in no report and its place in the feed goes to
    the next download at once."""

    def admit(self, index: int, entry: Entry, suite: Suite) -> bool: ...


class UnitSource(Protocol):
    """What the scheduling loop (`evaluator.run.scheduler`) takes units from, whatever the executor."""

    def take(self, timeout: float | None = 0.0) -> list[Batch]: ...
    def exhausted(self) -> bool: ...
    def fetching(self) -> bool: ...


class UnitStream:
    """The `UnitSource` of an evaluation: checkpoints from the feed, planned as they arrive."""

    def __init__(
        self,
        feed: CheckpointFeed,
        collector: Collector,
        sink: RunSink,
        *,
        shard_size: int,
        replays: bool,
        store: EpisodeStore | None = None,
        reuse: bool = True,
        adaptive: AdaptivePlanner | None = None,
        admission: Admission | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """Episodes are taken from `store` when `reuse`; every one played goes to the sink (its replay and row
        written, recorded in the results store) before the collector reduces it.
        With `adaptive`, a checkpoint whose round is in gets another round of units for the environments that
        need more episodes (its bytes are kept until it is done), then the collector reduces it."""
        self.feed = feed
        self._adaptive = adaptive
        self._admission = admission
        self._data: dict[int, bytes] = {}
        """Bytes of checkpoints that may need another round (adaptive runs)."""
        self._rounds: list[Batch] = []
        """Next-round batches decided since the last `take`."""
        self._collector = collector
        self._sink = sink
        self._store = store if reuse else None
        self._shard_size = shard_size
        self._replays = replays
        self._on_progress = on_progress
        self._next_unit_id = 0
        self._unreported: Counter[int] = Counter()
        """Units not reported yet, per checkpoint index."""
        self._per_checkpoint = sum(env.episodes for env in collector.suite.envs)
        self.total_episodes = self._per_checkpoint * len(feed)
        self.settled_episodes = 0
        self._peeked: list[Batch] = []

    @property
    def suite(self) -> Suite:
        """The suite as this run plays it (its first round, for adaptive runs)."""
        return self._collector.suite

    def exhausted(self) -> bool:
        return not self._peeked and not self._rounds and self.feed.exhausted()

    def fetching(self) -> bool:
        return bool(self._peeked or self._rounds) or self.feed.fetching()

    def has_work(self) -> bool:
        """Whether any unit is to be run at all, waiting for the first checkpoint that has some (an evaluation
        that the results store answers entirely never starts Ray)."""
        self._peeked = self._peeked or self.take(timeout=None)
        return bool(self._peeked)

    def take(self, timeout: float | None = 0.0) -> list[Batch]:
        """Batches of checkpoints that arrived, waiting up to `timeout` s (None: until one has units to run or
        every checkpoint is handed out; [] then means nothing is left)."""
        batches, self._peeked, self._rounds = self._peeked + self._rounds, [], []
        while not batches:
            arrived = self.feed.arrived(timeout)
            for index, checkpoint in arrived:
                batch = self._batch(index, checkpoint)
                if batch is None:
                    self.feed.release()
                else:
                    batches.append(batch)
            if timeout is not None or not arrived and not self.feed.fetching():
                break  # every checkpoint handed out (or all resident ones are: the caller holds their units)
        self._progress()
        return batches

    def _batch(self, index: int, checkpoint: Checkpoint) -> Batch | None:
        if self._admission is not None:
            entry = Entry(self._collector.entries[index].policy_uri, checkpoint)
            if not self._admission.admit(index, entry, self._collector.suite):
                self._collector.leave_out(index, checkpoint)
                self.settled_episodes += self._per_checkpoint
                return None
        self._collector.fetched(index, checkpoint)
        if checkpoint.error:
            self.settled_episodes += self._per_checkpoint
            return None
        skip = self._take_stored(index, self._collector.suite, self._replays)
        self.settled_episodes += len(skip)
        units = plan_checkpoint(
            index,
            checkpoint,
            self._collector.suite,
            shard_size=self._shard_size,
            replays=self._replays,
            skip=skip,
            first_unit_id=self._next_unit_id,
        )
        if self._adaptive is not None:
            self._data[index] = checkpoint.data
            if not units:  # the first round is all stored: decide the next one now
                return self._round_done(index)
        return self._units(index, checkpoint.data, units)

    def _units(self, index: int, data: bytes, units: list[WorkUnit]) -> Batch | None:
        if not units:
            return None
        self._next_unit_id += len(units)
        self._unreported[index] = len(units)
        return Batch(units[0].checkpoint_digest, data, units)

    def _round_done(self, index: int) -> Batch | None:
        """The next round's units of checkpoint `index`, or None (and the checkpoint reduced) when every
        environment has enough episodes. Episodes the store already holds count without being played."""
        assert self._adaptive is not None
        suite, checkpoint = self._collector.suite, self._collector.entries[index].checkpoint
        while index not in self._collector.errors:
            kept = self._collector.results.get(index, [])
            grown = self._adaptive.next_round(suite, kept)
            if grown is None:
                break
            held = {(index, r.env, r.episode) for r in kept}
            self.total_episodes += sum(env.episodes for env in grown.envs) - len(kept)
            stored = self._take_stored(index, grown, False, held)
            self.settled_episodes += len(stored)
            units = plan_checkpoint(
                index, checkpoint, grown, shard_size=self._shard_size, replays=False, skip=held | stored,
                first_unit_id=self._next_unit_id,
            )  # fmt: skip
            if units:
                return self._units(index, self._data[index], units)
        self._collector.complete(index)
        self._data.pop(index, None)
        return None

    def _take_stored(
        self, index: int, suite: Suite, replays: bool, held: Set[tuple[int, str, int]] = frozenset()
    ) -> set[tuple[int, str, int]]:
        """The episodes of checkpoint `index` on `suite` the results store holds and that are not `held` already:
        their rows written by the sink, taken by the collector; their keys, which the plan then skips."""
        if self._store is None:
            return set()
        entry = self._collector.entries[index]
        stored = self._store.lookup(entry.checkpoint.digest, suite, replays)
        fresh = [r for r in stored.found if (index, r.env, r.episode) not in held]
        self._sink.write(index, entry, fresh)
        found_replays = {env.name: stored.replay_uris.get((env.name, 0)) for env in suite.envs} if replays else {}
        replay_uris = {env: uri for env, uri in found_replays.items() if uri}
        return self._collector.add_stored(index, fresh, replay_uris)

    def reported(self, unit: WorkUnit, result: UnitResult) -> None:
        """Record `unit`'s result (the sink writes, the collector reduces); the checkpoint's place in the feed is
        freed with its last unit."""
        replay_uris: list[str | None] = []
        if not result.error:
            replay_uris = self._sink.write(unit.checkpoint_index, self._collector.entries[unit.checkpoint_index],
                                           result.episodes)  # fmt: skip
            self._sink.record(unit, result.episodes, replay_uris)
        self._collector.add(unit, result, replay_uris)
        self.settled_episodes += len(unit.jobs)
        index = unit.checkpoint_index
        self._unreported[index] -= 1
        if not self._unreported[index]:
            del self._unreported[index]
            next_round = self._round_done(index) if self._adaptive is not None else None
            if next_round is None:
                self.feed.release()
            else:
                self._rounds.append(next_round)
        self._progress()

    def _progress(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.settled_episodes, self.total_episodes)
