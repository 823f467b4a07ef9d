"""mettagrid `MultiAgentPolicy` classes as `BatchPolicy`: the fastest adapter that fits each class.

mettagrid builds a policy for one environment interface (`policy_env_info`), so the class is built at
`bind`, once per interface (observation shape and action names; the agent count does not change the
network), then driven by the first adapter that fits, in order of speed:
1. `network()` following PufferLib's `forward_eval(observations, state)` (mettagrid's `lstm`, `stateless`,
   `puffer`): the network runs on our batched `TorchPolicy`, all rows in one call, recurrent state rows per
   agent, sampling from the runner's per-episode noise;
2. `step_batch(raw_observations, raw_actions)` where the class implements it: one call per episode per step
   on the episode's raw observation rows, one policy instance per lockstep slot (its state is per agent);
3. the per-agent path (`agent_policy(i).step(obs)` on mettagrid's observation objects): correct for any
   class, 0.3-1.2 ms per agent-step (BENCHMARKS.md), logged once per checkpoint as slow. Such policies sample
   from global RNGs (torch's, numpy's, Python's); each slot keeps its own copies, seeded from the episode
   seed, so their reports too do not depend on how episodes were batched or spread over workers.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import numpy as np
import torch
from mettagrid.mettagrid_c import dtype_actions
from mettagrid.policy.loader import initialize_or_load_policy
from mettagrid.policy.policy import AgentPolicy, MultiAgentPolicy, PolicySpec
from mettagrid.policy.policy_env_interface import PolicyEnvInterface

from sim.batch_policy import BatchPolicy, Slot, StepBatch
from sim.errors import PolicyError, first_line
from sim.torch_policy import TorchPolicy

logger = logging.getLogger(__name__)


def build_policy(
    uri: str, spec: PolicySpec, env: PolicyEnvInterface, weights: dict[str, torch.Tensor] | None, device: str
) -> MultiAgentPolicy:
    """Build the class as mettagrid's loader does; weights we read ourselves (safetensors or weights_only)
    go into its `network()`, any other data file goes through the class's own `load_policy_data`."""
    own_data = spec.data_path if weights is None else None
    try:
        policy = initialize_or_load_policy(env, spec.model_copy(update={"data_path": own_data}), device_override=device)
    except Exception as exc:
        raise PolicyError(f"{uri}: mettagrid policy {spec.class_path} failed to load: {first_line(exc)}") from None
    if weights is not None:
        network = policy.network()
        if network is None:
            raise PolicyError(f"{uri}: {spec.class_path} has no network() to take the bundle's weights")
        try:
            network.load_state_dict(weights)
        except Exception as exc:
            raise PolicyError(f"{uri}: weights do not fit {spec.class_path}: {first_line(exc)}") from None
    return policy


def _implements_step_batch(policy: MultiAgentPolicy) -> bool:
    return type(policy).step_batch is not MultiAgentPolicy.step_batch


class MettagridBundlePolicy(BatchPolicy):
    """A mettagrid class from a bundle (or a registered short name), adapted at `bind` (see module doc)."""

    def __init__(
        self,
        uri: str,
        spec: PolicySpec,
        weights: dict[str, torch.Tensor] | None,
        device: str,
    ) -> None:
        self._uri, self._spec, self._weights, self._device = uri, spec, weights, device
        self._adapters: dict[tuple, BatchPolicy] = {}
        self._active: BatchPolicy | None = None
        self._warned_slow = False

    @property
    def adapter(self) -> BatchPolicy:
        """The adapter chosen for the interface bound last (tests and benchmarks read its type)."""
        assert self._active is not None, "bind() first"
        return self._active

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self._active is not None and self._active.stochastic

    def bind(self, env: PolicyEnvInterface) -> None:
        key = (tuple(env.observation_shape), tuple(env.action_names))
        if key not in self._adapters:
            self._adapters[key] = self._choose(env)
        self._active = self._adapters[key]
        self._active.bind(env)

    def _choose(self, env: PolicyEnvInterface) -> BatchPolicy:
        policy = build_policy(self._uri, self._spec, env, self._weights, self._device)
        network = policy.network()
        if network is not None and callable(getattr(network, "forward_eval", None)):
            # mettagrid builds on `device` only when init_kwargs name one: move the network there ourselves.
            return TorchPolicy(network.to(self._device), self._uri, self._device)
        if _implements_step_batch(policy):
            return StepBatchPolicy(
                self._uri, lambda: build_policy(self._uri, self._spec, env, self._weights, self._device)
            )
        if not self._warned_slow:
            self._warned_slow = True
            logger.warning(
                "%s: %s has neither a forward_eval network nor step_batch; evaluating it agent by agent "
                "(mettagrid's lstm class: 16x slower than batched, BENCHMARKS.md)",
                self._uri,
                self._spec.class_path,
            )
        return PerAgentPolicy(self._uri, self._spec, self._device, policy)

    def start_episode(self, slot: Slot) -> None:
        self.adapter.start_episode(slot)

    def act(self, batch: StepBatch) -> np.ndarray:
        return self.adapter.act(batch)


