"""The run's line-ups: which co-players play beside the evaluated checkpoints in which environments, fetched once.

Co-players come from `--npc URI[,proportion=N]` (NPC_POLICY_URI) for every environment of at least 2 agents, or
from an environment's own `npcs` in a suite file (which win). Each URI is resolved like a policy to evaluate
(any source: a file, s3://, wandb://, builtin://), its latest checkpoint fetched once here, and named in the env
by the digest of its bytes (`sim.lineup`): that digest is part of the env's spec hash, so stored episodes are never
reused for another line-up. The bytes go to every worker once, when it starts (`actors.eval_worker`).
"""

from __future__ import annotations

import hashlib

from pydantic import ValidationError

from actors.protocol import CoPlayerBytes
from evaluator.config import Play
from evaluator.secrets import redact_url
from evaluator.sources import SourceSettings, fetch, list_candidates
from sim.envs import EnvSpec
from sim.errors import UsageError, validation_line
from sim.lineup import CoPlayer, parse_co_player
from sim.suites import Suite

MAX_SUITE_LABEL = 200
"""The results database's `runs.suite` column is 200 characters."""


def resolve_lineups(suite: Suite, play: Play, settings: SourceSettings) -> tuple[Suite, dict[str, CoPlayerBytes]]:
    """The suite with every mixed env's co-players named by digest, and the co-players' bytes by digest."""
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
    fetched: dict[str, tuple[str, str, bytes]] = {}
    for uri in dict.fromkeys(npc.uri for _, npcs, _ in wanted for npc in npcs):
        fetched[uri] = _fetch(uri, settings)
    envs = tuple(_with_lineup(env, npcs, share, fetched) for env, npcs, share in wanted)
    players = {digest: (uri, data) for uri, (digest, _, data) in fetched.items()}
    return suite.model_copy(update={"envs": envs}), players


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
