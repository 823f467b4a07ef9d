"""Terminal tables of `policy-evaluator results` answers (`evaluator.store.queries`), rendered to text so the
CLI prints them through its redacting `Output` like everything else on stdout."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from evaluator.store.queries import BestCheckpoints, PolicyHistory, RecentRuns, RunDetail, RunSummary

Answer = RecentRuns | RunDetail | PolicyHistory | BestCheckpoints


def short(digest: str) -> str:
    """`sha256:0123456789ab…` -> `0123456789ab`: enough to tell checkpoints apart in a table."""
    return digest.rpartition(":")[2][:12]


def _score(score: float | None) -> str:
    return "-" if score is None else f"{score:.3f}"


def _wall(wall_s: float | None) -> str:
    return "-" if wall_s is None else f"{wall_s:.1f}"


def _table(title: str, *columns: str, right: tuple[str, ...] = ()) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", overflow="fold")
    return table


def empty_message(answer: Answer) -> str | None:
    """A sentence instead of an empty table (None when there is something to show)."""
    if isinstance(answer, RecentRuns) and not answer.runs:
        return f"no runs recorded in {answer.database} yet"
    if isinstance(answer, PolicyHistory) and not answer.checkpoints:
        return f"no checkpoints of {answer.policy_uri} recorded in {answer.database}"
    if isinstance(answer, BestCheckpoints) and not answer.best:
        if answer.by in ("rating", "elo"):
            return f"no rated checkpoints (runs with mixed episodes: --npc, --cross-play) in {answer.database}"
        scope = " or ".join(
            filter(None, [answer.suite and f"suite {answer.suite}", answer.env and f"env {answer.env}"])
        )
        return f"no scored checkpoints{' for ' + scope if scope else ''} in {answer.database}"
    return None


def tables(answer: Answer) -> list[Table]:
    if isinstance(answer, RecentRuns):
        return [_runs(answer.runs, f"recent runs in {answer.database}")]
    if isinstance(answer, RunDetail):
        return [_runs([answer.run], f"run {answer.run.name}"), _run_checkpoints(answer), *_run_mixed_play(answer)]
    if isinstance(answer, PolicyHistory):
        return [_policy(answer)]
    return _best(answer)


def _runs(summaries: list[RunSummary], title: str) -> Table:
    table = _table(
        title,
        *("run", "suite", "status", "evaluator", "started (UTC)", "checkpoints", "failed", "wall_s"),
        right=("checkpoints", "failed", "wall_s"),
    )
    for run in summaries:
        table.add_row(
            run.name,
            run.suite,
            run.status,
            run.evaluator_version,
            run.started,
            str(run.checkpoints),
            str(run.failed),
            _wall(run.wall_s),
        )
    return table


def _run_checkpoints(detail: RunDetail) -> Table:
    score = f"{detail.run.suite}/score"
    table = _table("checkpoints", "#", "policy", "name", "version", "digest", score, "error", right=("#", score))
    for c in detail.checkpoints:
        table.add_row(str(c.position), c.policy_uri, c.name, c.version, short(c.digest), _score(c.score), c.error or "")
    return table


def _run_mixed_play(detail: RunDetail) -> list[Table]:
    """The run's mixed play, when it had any: per checkpoint and mixed environment its own, the co-players' and
    everyone's mean reward; per rated checkpoint its VOR and ratings."""
    found = []
    mixed = [c for c in detail.checkpoints if c.mixed and c.mixed["environments"]]
    if mixed:
        table = _table("mixed line-ups (mean reward per agent)", "#", "checkpoint", "environment", "score",
                       "npc_score", "all_score", right=("#", "score", "npc_score", "all_score"))  # fmt: skip
        for c in mixed:
            for env, figures in c.mixed["environments"].items():
                scores = (_score(figures[key]) for key in ("score", "npc_score", "all_score"))
                table.add_row(str(c.position), f"{c.name}:{c.version}", env, *scores)
        found.append(table)
    rated = [c for c in detail.checkpoints if c.rating or (c.mixed and c.mixed["vor"] is not None)]
    if rated:
        table = _table("ratings and value over replacement", "#", "checkpoint", "VOR", "ordinal", "mu", "sigma",
                       "elo", "games", right=("#", "VOR", "ordinal", "mu", "sigma", "elo", "games"))  # fmt: skip
        for c in rated:
            rating = c.rating or {}
            figures = [_score(rating.get(key)) for key in ("ordinal", "mu", "sigma")]
            elo = "-" if rating.get("elo") is None else f"{rating['elo']:.1f}"
            vor = _score(c.mixed["vor"] if c.mixed else None)
            table.add_row(str(c.position), f"{c.name}:{c.version}", vor, *figures, elo, str(rating.get("games", "-")))
        found.append(table)
    return found


def _policy(history: PolicyHistory) -> Table:
    table = _table(
        f"{history.policy_uri}: latest score per checkpoint and suite",
        *("name", "version", "digest", "suite", "score", "run", "finished (UTC)", "error"),
        right=("score",),
    )
    for p in history.checkpoints:
        table.add_row(
            p.name, p.version, short(p.digest), p.suite, _score(p.score), p.run, p.finished or "", p.error or ""
        )
    return table


def _best(best: BestCheckpoints) -> list[Table]:
    suites = list(dict.fromkeys(entry.suite for entry in best.best))
    result = []
    for suite in suites:
        if best.by == "rating":
            metric, column = f"{suite}: rating (openskill ordinal, mu - 3 sigma)", "ordinal"
        elif best.by == "elo":
            metric, column = f"{suite}: Elo over the mixed episodes' pairings", "elo"
        else:
            metric, column = (f"{suite}/{best.env}/score" if best.env else f"{suite}/score"), "score"
        table = _table(
            f"best {len([e for e in best.best if e.suite == suite])} on {metric}",
            *("#", "name", "version", "digest", column, "run", "finished (UTC)", "uri"),
            right=("#", column),
        )
        for e in (e for e in best.best if e.suite == suite):
            table.add_row(
                str(e.rank), e.name, e.version, short(e.digest), _score(e.score), e.run, e.finished or "", e.uri
            )
        result.append(table)
    return result


def render(answer: Answer) -> str:
    """The answer as text: its tables, or its sentence when there is nothing to show. Not a terminal (piped,
    tests): 160 columns, no colour, so long URIs and run names are not squeezed."""
    message = empty_message(answer)
    if message is not None:
        return message
    console = Console()
    if not console.is_terminal:
        console = Console(width=160, no_color=True, color_system=None)
    with console.capture() as capture:
        for table in tables(answer):
            console.print(table)
    return "\n".join(line.rstrip() for line in capture.get().rstrip("\n").splitlines())
