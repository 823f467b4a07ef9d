"""The run's line-ups: which co-players play beside the evaluated checkpoints in which environments, fetched once.

Co-players come from `--npc URI[,proportion=N]` (NPC_POLICY_URI) for every environment of at least 2 agents, or
from an environment's own `npcs` in a suite file (which win). Each URI is resolved like a policy to evaluate
(any source: a file, s3://, wandb://, builtin://), its latest checkpoint fetched once here, and named in the env
by the digest of its bytes (`sim.lineup`): that digest is part of the env's spec hash, so stored episodes are never
reused for another line-up. The bytes go to every worker once, when it starts (`actors.eval_worker`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from pydantic import ValidationError

from actors.protocol import CoPlayerBytes
from evaluator.config import Play, Seating
from evaluator.secrets import redact_url
from evaluator.sources import Candidate, SourceSettings, fetch, list_candidates
from sim.envs import EnvSpec
from sim.errors import UsageError, validation_line
from sim.lineup import CoPlayer, parse_co_player, vor_seats, vor_variant
from sim.suites import Suite

MAX_SUITE_LABEL = 200
"""The results database's `runs.suite` column is 200 characters."""


MAX_CROSS_PLAY_POLICIES = 24
"""Cross-play plays every pair: 24 policies are 276 pairings per environment (each checkpoint is fetched up front)."""


def resolve_lineups(
    suite: Suite, play: Play, settings: SourceSettings, checkpoints: Sequence[Candidate] = ()
) -> tuple[Suite, dict[str, CoPlayerBytes]]:
    """The suite with every mixed env's co-players named by digest, and the co-players' bytes by digest. With
    `play.cross_play`, the run's `checkpoints` are fetched now and join the co-players (`cross_play_suite`)."""
    global_npcs = tuple(parse_co_player(text) for text in play.npcs)
    wanted: list[tuple[EnvSpec, tuple[CoPlayer, ...], float | None]] = []
    for env in suite.envs:
        npcs = env.npcs or (global_npcs if env.num_agents >= 2 else ())
        share = env.candidate_share if env.candidate_share is not None else play.candidate_share
        wanted.append((env, npcs, share if npcs else env.candidate_share))
    if global_npcs and not any(npcs for _, npcs, _ in wanted):
        agents = sorted({env.num_agents for env in suite.envs})
        raise UsageError(
            f"--npc needs an environment of at least 2 agents; suite {suite.name!r} has only {agents}-agent ones "
            "(try --suite multi_agent)"
        )
    pool = tuple(CoPlayer(uri=uri) for uri in play.vor)
    fetched: dict[str, tuple[str, str, bytes]] = {}
    for uri in dict.fromkeys([*(npc.uri for _, npcs, _ in wanted for npc in npcs), *play.vor]):
        fetched[uri] = _fetch(uri, settings)
    envs = tuple(_with_lineup(env, npcs, share, fetched) for env, npcs, share in wanted)
    players = {digest: (uri, data) for uri, (digest, _, data) in fetched.items()}
    plain, suite = suite, suite.model_copy(update={"envs": envs})
    if pool:  # VOR and cross-play vary the suite's own environments, before any --npc line-up
        named = [CoPlayer(uri=fetched[npc.uri][1], digest=fetched[npc.uri][0]) for npc in pool]
        suite = vor_suite(suite, named, plain)
    if not play.cross_play:
        return suite, players
    participants = _cross_play_checkpoints(checkpoints, players, len(fetched))
    participants += [(digest, shown, shown) for digest, shown, _ in fetched.values()]
    return cross_play_suite(suite, participants, play.seating, plain), players


def _cross_play_checkpoints(
    checkpoints: Sequence[Candidate], players: dict[str, CoPlayerBytes], co_players: int
) -> list[tuple[str, str, str]]:
    """(digest, URI, label) of each distinct checkpoint of the run, fetched now; their bytes join `players`."""
    if len(checkpoints) + co_players > MAX_CROSS_PLAY_POLICIES:
        raise UsageError(
            f"--cross-play plays every pair: {len(checkpoints)} checkpoints and {co_players} co-players are more "
            f"than {MAX_CROSS_PLAY_POLICIES} policies; select fewer (--checkpoints last:N)"
        )
    found: dict[str, tuple[str, str, str]] = {}
    for candidate in checkpoints:
        checkpoint = fetch(candidate)
        if checkpoint.error:
            raise UsageError(f"--cross-play: {candidate.name} ({candidate.version}): {checkpoint.error}")
        players.setdefault(checkpoint.digest, (checkpoint.uri, checkpoint.data))
        label = f"{checkpoint.name}:{checkpoint.version}"
        found.setdefault(checkpoint.digest, (checkpoint.digest, redact_url(checkpoint.uri), label))
    return list(found.values())


