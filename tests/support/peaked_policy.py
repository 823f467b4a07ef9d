"""A mettagrid policy class whose every action is a deterministic function of the observation, for comparing our
batched play with mettagrid's own per-agent path action by action.

`PeakedNet.forward_eval` puts a logit of 1e4 on one action, `key(observation) mod actions`, and 0 on the rest: the
Gumbel noise our runner adds for sampling (a few units at most) never moves the argmax, so the batched path
(`TorchPolicy` over `network()`) and mettagrid's per-agent path (`agent_policy(i).step`, which rebuilds the token
array from `AgentObservation.tokens` and takes the argmax of the same network) must choose the same action for the
same observation. `salt` makes two instances two different policies (different actions on the same observation).

`PeakedPerAgentPolicy` is the same policy without `network()`: our loader can only drive it agent by agent
(`sim.mettagrid_policies.PerAgentPolicy`).
"""

from __future__ import annotations

import numpy as np
import torch
from mettagrid.policy.policy import AgentPolicy, MultiAgentPolicy
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from mettagrid.simulator import Action, AgentObservation

EMPTY = 0xFF
PEAK = 1e4


class PeakedNet(torch.nn.Module):
    """`forward_eval(tokens, state) -> (logits, values)`: logits `PEAK * one_hot(key(tokens) mod num_actions)`.

    The key hashes the valid tokens (location != 0xFF, up to the first empty feature id, exactly the tokens
    mettagrid's `AgentObservation` holds) with their position and `salt`."""

    def __init__(self, num_actions: int, salt: int) -> None:
        super().__init__()
        self.num_actions = num_actions
        self.salt = salt

    def key(self, tokens: torch.Tensor) -> torch.Tensor:
        values = tokens.long()
        location, feature, value = values[..., 0], values[..., 1], values[..., 2]
        valid = torch.cumprod((feature != EMPTY).long(), dim=1) * (location != EMPTY).long()
        position = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
        mixed = (location * 131 + feature * 31 + value * 7 + self.salt * 17) * (position * 2 + self.salt)
        return ((valid * mixed).sum(dim=1) + self.salt * 5) % self.num_actions

    def forward_eval(self, tokens: torch.Tensor, state=None) -> tuple[torch.Tensor, torch.Tensor]:
        logits = PEAK * torch.nn.functional.one_hot(self.key(tokens), self.num_actions).float()
        return logits, torch.zeros((tokens.shape[0], 1))

    def forward(self, tokens: torch.Tensor, state=None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_eval(tokens, state)


class PeakedAgentPolicy(AgentPolicy):
    """mettagrid's per-agent path: the observation's tokens as a (1, tokens, 3) array, padded with 0xFF."""

    def __init__(self, policy_env_info: PolicyEnvInterface, net: PeakedNet) -> None:
        super().__init__(policy_env_info)
        self._net = net
        self._shape = tuple(policy_env_info.observation_space.shape)
        self._names = list(policy_env_info.action_names)

    def step(self, obs: AgentObservation) -> Action:
        tokens = np.full((1, *self._shape), EMPTY, dtype=np.uint8)
        for index, token in enumerate(obs.tokens[: self._shape[0]]):
            tokens[0, index, : len(token.raw_token)] = token.raw_token
        with torch.no_grad():
            logits, _ = self._net.forward_eval(torch.from_numpy(tokens))
        return Action(name=self._names[int(logits.argmax(dim=1)[0])])


class PeakedPolicy(MultiAgentPolicy):
    def __init__(self, policy_env_info: PolicyEnvInterface, salt: int = 1, device: str = "cpu") -> None:
        super().__init__(policy_env_info, device=device)
        self._net = PeakedNet(len(policy_env_info.action_names), salt)

    def network(self) -> torch.nn.Module:
        return self._net

    def agent_policy(self, agent_id: int) -> AgentPolicy:
        return PeakedAgentPolicy(self.policy_env_info, self._net)


class PeakedPerAgentPolicy(PeakedPolicy):
    """The same actions, but no network: only the per-agent path can play it."""

    def network(self) -> None:  # type: ignore[override]
        return None
