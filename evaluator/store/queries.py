"""Reading past evaluations back (`policy-evaluator results`): recent runs, one run's checkpoints, a policy's
checkpoints over time, and the best checkpoints per suite or environment.

SQLAlchemy Core over `schema`, one code path for SQLite and PostgreSQL: no SQL strings, no JSON operators
(whose syntax differs by dialect); per-environment scores are read from `env_scores` in Python. A score is
a run's: a checkpoint evaluated twice on a suite is worth what its latest run said (evaluator versions
change scores). Every answer is a pydantic model, so `--json` dumps exactly what the tables show.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, Row, Select, func, or_, select

from evaluator.store.database import errors_of, masked, open_database
from evaluator.store.schema import checkpoints, run_checkpoints, runs
from sim.errors import UsageError

DOING = "reading results"


class RunSummary(BaseModel):
    name: str
    suite: str
    status: str
    evaluator_version: str
    started: str
    finished: str | None
    checkpoints: int
    failed: int
    wall_s: float | None


class RecentRuns(BaseModel):
    database: str
    runs: list[RunSummary]


class RunCheckpoint(BaseModel):
    position: int
    policy_uri: str
    name: str
    version: str
    digest: str
    score: float | None
    error: str | None
    rating: dict | None = None
    """`{mu, sigma, ordinal, elo, games}` from the run's mixed episodes."""
    mixed: dict | None = None
    """`{environments: {env: {score, npc_score, all_score}}, vor}` from its mixed line-ups."""


class RunDetail(BaseModel):
    database: str
    run: RunSummary
    checkpoints: list[RunCheckpoint]


class PolicyPoint(BaseModel):
    """A checkpoint's latest result on one suite (its latest scored run; its latest error if none scored)."""

    name: str
    version: str
    digest: str
    uri: str
    suite: str
    score: float | None
    error: str | None
    run: str
    finished: str | None


class PolicyHistory(BaseModel):
    database: str
    policy_uri: str
    checkpoints: list[PolicyPoint]


class Ranked(BaseModel):
    suite: str
    env: str | None
    rank: int
    name: str
    version: str
    digest: str
    uri: str
    score: float
    """What the checkpoint is ranked by: its (suite or environment) score, or its rating's ordinal or Elo."""
    run: str
    finished: str | None
    mu: float | None = None
    sigma: float | None = None


class BestCheckpoints(BaseModel):
    database: str
    suite: str | None
    env: str | None
    limit: int
    best: list[Ranked]
    by: str = "score"


