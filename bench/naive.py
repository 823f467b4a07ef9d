"""The naive way to evaluate a checkpoint on mettagrid, as the benchmark's baseline (b).

One environment at a time, and the policy asked once per agent per step through mettagrid's per-agent
interface: `AgentPolicy.step(AgentObservation) -> Action`, `SimulationAgent.set_action`, then
`Simulation.step()`. This is `mettagrid.simulator.rollout.Rollout`'s path without its per-agent timeout
and tracing bookkeeping, so it is a lower bound on the naive cost (it flatters the baseline, not us).

The MLP is the same module `sim.policies.load_policy` builds; each `AgentObservation` is turned back into
the (tokens, 3) uint8 array the module takes, and actions are sampled with the same per-episode Gumbel
noise stream as `sim.runner` (one (agents, actions) draw per step from `default_rng(seed)`), so both paths
play the same episodes up to float rounding of a batch-of-one forward.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from mettagrid.policy.policy import AgentPolicy, MultiAgentPolicy
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from mettagrid.simulator import Action, AgentObservation
from mettagrid.simulator.simulator import Simulation

from sim.envs import build_config
from sim.metrics import EpisodeResult
from sim.runner import EpisodeJob


class NaiveMLPPolicy(MultiAgentPolicy):
    """A mettagrid `MultiAgentPolicy` around a tokens -> logits module; `noise` is set by the episode loop."""

    def __init__(self, policy_env_info: PolicyEnvInterface, module: torch.nn.Module) -> None:
        super().__init__(policy_env_info)
        self.module = module.eval()
        self.noise = np.zeros((1, len(policy_env_info.action_names)), dtype=np.float32)

    def agent_policy(self, agent_id: int) -> AgentPolicy:
        return NaiveMLPAgent(self, agent_id)


class NaiveMLPAgent(AgentPolicy):
    def __init__(self, parent: NaiveMLPPolicy, agent_id: int) -> None:
        super().__init__(parent.policy_env_info)
        self._parent = parent
        self._agent_id = agent_id
        self._actions = parent.policy_env_info.action_names
        self._num_tokens = parent.policy_env_info.observation_shape[0]

    def step(self, obs: AgentObservation) -> Action:
        tokens = np.full((1, self._num_tokens, 3), 0xFF, dtype=np.uint8)
        for index, token in enumerate(obs.tokens):
            tokens[0, index] = token.raw_token
        with torch.inference_mode():
            logits = self._parent.module(torch.from_numpy(tokens)).float()[0]
            noise = torch.from_numpy(self._parent.noise[self._agent_id])
            action = int((logits + noise).argmax())
        return Action(name=self._actions[action])


def play_naive(
    module: torch.nn.Module, jobs: list[EpisodeJob], timers: dict[str, float] | None = None
) -> list[EpisodeResult]:
    """Play `jobs` one after another, one policy call per agent per step. With `timers`, seconds spent in
    each phase are added to it (bench/breakdown.py); the timed loop is the same loop."""
    clock = _Clock(timers)
    results = []
    for job in jobs:
        clock.start()
        config = build_config(job.env, job.seed)
        interface = PolicyEnvInterface.from_mg_cfg(config)
        policy = NaiveMLPPolicy(interface, module)
        simulation = Simulation(config, seed=job.seed)
        agents = [policy.agent_policy(agent_id) for agent_id in range(simulation.num_agents)]
        for agent in agents:
            agent.reset()
        rng = np.random.default_rng(job.seed)
        shape = (simulation.num_agents, len(interface.action_names))
        clock.lap("construct")
        while not simulation.is_done():
            policy.noise = rng.gumbel(size=shape).astype(np.float32)
            clock.lap("is_done + noise")
            for agent_id, agent in enumerate(agents):
                handle = simulation.agent(agent_id)
                observation = handle.observation
                clock.lap("AgentObservation")
                action = agent.step(observation)
                clock.lap("AgentPolicy.step (tokens + forward of 1 row)")
                handle.set_action(action)
                clock.lap("set_action")
            simulation.step()
            clock.lap("Simulation.step")
        results.append(
            EpisodeResult(
                env=job.env.name,
                episode=job.episode,
                seed=job.seed,
                rewards=tuple(float(r) for r in simulation.episode_rewards),
                steps=int(simulation.current_step),
            )
        )
        simulation.close()
    return results


class _Clock:
    """Adds the seconds between laps to `timers[name]`; free when `timers` is None."""

    def __init__(self, timers: dict[str, float] | None) -> None:
        self._timers = timers
        self._last = 0.0

    def start(self) -> None:
        if self._timers is not None:
            self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self._timers is not None:
            now = time.perf_counter()
            self._timers[name] = self._timers.get(name, 0.0) + now - self._last
            self._last = now