class StepBatchPolicy(BatchPolicy):
    """mettagrid's raw-buffer fast path: `step_batch` per episode, on that episode's rows of the runner's
    buffer. One policy instance per slot, reset when its episode starts, so agent ids stay the episode's.

    In a mixed episode the policy plays only some agents (`Slot.agent_ids`), while mettagrid's classes (the Nim
    scripted agents among them) expect every agent of the episode, in id order: their rows are placed at their
    ids in a whole-episode buffer (the others' observations empty), and only their actions are taken back."""

    def __init__(self, uri: str, build: Callable[[], MultiAgentPolicy]) -> None:
        self._uri = uri
        self._build = build
        self._by_slot: dict[int, MultiAgentPolicy] = {}
        self._actions = np.zeros(0, dtype=dtype_actions)
        self._episodes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        """Per slot, for mixed episodes: (observations, actions) of every agent of the episode."""

    def start_episode(self, slot: Slot) -> None:
        if slot.index not in self._by_slot:
            self._by_slot[slot.index] = self._build()
        self._by_slot[slot.index].reset()

    def act(self, batch: StepBatch) -> np.ndarray:
        rows = batch.observations.shape[0]
        if self._actions.shape[0] < rows:
            self._actions = np.zeros(rows, dtype=dtype_actions)
        actions = self._actions[:rows]
        for slot in batch.slots:
            try:
                if slot.agent_ids is None:
                    self._by_slot[slot.index].step_batch(batch.observations[slot.rows], actions[slot.rows])
                    continue
                observations, chosen = self._whole_episode(slot, batch.observations.shape[1:])
                ids = list(slot.agent_ids)
                observations.fill(0xFF)
                observations[ids] = batch.observations[slot.rows]
                self._by_slot[slot.index].step_batch(observations, chosen)
                actions[slot.rows] = chosen[ids]
            except Exception as exc:
                raise PolicyError(f"policy {self._uri}: step_batch failed: {first_line(exc)}") from None
        return actions

    def _whole_episode(self, slot: Slot, obs_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        agents = slot.simulation.num_agents
        held = self._episodes.get(slot.index)
        if held is None or held[0].shape != (agents, *obs_shape):
            held = (np.full((agents, *obs_shape), 0xFF, dtype=np.uint8), np.zeros(agents, dtype=dtype_actions))
            self._episodes[slot.index] = held
        return held


class PerAgentPolicy(BatchPolicy):
    """mettagrid's per-agent path: `AgentPolicy.step` on the simulation's observation objects, the last
    resort. Each slot owns the global RNG states its agents draw from (seeded from the episode's rng) and
    swaps them in around its agents' steps: ~10 us per slot per step, small next to ~300 us per agent."""

    def __init__(self, uri: str, spec: PolicySpec, device: str, policy: MultiAgentPolicy) -> None:
        self._uri, self._spec, self._device = uri, spec, device
        self._by_agent_count: dict[int, MultiAgentPolicy] = {}
        self._first = policy
        self._agents: dict[int, list[AgentPolicy]] = {}
        self._rng_states: dict[int, tuple] = {}

    def bind(self, env: PolicyEnvInterface) -> None:
        self._action_index = env.action_name_to_flat_index

    def start_episode(self, slot: Slot) -> None:
        num_agents = slot.simulation.num_agents
        if num_agents not in self._by_agent_count:
            if self._first.policy_env_info.num_agents == num_agents:
                self._by_agent_count[num_agents] = self._first
            else:
                env = PolicyEnvInterface.from_mg_cfg(slot.simulation.config)
                self._by_agent_count[num_agents] = build_policy(self._uri, self._spec, env, None, self._device)
        policy = self._by_agent_count[num_agents]
        seed = int(slot.rng.integers(2**31))
        self._rng_states[slot.index] = _seeded_rng_states(seed)
        with _SlotRngs(self._rng_states, slot.index):
            self._agents[slot.index] = [policy.agent_policy(agent_id) for agent_id in slot.agents]
            for agent in self._agents[slot.index]:
                agent.reset()

    def act(self, batch: StepBatch) -> np.ndarray:
        actions = np.zeros(batch.observations.shape[0], dtype=np.int64)
        for slot in batch.slots:
            with _SlotRngs(self._rng_states, slot.index):
                for row, (agent_id, agent) in enumerate(zip(slot.agents, self._agents[slot.index], strict=True)):
                    try:
                        action = agent.step(slot.simulation.agent(agent_id).observation)
                    except Exception as exc:
                        raise PolicyError(f"policy {self._uri}: step failed: {first_line(exc)}") from None
                    actions[slot.rows.start + row] = self._action_index[action.name]
        return actions


def _seeded_rng_states(seed: int) -> tuple:
    """The three global RNG states a fresh process seeded with `seed` would have."""
    saved = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    states = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    torch.set_rng_state(saved[0])
    np.random.set_state(saved[1])
    random.setstate(saved[2])
    return states


class _SlotRngs:
    """Swap a slot's RNG states in for the duration of its agents' steps, and save them back after."""

    def __init__(self, states: dict[int, tuple], index: int) -> None:
        self._states, self._index = states, index

    def __enter__(self) -> None:
        self._saved = (torch.get_rng_state(), np.random.get_state(), random.getstate())
        torch_state, numpy_state, python_state = self._states[self._index]
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)

    def __exit__(self, *exc: object) -> None:
        self._states[self._index] = (torch.get_rng_state(), np.random.get_state(), random.getstate())
        torch.set_rng_state(self._saved[0])
        np.random.set_state(self._saved[1])
        random.setstate(self._saved[2])
