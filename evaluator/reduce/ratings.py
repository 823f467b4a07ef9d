"""Ratings and cross-play from mixed episodes: who beat whom, and a skill estimate per policy (issue 24).

Every mixed episode is a small game among the policies seated in it: each policy's result is the mean reward of
the agents it played, and the episode ranks them by it (equal means are ties). Two figures come from these games:
- **ratings** with the `openskill` library's Plackett-Luce model (Weng-Lin; what Softmax's Coworld leagues offer
  beside Elo): mu, sigma and the ordinal mu - 3 sigma; and with the `elote` library's Elo (Coworld's default),
  which rates pairs: an episode of k policies is the k(k-1)/2 pairings in it, in line-up order, each a win, loss
  or tie by the same means. No rating arithmetic is written here. Updates are applied in one fixed order, sorted
  by (environment, episode, candidate's position in the run), never in the order episodes arrived, so the same
  episodes give the same numbers for any number of workers;
- the **cross-play matrix**: for each ordered pair (a, b) that met, a's mean reward in those episodes and the share
  of them a won; b's win share against a is computed from the same episodes, so w(a, b) + w(b, a) + ties = 1.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from elote import EloCompetitor
from openskill.models import PlackettLuce


@dataclass(frozen=True)
class Game:
    """One mixed episode as a game: `players` (digests, in line-up order, distinct) and each one's mean reward."""

    order: tuple
    """(environment, episode, candidate's position): the order updates are applied in."""
    players: tuple[str, ...]
    results: tuple[float, ...]


def game_of(order: tuple, places: Sequence[str], rewards_by_place: Sequence[Sequence[float]]) -> Game | None:
    """The game of an episode whose line-up place `i` is policy `places[i]` and earned `rewards_by_place[i]`
    (one reward per agent it played). A policy seated at two places is one player over all its agents; an
    episode with a single distinct policy is no game (None)."""
    pooled: dict[str, list[float]] = defaultdict(list)
    for player, rewards in zip(places, rewards_by_place, strict=True):
        pooled[player].extend(rewards)
    pooled = {player: rewards for player, rewards in pooled.items() if rewards}
    if len(pooled) < 2:
        return None
    players = tuple(pooled)
    return Game(order, players, tuple(sum(pooled[p]) / len(pooled[p]) for p in players))


@dataclass(frozen=True)
class Rated:
    player: str
    mu: float
    sigma: float
    ordinal: float
    elo: float
    games: int


def rate(games: Iterable[Game], by: str = "openskill") -> list[Rated]:
    """Plackett-Luce and Elo ratings after every game, in `Game.order`; best first by the openskill ordinal
    (`by="openskill"`) or by Elo (`by="elo"`), ties by player."""
    model = PlackettLuce()
    ratings: dict[str, object] = {}
    elos: dict[str, EloCompetitor] = {}
    played: dict[str, int] = defaultdict(int)
    for game in sorted(games, key=lambda g: g.order):
        teams = [[ratings.setdefault(player, model.rating(name=player))] for player in game.players]
        # Rank 1 is the best; equal mean rewards share a rank (a tie).
        distinct = sorted(set(game.results), reverse=True)
        ranks = [distinct.index(result) + 1 for result in game.results]
        for player, (updated,) in zip(game.players, model.rate(teams, ranks=ranks), strict=True):
            ratings[player] = updated
            played[player] += 1
        _elo_pairings(game, elos)
    found = [
        Rated(player, float(r.mu), float(r.sigma), float(r.ordinal()), float(elos[player].rating), played[player])  # type: ignore[attr-defined]
        for player, r in ratings.items()
    ]
    key = (lambda r: (-r.elo, r.player)) if by == "elo" else (lambda r: (-r.ordinal, r.player))
    return sorted(found, key=key)


def _elo_pairings(game: Game, elos: dict[str, EloCompetitor]) -> None:
    """One game as elote's pairwise results: every pair of its players in line-up order, by their mean rewards."""
    for i, a in enumerate(game.players):
        for j in range(i + 1, len(game.players)):
            b = game.players[j]
            first, second = elos.setdefault(a, EloCompetitor()), elos.setdefault(b, EloCompetitor())
            if game.results[i] > game.results[j]:
                first.beat(second)
            elif game.results[i] < game.results[j]:
                second.beat(first)
            else:
                first.tied(second)


@dataclass(frozen=True)
class Meeting:
    """Ordered pair (a, b): a's mean reward in their games, and the shares of them a won, lost and tied."""

    a: str
    b: str
    games: int
    mean_reward: float
    win_rate: float
    loss_rate: float
    tie_rate: float


def cross_play(games: Iterable[Game]) -> list[Meeting]:
    """Every ordered pair of players that met in a game, from the same games for (a, b) and (b, a)."""
    rewards: dict[tuple[str, str], list[float]] = defaultdict(list)
    outcomes: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for game in games:
        for i, a in enumerate(game.players):
            for j, b in enumerate(game.players):
                if i == j:
                    continue
                rewards[(a, b)].append(game.results[i])
                mine, theirs = game.results[i], game.results[j]
                outcomes[(a, b)][0 if mine > theirs else 1 if mine < theirs else 2] += 1
    meetings = []
    for (a, b), found in sorted(rewards.items()):
        won, lost, tied = outcomes[(a, b)]
        n = len(found)
        meetings.append(Meeting(a, b, n, sum(found) / n, won / n, lost / n, tied / n))
    return meetings
