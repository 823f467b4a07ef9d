"""The one interface the runner drives: a whole batch of agents' observations in, their actions out.

Every policy format (TorchScript, state-dict modules, mettagrid policies, scripted baselines) is adapted
to `BatchPolicy`, so the runner makes exactly one policy call per step for all agents of all the
environments it steps in lockstep.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from mettagrid.simulator.simulator import Simulation

from sim.errors import PolicyError


@dataclass
class Slot:
    """One running episode inside the runner's shared buffers: rows `rows` of every batch array."""

    index: int
    rows: slice
    simulation: Simulation
    rng: np.random.Generator
    """Seeded from the episode seed: any randomness a policy needs comes from here, never from a global.
    For a `stochastic` policy the runner draws the episode's noise from it in blocks of steps, right after
    `start_episode` and then every block, so draws a policy makes stay reproducible per episode."""
    seed: int = 0
    """The episode's seed (a mixed line-up's seats are drawn from it, `sim.lineup.seat_assignment`)."""
    agent_ids: tuple[int, ...] | None = None
    """The simulation's agent id of each of `rows`; None: rows are agents 0..n-1 in order (the candidate
    alone). In a mixed episode a policy's rows are its own agents only (`sim.mixed_policy`)."""

    @property
    def agents(self) -> tuple[int, ...]:
        """The simulation agent ids this slot's rows play, in row order."""
        return self.agent_ids if self.agent_ids is not None else tuple(range(self.rows.stop - self.rows.start))


@dataclass
class StepBatch:
    """What a policy sees at one step. Arrays are views of buffers the runner allocated once."""

    observations: np.ndarray
    """(agents, tokens, 3) uint8 mettagrid observation tokens, all slots concatenated."""
    noise: np.ndarray | None
    """(agents, actions) float32 standard Gumbel noise drawn from each slot's rng, when `stochastic`."""
    slots: list[Slot]


class BatchPolicy(ABC):
    """A loaded policy. `stochastic` policies get per-episode seeded Gumbel noise so that sampling is
    reproducible and independent of how episodes were batched together."""

    stochastic: bool = False

    def bind(self, env: PolicyEnvInterface) -> None:
        """Check the policy fits this environment interface (and precompute ids); raise PolicyError if not."""

    def start_episode(self, slot: Slot) -> None:
        """Reset any per-agent state held for the rows of `slot`."""

    @abstractmethod
    def act(self, batch: StepBatch) -> np.ndarray:
        """Return one action index per agent row, shape (agents,). The runner copies it into its action
        buffer before anything else runs, so it may be a view of a buffer the policy reuses every step."""


def check_actions(actions: np.ndarray, num_rows: int, num_actions: int, policy_name: str) -> np.ndarray:
    """Refuse malformed policy output before it reaches the simulator (which would index out of range)."""
    if actions.shape != (num_rows,):
        raise PolicyError(f"policy {policy_name} returned actions of shape {actions.shape}, expected ({num_rows},)")
    if num_rows and (actions.min() < 0 or actions.max() >= num_actions):
        raise PolicyError(f"policy {policy_name} returned action {int(actions.max())} outside [0, {num_actions - 1}]")
    return actions