def iso(timestamp: float | None) -> str | None:
    """Epoch seconds as UTC ISO 8601 (what the tables and JSON show; the rows store floats)."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


@contextmanager
def _reading(url: str) -> Iterator[Connection]:
    with errors_of(url, DOING), open_database(url).connect() as connection:
        yield connection


def _run_summaries() -> Select:
    """Runs with their checkpoint and error counts (a run still `running` has none yet: outer join)."""
    counts = (
        select(
            run_checkpoints.c.run_id,
            func.count().label("checkpoints"),
            func.count(run_checkpoints.c.error).label("failed"),
        )
        .group_by(run_checkpoints.c.run_id)
        .subquery()
    )
    return select(
        runs,
        func.coalesce(counts.c.checkpoints, 0).label("checkpoints"),
        func.coalesce(counts.c.failed, 0).label("failed"),
    ).outerjoin(counts, counts.c.run_id == runs.c.id)


def _summary(row: Row[Any]) -> RunSummary:
    return RunSummary(
        name=row.name,
        suite=row.suite,
        status=row.status,
        evaluator_version=row.evaluator_version,
        started=iso(row.started_at) or "",
        finished=iso(row.finished_at),
        checkpoints=row.checkpoints,
        failed=row.failed,
        wall_s=(row.timing or {}).get("wall_s"),
    )


def has_runs(url: str) -> bool:
    """Whether any run was ever recorded (an empty database gets a sentence, not an empty table)."""
    with _reading(url) as connection:
        return connection.execute(select(runs.c.id).limit(1)).first() is not None


def recent_runs(url: str, limit: int = 20, suite: str | None = None) -> RecentRuns:
    """The latest `limit` runs, newest first."""
    query = _run_summaries().order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(limit)
    if suite is not None:
        query = query.where(runs.c.suite == suite)
    with _reading(url) as connection:
        return RecentRuns(database=masked(url), runs=[_summary(row) for row in connection.execute(query)])


def run_detail(url: str, name: str) -> RunDetail:
    """One run and its checkpoints in the order it evaluated them."""
    query = (
        select(run_checkpoints, checkpoints.c.name, checkpoints.c.version, checkpoints.c.digest)
        .join(checkpoints, checkpoints.c.id == run_checkpoints.c.checkpoint_id)
        .join(runs, runs.c.id == run_checkpoints.c.run_id)
        .where(runs.c.name == name)
        .order_by(run_checkpoints.c.position)
    )
    with _reading(url) as connection:
        header = connection.execute(_run_summaries().where(runs.c.name == name)).first()
        if header is None:
            raise UsageError(f"no run named {name} in {masked(url)}: `policy-evaluator results` lists the runs")
        rows = connection.execute(query).all()
    return RunDetail(
        database=masked(url),
        run=_summary(header),
        checkpoints=[
            RunCheckpoint(
                position=r.position,
                policy_uri=r.policy_uri,
                name=r.name,
                version=r.version,
                digest=r.digest,
                score=r.score,
                error=r.error,
                rating=r.rating,
                mixed=r.mixed,
            )
            for r in rows
        ],
    )


def policy_history(url: str, policy_uri: str, suite: str | None = None) -> PolicyHistory:
    """Each checkpoint of a policy (given as the run was, or as one checkpoint's URI) in the order they were
    first recorded (checkpoint id: new checkpoints appear as training goes on), one row per suite."""
    query = (
        select(
            checkpoints.c.id,
            checkpoints.c.name,
            checkpoints.c.version,
            checkpoints.c.digest,
            checkpoints.c.uri,
            runs.c.suite,
            runs.c.name.label("run"),
            runs.c.finished_at,
            run_checkpoints.c.score,
            run_checkpoints.c.error,
        )
        .join(run_checkpoints, run_checkpoints.c.checkpoint_id == checkpoints.c.id)
        .join(runs, runs.c.id == run_checkpoints.c.run_id)
        .where(or_(run_checkpoints.c.policy_uri == policy_uri, checkpoints.c.uri == policy_uri))
        .order_by(checkpoints.c.id, runs.c.suite, runs.c.started_at.desc(), runs.c.id.desc())
    )
    if suite is not None:
        query = query.where(runs.c.suite == suite)
    latest: dict[tuple[int, str], Row[Any]] = {}
    with _reading(url) as connection:
        for row in connection.execute(query):  # newest first within a (checkpoint, suite)
            key = (row.id, row.suite)
            shown = latest.get(key)
            if shown is None or (shown.score is None and row.score is not None):
                latest[key] = row
    points = [
        PolicyPoint(
            name=r.name,
            version=r.version,
            digest=r.digest,
            uri=r.uri,
            suite=r.suite,
            score=r.score,
            error=None if r.score is not None else r.error,
            run=r.run,
            finished=iso(r.finished_at),
        )
        for r in latest.values()
    ]
    return PolicyHistory(database=masked(url), policy_uri=policy_uri, checkpoints=points)


def _latest_scored(url: str, suite: str | None = None) -> dict[str, list[Row[Any]]]:
    """By suite, every scored checkpoint once: a digest counts once per suite, worth its latest scored run."""
    query = (
        select(
            checkpoints.c.digest,
            checkpoints.c.name,
            checkpoints.c.version,
            checkpoints.c.uri,
            runs.c.suite,
            runs.c.name.label("run"),
            runs.c.finished_at,
            run_checkpoints.c.score,
            run_checkpoints.c.env_scores,
            run_checkpoints.c.rating,
        )
        .join(run_checkpoints, run_checkpoints.c.checkpoint_id == checkpoints.c.id)
        .join(runs, runs.c.id == run_checkpoints.c.run_id)
        .where(run_checkpoints.c.score.is_not(None))
        .order_by(runs.c.started_at.desc(), runs.c.id.desc(), run_checkpoints.c.position)
    )
    if suite is not None:
        query = query.where(runs.c.suite == suite)
    latest: dict[tuple[str, str], Row[Any]] = {}
    with _reading(url) as connection:
        for row in connection.execute(query):  # newest run first: the first seen per (digest, suite) stands
            latest.setdefault((row.digest, row.suite), row)
    by_suite: dict[str, list[Row[Any]]] = {}
    for row in latest.values():
        by_suite.setdefault(row.suite, []).append(row)
    return {name: by_suite[name] for name in sorted(by_suite)}


def _ranked(rows: list[Row[Any]], env: str | None, limit: int, by: str = "score") -> list[Ranked]:
    """The `limit` best of `rows` by suite score or, with `env`, by that environment's score, or (`by="rating"`,
    `"elo"`) by the ordinal or the Elo of the rating the run's mixed episodes gave it (rows without it are left
    out); ties by digest."""

    def score_of(row: Row[Any]) -> float | None:
        if by in ("rating", "elo"):
            return (row.rating or {}).get("ordinal" if by == "rating" else "elo")
        return row.score if env is None else (row.env_scores or {}).get(env)

    scored = sorted(((score_of(r), r) for r in rows if score_of(r) is not None), key=lambda p: (-p[0], p[1].digest))
    return [
        Ranked(
            suite=row.suite,
            env=env,
            rank=rank,
            name=row.name,
            version=row.version,
            digest=row.digest,
            uri=row.uri,
            score=score,
            run=row.run,
            finished=iso(row.finished_at),
            mu=(row.rating or {}).get("mu") if by == "rating" else None,
            sigma=(row.rating or {}).get("sigma") if by == "rating" else None,
        )
        for rank, (score, row) in enumerate(scored[:limit], start=1)
    ]


def best_checkpoints(
    url: str, suite: str | None = None, env: str | None = None, limit: int = 10, by: str = "score"
) -> BestCheckpoints:
    """The `limit` best checkpoints of each suite (or only `suite`), by suite score or, with `env`, by that
    environment's score, or by rating (`by="rating"`: the ordinal of the openskill rating of the run's mixed
    episodes; `by="elo"`: their Elo); a checkpoint is one digest wherever it was found, worth its latest scored
    run."""
    best = [entry for rows in _latest_scored(url, suite).values() for entry in _ranked(rows, env, limit, by)]
    return BestCheckpoints(database=masked(url), suite=suite, env=env, limit=limit, best=best, by=by)


class EnvironmentLeaders(BaseModel):
    suite: str
    env: str
    best: list[Ranked]


class Leaderboard(BaseModel):
    """Across every run of the store: per suite the best checkpoints by suite score, and per environment the
    best by that environment's score (what `policy-evaluator view` shows)."""

    database: str
    limit: int
    suites: dict[str, list[Ranked]]
    environments: list[EnvironmentLeaders]
    ratings: dict[str, list[Ranked]] = {}
    """Per suite with rated checkpoints: the best by rating (ordinal), across runs."""


def leaderboard(url: str, limit: int = 5) -> Leaderboard:
    """`best_checkpoints`' rule for every suite and every environment at once, in one pass over the store."""
    suites, environments, ratings = {}, [], {}
    for suite, rows in _latest_scored(url).items():
        suites[suite] = _ranked(rows, None, limit)
        rated = _ranked(rows, None, limit, "rating")
        if rated:
            ratings[suite] = rated
        for env in sorted({env for row in rows for env in (row.env_scores or {})}):
            environments.append(EnvironmentLeaders(suite=suite, env=env, best=_ranked(rows, env, limit)))
    return Leaderboard(database=masked(url), limit=limit, suites=suites, environments=environments, ratings=ratings)
