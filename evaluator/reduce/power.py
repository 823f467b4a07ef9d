"""Power analysis before spending (`run --plan-only`): how many episodes a comparison or a target interval needs,
from the spread of an environment's episode scores.

Normal approximations, stated so a reader can check them:
- a score's 95% interval half-width with n episodes is about 1.96 sigma / sqrt(n), so `--target-ci T` needs about
  (1.96 sigma / T)^2 episodes (the adaptive rule, issue 14, doubles from `--min-episodes` until its BCa interval
  is that narrow, so it uses between this and twice this, capped by `--max-episodes`);
- telling two checkpoints apart by a difference d at 95% confidence and 80% power, each playing n episodes of the
  same seeds, needs about ((1.96 + 0.84) sigma_d / d)^2 episodes, with sigma_d = sqrt(2) sigma (no credit taken
  for the pairing: an upper bound when the two policies' episode scores are positively correlated).
The default difference is 0.1 of the environment's score spread (the range of its stored episode scores).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, Field

Z_95 = 1.959963984540054
Z_80 = 0.8416212335729143
DEFAULT_SPREAD_FRACTION = 0.1


class EnvironmentPlan(BaseModel):
    env: str
    samples: int = Field(description="episode scores the estimate is made from")
    sigma: float = Field(description="standard deviation of an episode's score")
    spread: float = Field(description="range of the episode scores (max - min)")
    difference: float = Field(description="the difference to tell apart (default: 0.1 x spread)")
    episodes_for_difference: int | None = Field(description="per checkpoint, at 95% confidence and 80% power")
    episodes_for_target_ci: int | None = Field(description="per checkpoint, for --target-ci's half-width")


class PowerPlan(BaseModel):
    """What `--plan-only` prints: nothing was evaluated, only estimated."""

    suite: str
    source: str = Field(description="where the spread came from: the results database, or a pilot run")
    checkpoints: int
    target_ci: float | None
    environments: list[EnvironmentPlan]
    episodes_for_difference: int = Field(description="summed over environments, per checkpoint")
    episodes_for_target_ci: int | None
    total_episodes: int = Field(description="for every checkpoint, the larger of the two needs")


def plan_power(
    suite: str,
    samples: Mapping[str, Sequence[float]],
    checkpoints: int,
    source: str,
    target_ci: float | None = None,
    difference: float | None = None,
    max_episodes: int = 100_000,
) -> PowerPlan:
    plans = []
    for env, scores in samples.items():
        values = np.asarray(scores, dtype=np.float64)
        sigma = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        spread = float(values.max() - values.min()) if len(values) else 0.0
        wanted = difference if difference is not None else DEFAULT_SPREAD_FRACTION * spread
        for_difference = _episodes((Z_95 + Z_80) * math.sqrt(2) * sigma, wanted, max_episodes)
        for_target = None if target_ci is None else _episodes(Z_95 * sigma, target_ci, max_episodes)
        plans.append(EnvironmentPlan(
            env=env, samples=len(values), sigma=sigma, spread=spread, difference=wanted,
            episodes_for_difference=for_difference, episodes_for_target_ci=for_target,
        ))  # fmt: skip
    per_difference = sum(p.episodes_for_difference or 0 for p in plans)
    per_target = None if target_ci is None else sum(p.episodes_for_target_ci or 0 for p in plans)
    need = max(per_difference, per_target or 0)
    return PowerPlan(
        suite=suite, source=source, checkpoints=checkpoints, target_ci=target_ci, environments=plans,
        episodes_for_difference=per_difference, episodes_for_target_ci=per_target, total_episodes=need * checkpoints,
    )  # fmt: skip


def _episodes(scale: float, width: float, cap: int) -> int | None:
    """ceil((scale / width)^2), at least 2 (an interval needs two episodes); None when nothing varies (no width
    can be told from zero spread: one episode shows it all) or the width asked is 0."""
    if scale == 0:
        return 2
    if width <= 0:
        return None
    return max(2, min(cap, math.ceil((scale / width) ** 2)))
