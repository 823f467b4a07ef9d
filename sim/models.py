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
        """Scatter tag tokens into a flat (batch, tags*H*W) one-hot grid; other tokens land in a dropped cell."""
        location = tokens[:, :, 0].long()
        feature = tokens[:, :, 1].long()
        value = tokens[:, :, 2].long()
        cells = self.num_tags * self.obs_height * self.obs_width
        valid = (feature == self.tag_feature_id) & (location != 0xFF) & (location != 0xFE)
        valid = valid & (value < self.num_tags)
        row = torch.div(location, 16, rounding_mode="floor")
        col = torch.remainder(location, 16)
        index = (value * self.obs_height + row) * self.obs_width + col
        index = torch.where(valid, index, torch.full_like(index, cells))
        grid = torch.zeros(tokens.shape[0], cells + 1, device=tokens.device)
        grid.scatter_(1, index, torch.ones_like(index, dtype=grid.dtype))
        return grid[:, :cells]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(self.encode(tokens))
