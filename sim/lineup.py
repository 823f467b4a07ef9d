"""Who plays which agent of a mixed episode: the candidate (the checkpoint being evaluated) and co-players.

cogames (`cogames run -p URI[,proportion=N]`) and mettagrid's `run_multi_episode_rollout` seat several policies in
one episode: agents are split between them by largest remainder over their proportions, and the seats are
shuffled every episode. We do the same, with two choices of our own:
- the candidate always gets at least one agent (a line-up that leaves the evaluated policy out scores nothing);
- the shuffle is drawn from the episode's own seed (a stream of its own, so the policies' and the noise's draws
  from the episode's rng are unchanged), so an episode's seats never depend on workers, shards or lockstep width.

A co-player is named by URI and, once the driver has fetched it, by the digest of its bytes: the env's spec hash
covers digests, proportions and the candidate's share (never the URI: the same bytes under another name are the
same line-up), so stored episodes are never reused for another line-up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

CANDIDATE = 0
"""The candidate's policy index in a line-up: co-player `i` (0-based, in the env's order) is `i + 1`."""

SEAT_STREAM = 0x5EA7
"""Mixed into the episode seed for the seat shuffle, so it draws from a stream no policy uses."""


class CoPlayer(BaseModel):
    """A policy that plays some of an episode's agents beside the candidate (`--npc URI[,proportion=N]`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str = Field(min_length=1)
    proportion: float = Field(default=1.0, gt=0, le=1_000, allow_inf_nan=False)
    digest: str = Field(default="", description="sha256 of the policy's bytes; set by the driver when fetched")


def parse_co_player(text: str) -> CoPlayer:
    """`URI[,proportion=N]` as cogames writes it; raises ValueError with the reason."""
    uri, _, rest = text.strip().partition(",")
    if not uri:
        raise ValueError(f"co-player {text!r} has no URI")
    proportion = 1.0
    for option in filter(None, (part.strip() for part in rest.split(","))):
        key, _, value = option.partition("=")
        if key.strip() != "proportion":
            raise ValueError(f"co-player {text!r}: unknown option {key.strip()!r} (known: proportion)")
        try:
            proportion = float(value)
        except ValueError:
            raise ValueError(f"co-player {text!r}: proportion {value!r} is not a number") from None
        if not (math.isfinite(proportion) and 0 < proportion <= 1_000):
            raise ValueError(f"co-player {text!r}: proportion must be in (0, 1000]")
    return CoPlayer(uri=uri, proportion=proportion)


def policy_shares(candidate_share: float | None, co_players: Sequence[CoPlayer]) -> list[float]:
    """Each policy's share of the agents, candidate first. Without an explicit candidate share the candidate
    weighs proportion 1 beside the co-players' proportions (cogames' default); with one, the co-players split
    the rest by their proportions."""
    if not co_players:
        return [1.0]
    total = sum(player.proportion for player in co_players)
    if candidate_share is None:
        return [1.0 / (1.0 + total)] + [player.proportion / (1.0 + total) for player in co_players]
    rest = 1.0 - candidate_share
    return [candidate_share] + [rest * player.proportion / total for player in co_players]


def seat_counts(num_agents: int, shares: Sequence[float], candidate_min: int = 1) -> tuple[int, ...]:
    """Agents per policy by largest remainder (ties to the earlier policy); the candidate gets at least
    `candidate_min` (one, unless the line-up is the co-players alone), taken from the policy holding the most
    seats (the last such on a tie)."""
    total = sum(shares)
    quotas = [num_agents * share / total for share in shares]
    counts = [math.floor(quota) for quota in quotas]
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: num_agents - sum(counts)]:
        counts[i] += 1
    if counts[CANDIDATE] < candidate_min:
        donor = max(range(1, len(counts)), key=lambda i: (counts[i], i))
        counts[donor] -= 1
        counts[CANDIDATE] += 1
    return tuple(counts)


def seat_assignment(counts: Sequence[int], seed: int) -> np.ndarray:
    """(agents,) policy index of each agent id for the episode of `seed`: `counts[p]` agents for policy p, in
    an order shuffled by the episode's own seed."""
    seats = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng([seed, SEAT_STREAM]).shuffle(seats)
    return seats


VOR_VARIANT = ".vor.k"
"""`<env>.vor.k<K>`: the variant of `<env>` where the candidate plays K agents and the pool the rest."""


def vor_seats(num_agents: int) -> tuple[int, ...]:
    """The candidate's agent counts value over replacement plays (cogames' scenarios n, n/2 and 1), then the
    pool alone (0)."""
    return tuple(sorted({num_agents, max(1, num_agents // 2), 1, 0}, reverse=True))


def vor_variant(env_name: str, seats: int) -> str:
    return f"{env_name}{VOR_VARIANT}{seats}"
