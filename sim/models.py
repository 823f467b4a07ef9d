"""Our torch policy architectures, named by `class_path` in bundles and `.pt` state-dict checkpoints.

The modules take mettagrid's raw observation tokens, uint8 `(batch, tokens, 3)`: `TokenGridMLP` returns
action logits `(batch, actions)` (the token decoding is inside the module, so a TorchScript export is
self-contained); `TokenGridLSTM` is recurrent and follows PufferLib's `forward_eval(tokens, state)`.
"""

from __future__ import annotations

import torch
from torch import nn


class TokenGrid(nn.Module):
    """Object-type occupancy of the egocentric window: uint8 tokens (batch, tokens, 3) -> a flat one-hot
    (batch, tags*H*W) grid. No parameters, so checkpoints of the modules using it hold only their layers."""

    def __init__(self, num_tags: int, tag_feature_id: int, obs_height: int = 13, obs_width: int = 13) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.tag_feature_id = tag_feature_id
        self.obs_height = obs_height
        self.obs_width = obs_width
        self.cells = num_tags * obs_height * obs_width

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Only the ~40 valid tokens of an observation (of 500) are widened to int64 and indexed: this was half
        of the forward's time when all tokens were (bench/breakdown.py)."""
        location, feature, value = tokens[:, :, 0], tokens[:, :, 1], tokens[:, :, 2]
        valid = (feature == self.tag_feature_id) & (location < 0xFE) & (value < self.num_tags)
        found = torch.nonzero(valid)
        batch, token = found[:, 0], found[:, 1]
        loc = location[batch, token].long()
        row = torch.div(loc, 16, rounding_mode="floor")
        index = (value[batch, token].long() * self.obs_height + row) * self.obs_width + torch.remainder(loc, 16)
        grid = torch.zeros(tokens.shape[0], self.cells, device=tokens.device)
        grid[batch, index] = 1.0
        return grid


class TokenGridMLP(nn.Module):
    """Object-type occupancy of the egocentric window (one-hot per tag) -> MLP -> action logits.

    Small on purpose (well under 1 MB of weights) so example checkpoints can live in the repository.
    """

    def __init__(
        self,
        num_tags: int,
        num_actions: int,
        tag_feature_id: int,
        obs_height: int = 13,
        obs_width: int = 13,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        self.grid = TokenGrid(num_tags, tag_feature_id, obs_height, obs_width)
        inputs = self.grid.cells
        self.net = nn.Sequential(
            nn.Linear(inputs, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_actions),
        )

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.grid(tokens)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(self.encode(tokens))


class TokenGridLSTM(nn.Module):
    """The recurrent version of `TokenGridMLP`: the same one-hot tag grid, a linear encoder, an LSTM cell that
    carries memory across steps (what mazes and the memory map need), and a linear action head.

    The recurrent module interface (`sim.torch_policy.TorchPolicy` drives it, and mettagrid's own networks
    follow the same PufferLib convention): `forward_eval(tokens, state)` takes one step for a batch of agent
    rows and returns `(logits, values)`. `state` is a dict named by `state_keys`; an entry is `None` or zeros
    when the row's episode starts (both mean "no memory yet"), and the module writes the new state tensors,
    batch first, back into the dict. Rows never interact, so any batch of rows gives each row the same
    result as a batch of one.
    """

    state_keys = ("lstm_h", "lstm_c")

    def __init__(
        self,
        num_tags: int,
        num_actions: int,
        tag_feature_id: int,
        obs_height: int = 13,
        obs_width: int = 13,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        self.grid = TokenGrid(num_tags, tag_feature_id, obs_height, obs_width)
        self.hidden = hidden
        self.encoder = nn.Sequential(nn.Linear(self.grid.cells, hidden), nn.ReLU())
        self.cell = nn.LSTMCell(hidden, hidden)
        self.action_head = nn.Linear(hidden, num_actions)
        self.value_head = nn.Linear(hidden, 1)

    def forward_eval(
        self, tokens: torch.Tensor, state: dict[str, torch.Tensor | None]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(self.grid(tokens))
        h, c = state.get("lstm_h"), state.get("lstm_c")
        h, c = self.cell(hidden, None if h is None or c is None else (h, c))
        state["lstm_h"], state["lstm_c"] = h, c
        return self.action_head(h), self.value_head(h)

    def forward_sequence(self, tokens: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Logits for a (time, batch, tokens, 3) sequence, state zeroed where `starts` (time, batch) is True:
        the unrolled form of `forward_eval` that training backpropagates through."""
        steps, batch = tokens.shape[:2]
        encoded = self.encoder(self.grid(tokens.reshape(steps * batch, *tokens.shape[2:]))).reshape(steps, batch, -1)
        h = c = encoded.new_zeros(batch, self.hidden)
        logits = []
        for t in range(steps):
            keep = (~starts[t]).float().unsqueeze(1)
            h, c = self.cell(encoded[t], (h * keep, c * keep))
            logits.append(self.action_head(h))
        return torch.stack(logits)