def cross_play_suite(
    suite: Suite, participants: Sequence[tuple[str, str, str]], seating: Seating, base: Suite | None = None
) -> Suite:
    """The suite plus, for each environment of at least 2 agents, its cross-play pairings: `<env>.vs.<policy>`
    seating each participant beside the candidate at equal shares (`round_robin`), or `<env>.vs.all` with every
    participant (`all`). Every checkpoint plays the same suite, so a checkpoint also meets itself once (that
    pairing is no game: one policy) and a pair of checkpoints meets twice, once as each one's candidate. Pairings
    vary `base`'s environments (the suite as its file gives it, before `--npc` line-ups; default `suite`)."""
    multi = _plain_multi_agent(base or suite)
    if len(participants) < 2 or not multi:
        raise UsageError(
            "--cross-play needs at least 2 policies (checkpoints and --npc co-players) and an environment of at "
            f"least 2 agents without its own co-players; suite {suite.name!r} gives {len(participants)} and "
            f"{len(multi)}"
        )
    slugs = _slugs([label for _, _, label in participants])
    added = []
    for env in multi:
        if seating is Seating.ALL:
            npcs = tuple(CoPlayer(uri=uri, digest=digest) for digest, uri, _ in participants)
            added.append(_variant(env, f"{env.name}.vs.all", npcs, None))
            continue
        for (digest, uri, _), slug in zip(participants, slugs, strict=True):
            added.append(_variant(env, f"{env.name}.vs.{slug}", (CoPlayer(uri=uri, digest=digest),), 0.5))
    return suite.model_copy(update={"envs": (*suite.envs, *added)})


def _plain_multi_agent(suite: Suite) -> list[EnvSpec]:
    """The environments of at least 2 agents that are neither line-up variants nor given co-players by the suite."""
    return [env for env in suite.envs if env.num_agents >= 2 and not env.npcs and env.variant_of is None]


def vor_suite(suite: Suite, pool: Sequence[CoPlayer], base: Suite | None = None) -> Suite:
    """The suite plus, for each environment of at least 2 agents without co-players of its own, value over
    replacement's scenarios (`sim.lineup.vor_seats`): `<env>.vor.k<K>` with the candidate on K agents and the pool
    on the rest, K = 0 the pool alone; K = n is the environment itself. Every variant plays the environment's
    episode seeds, so the scenarios pair episode by episode. Scenarios vary `base`'s environments (before `--npc`
    line-ups; default `suite`); where `--npc` made the environment itself mixed, K = n is a variant of its own."""
    multi = _plain_multi_agent(base or suite)
    if not multi:
        raise UsageError(
            f"--vor needs an environment of at least 2 agents without co-players of its own; suite {suite.name!r} "
            "has none (multi_agent has several)"
        )
    mixed = {env.name for env in suite.envs if env.npcs}
    added = []
    for env in multi:
        for seats in vor_seats(env.num_agents):
            if seats < env.num_agents:
                added.append(_variant(env, vor_variant(env.name, seats), tuple(pool), seats / env.num_agents))
            elif env.name in mixed:
                added.append(_variant(env, vor_variant(env.name, seats), (), None))
    return suite.model_copy(update={"envs": (*suite.envs, *added)})


def _variant(env: EnvSpec, name: str, npcs: tuple[CoPlayer, ...], share: float | None) -> EnvSpec:
    try:
        fields = {**env.model_dump(), "name": name, "npcs": npcs, "candidate_share": share, "variant_of": env.name}
        return EnvSpec.model_validate(fields)
    except ValidationError as exc:
        raise UsageError(f"environment {name}: {validation_line(exc)}") from None


def _slugs(labels: Sequence[str]) -> list[str]:
    """Environment-name-safe, distinct short forms of the participants' labels."""
    slugs: list[str] = []
    for label in labels:
        slug = re.sub(r"[^A-Za-z0-9_.\-]+", "_", label.rpartition("/")[2] or label).strip("_.")[:40] or "policy"
        while slug in slugs:
            slug = f"{slug}_{len(slugs)}"
        slugs.append(slug)
    return slugs


def _fetch(uri: str, settings: SourceSettings) -> tuple[str, str, bytes]:
    """(digest, shown URI, bytes) of the co-player's latest checkpoint; any failure is the run's usage error."""
    shown = redact_url(uri)
    try:
        candidates = list_candidates(uri, "latest", settings)
    except UsageError as exc:
        raise UsageError(f"co-player {shown}: {exc}") from None
    if not candidates:
        raise UsageError(f"co-player {shown}: no checkpoint found")
    checkpoint = fetch(candidates[-1])
    if checkpoint.error:
        raise UsageError(f"co-player {shown}: {checkpoint.error}")
    return checkpoint.digest, shown, checkpoint.data


def _with_lineup(
    env: EnvSpec, npcs: tuple[CoPlayer, ...], share: float | None, fetched: dict[str, tuple[str, str, bytes]]
) -> EnvSpec:
    if not npcs:
        return env
    named = tuple(
        CoPlayer(uri=fetched[npc.uri][1], proportion=npc.proportion, digest=fetched[npc.uri][0]) for npc in npcs
    )
    try:
        return EnvSpec.model_validate({**env.model_dump(), "npcs": named, "candidate_share": share})
    except ValidationError as exc:
        raise UsageError(f"environment {env.name}: {validation_line(exc)}") from None


def recorded_suite(suite: str, play: Play) -> str:
    """The suite name a run is recorded under in the results database: with `--npc` co-players named, so `results`
    and the leaderboards never rank a checkpoint's score beside co-players with one played without them (a suite
    file's own `npcs` are the suite's: its name says it)."""
    if not play.npcs:
        return suite
    share = "" if play.candidate_share is None else f";share={play.candidate_share:g}"
    label = f"{suite}+npc({'|'.join(redact_url(text) for text in play.npcs)}{share})"
    if len(label) <= MAX_SUITE_LABEL:
        return label
    return f"{suite[: MAX_SUITE_LABEL - 30]}+npc(sha256:{hashlib.sha256(label.encode()).hexdigest()[:16]})"
