"""Torch policy architectures that `.pt` state-dict checkpoints may name in `class_path`.

The modules take mettagrid's raw observation tokens, uint8 `(batch, tokens, 3)`, and return action logits
`(batch, actions)`: the token decoding is inside the module, so a TorchScript export is self-contained.
"""

from __future__ import annotations

import torch
from torch import nn


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
        self.num_tags = num_tags
        self.tag_feature_id = tag_feature_id
        self.obs_height = obs_height
        self.obs_width = obs_width
        inputs = num_tags * obs_height * obs_width
        self.net = nn.Sequential(
            nn.Linear(inputs, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_actions),
        )

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Scatter the tag tokens into a flat (batch, tags*H*W) one-hot grid. Only the ~40 valid tokens of an
        observation (of 500) are widened to int64 and indexed: this was half of the forward's time when all
        tokens were (bench/breakdown.py)."""
        location, feature, value = tokens[:, :, 0], tokens[:, :, 1], tokens[:, :, 2]
        cells = self.num_tags * self.obs_height * self.obs_width
        valid = (feature == self.tag_feature_id) & (location < 0xFE) & (value < self.num_tags)
        found = torch.nonzero(valid)
        batch, token = found[:, 0], found[:, 1]
        loc = location[batch, token].long()
        row = torch.div(loc, 16, rounding_mode="floor")
        index = (value[batch, token].long() * self.obs_height + row) * self.obs_width + torch.remainder(loc, 16)
        grid = torch.zeros(tokens.shape[0], cells, device=tokens.device)
        grid[batch, index] = 1.0
        return grid

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(self.encode(tokens))
