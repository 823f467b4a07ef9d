"""`MixedPolicy`: several policies playing the agents of the same episodes, still one forward per policy per step.

The runner drives one `BatchPolicy` over rows `[slot * agents, (slot + 1) * agents)` of its buffers. A mixed
line-up (`sim.lineup`) seats each policy on some agents of every episode, shuffled per episode, so a policy's
agents are scattered over those rows. `MixedPolicy` gives each distinct policy a row space of its own in which its
agents of slot `s` are the contiguous rows `[s * n, (s + 1) * n)` (n: its agents per episode), exactly the layout
the policy would see playing alone: its per-row state (recurrent memory, a navigator's heading) stays per agent,
its `Slot` is an ordinary slot, and nothing in the policy knows it is mixed. Each step gathers every policy's
observation (and noise) rows into its own buffer (`np.take` into memory allocated once), makes one call per
policy over its rows of all live episodes, and scatters the actions back.

A policy named twice in a line-up (the candidate also a co-player, or two co-players with the same bytes) is one
member playing both seats' agents: one instance never holds two row spaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from mettagrid.mettagrid_c import dtype_actions
from mettagrid.policy.policy_env_interface import PolicyEnvInterface

from sim.batch_policy import BatchPolicy, Slot, StepBatch, check_actions
from sim.lineup import seat_assignment


@dataclass
class _Member:
    """One distinct policy of the line-up and the line-up places (policy indices) it plays."""

    policy: BatchPolicy
    places: tuple[int, ...]
    per_episode: int
    """Its agents in each episode (the seat counts of its places, summed)."""
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Row r of its own space is row `rows[r]` of the runner's buffers."""
    slots: dict[int, Slot] = field(default_factory=dict)
    """Its own `Slot` of each runner slot index."""
    observations: np.ndarray | None = None
    noise: np.ndarray | None = None
    name: str = ""


class MixedPolicy(BatchPolicy):
    """`policies[i]` plays `counts[i]` agents of each episode (index 0: the candidate); seats from the episode seed."""

    def __init__(self, policies: Sequence[BatchPolicy], counts: Sequence[int], names: Sequence[str] = ()) -> None:
        self.counts = tuple(counts)
        self.names = tuple(names) or tuple(f"policy {place}" for place in range(len(counts)))
        self.num_agents = sum(self.counts)
        members: dict[int, _Member] = {}
        for place, (policy, count) in enumerate(zip(policies, counts, strict=True)):
            member = members.setdefault(id(policy), _Member(policy, (), 0, name=type(policy).__name__))
            member.places += (place,)
            member.per_episode += count
        self._members = [member for member in members.values() if member.per_episode]
        self._seats: dict[int, np.ndarray] = {}
        self._actions = np.zeros(0, dtype=dtype_actions)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return any(member.policy.stochastic for member in self._members)

    def seats(self, slot_index: int) -> np.ndarray:
        """(agents,) line-up place of each agent id of the episode in `slot_index`."""
        return self._seats[slot_index]

    def name_agents(self, slot: Slot) -> None:
        """Name each agent's policy where mettagrid's replay writer reads it (`policy_infos`, as mettagrid's
        rollout sets it), so the episode's replay says who played which agent."""
        context = getattr(slot.simulation, "_context", None)
        if isinstance(context, dict):
            seats = self._seats[slot.index]
            context["policy_infos"] = {agent: {"policy_name": self.names[seat]} for agent, seat in enumerate(seats)}

    def bind(self, env: PolicyEnvInterface) -> None:
        self._num_actions = len(env.action_names)
        for member in self._members:
            member.policy.bind(env)

    def start_episode(self, slot: Slot) -> None:
        """Seat the episode's agents, then start each member's own slot in line-up order (a member's draws from
        the episode's rng come in that order, before the runner draws the episode's noise)."""
        seats = seat_assignment(self.counts, slot.seed)
        self._seats[slot.index] = seats
        for member in self._members:
            agent_ids = np.flatnonzero(np.isin(seats, member.places))
            own = slice(slot.index * member.per_episode, (slot.index + 1) * member.per_episode)
            if member.rows.shape[0] < own.stop:
                member.rows = np.concatenate([member.rows, np.zeros(own.stop - member.rows.shape[0], np.int64)])
            member.rows[own] = slot.rows.start + agent_ids
            member.slots[slot.index] = Slot(
                index=slot.index,
                rows=own,
                simulation=slot.simulation,
                rng=slot.rng,
                seed=slot.seed,
                agent_ids=tuple(int(agent) for agent in agent_ids),
            )
            member.policy.start_episode(member.slots[slot.index])

    def act(self, batch: StepBatch) -> np.ndarray:
        rows = batch.observations.shape[0]
        episodes = rows // self.num_agents  # slots up to the last live one, as the runner's batch holds
        if self._actions.shape[0] < rows:
            self._actions = np.zeros(rows, dtype=dtype_actions)
        actions = self._actions[:rows]
        for member in self._members:
            own = episodes * member.per_episode
            index = member.rows[:own]
            observations = self._gathered(member, "observations", batch.observations, index)
            noise = None
            if batch.noise is not None and member.policy.stochastic:
                noise = self._gathered(member, "noise", batch.noise, index)
            slots = [member.slots[slot.index] for slot in batch.slots]
            chosen = member.policy.act(StepBatch(observations, noise, slots))
            actions[index] = check_actions(np.asarray(chosen), own, self._num_actions, member.name)
        return actions

    @staticmethod
    def _gathered(member: _Member, name: str, source: np.ndarray, index: np.ndarray) -> np.ndarray:
        """`source[index]` in the member's own buffer (grown, never shrunk: allocated once per run in practice)."""
        buffer = getattr(member, name)
        if buffer is None or buffer.shape[0] < index.shape[0] or buffer.shape[1:] != source.shape[1:]:
            buffer = np.zeros((max(index.shape[0], member.rows.shape[0]), *source.shape[1:]), dtype=source.dtype)
            setattr(member, name, buffer)
        out = buffer[: index.shape[0]]
        np.take(source, index, axis=0, out=out)
        return out
