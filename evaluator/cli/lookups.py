"""`suites`, `summary`, `view`, `schema` and `results`: what the evaluator knows and has recorded."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from evaluator.cli.command import Printed, command
from evaluator.config import database_url
from evaluator.options import DataDir, ResultsDb, envvar
from evaluator.reduce.report import Report
from sim.errors import UsageError, first_line

ViewedDataDir = Annotated[
    Path,
    typer.Argument(envvar=envvar(DataDir), help="The data directory whose runs to serve.", show_default=True),
]
"""`view`'s positional DATA_DIR (`view data`): an argument cannot be the `--data-dir` option, so it reads the
option's variable."""


@command()
def suites(
    name: Annotated[str | None, typer.Argument(help="Show only this suite (name or file).")] = None,
) -> None:
    """List suites and their environments."""
    from sim.suites import SUITES, get_suite

    selected = [get_suite(name)] if name else [SUITES[key]() for key in sorted(SUITES)]
    for suite in selected:
        typer.echo(f"{suite.name} (seed {suite.seed}): {suite.description}")
        for env in suite.envs:
            if env.map is None:
                kind, size = "game", ""
            elif env.map.kind == "ascii":
                kind, size = "ascii", f"{len(env.map.rows[0])}x{len(env.map.rows)}"
            else:
                kind, size = env.map.kind, f"{env.map.width}x{env.map.height}"
            lineup = f" npcs={','.join(npc.uri for npc in env.npcs)}" if env.npcs else ""
            typer.echo(
                f"  {env.name:<28} {kind:<6} {size:>7}  agents={env.num_agents} "
                f"max_steps={env.max_steps} episodes={env.episodes}{lineup}"
            )


@command()
def summary(
    report_path: Annotated[Path, typer.Argument(help="A report.json written by `run`.")],
) -> None:
    """Print a report's scores as tables: one row per checkpoint, then environments x checkpoints."""
    from rich.console import Console

    from evaluator.cli.summary import summary_tables

    try:
        report = Report.model_validate_json(report_path.read_text())
    except (OSError, ValidationError) as exc:
        raise UsageError(f"cannot read report {report_path}: {first_line(exc)}") from None
    console = Console()
    if not console.is_terminal:  # piped or in `make demo`: don't squeeze the tables into 80 columns
        console = Console(width=160)
    for table in summary_tables(report):
        console.print(table)


@command()
def view(
    data_dir: ViewedDataDir = Path("data"),
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")] = 8765,
    results_db: ResultsDb = None,
) -> None:
    """Serve DATA_DIR read-only in the browser: the runs, each run's page and replays, and a leaderboard of the
    best checkpoints per suite and environment from the results database."""
    from evaluator.scorecard.server import serve as serve_view

    if not data_dir.is_dir():
        raise UsageError(f"no data directory {data_dir}; pass the DATA_DIR of `run` (default: data)")

    def listening(url: str) -> None:
        typer.echo(f"serving {data_dir} at {url} (read-only; Ctrl-C stops)")

    serve_view(data_dir, database_url(results_db, data_dir), host, port, listening)


@command()
def schema() -> None:
    """Print the JSON Schema of the report."""
    from evaluator.reduce.report import report_schema

    typer.echo(json.dumps(report_schema(), indent=2))


class RankBy(StrEnum):
    SCORE = "score"
    RATING = "rating"
    ELO = "elo"


@command()
def results(
    run: Annotated[str | None, typer.Option("--run", help="Show this run: its checkpoints in order.")] = None,
    policy: Annotated[
        str | None, typer.Option("--policy", help="Show this policy's checkpoints over time (URI as given to -p).")
    ] = None,
    best: Annotated[bool, typer.Option("--best", help="The best checkpoints per suite across all runs.")] = False,
    suite: Annotated[
        str | None, typer.Option("--suite", help="Only this suite (recent runs, --policy, --best).")
    ] = None,
    env: Annotated[str | None, typer.Option("--env", help="With --best: rank by this environment's score.")] = None,
    by: Annotated[
        RankBy,
        typer.Option(
            "--by", help="With --best: rank by score, by rating (openskill ordinal) or by elo (from mixed episodes)."
        ),
    ] = RankBy.SCORE,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, max=100_000, help="Runs to list [default: 20], or per suite with --best [10]."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout instead of tables.")] = False,
    results_db: ResultsDb = None,
    data_dir: DataDir = Path("data"),
) -> Printed:
    """Past evaluations from the results database: recent runs (default), one run (--run), a policy's
    checkpoints over time (--policy), or the best checkpoints (--best [--suite S] [--env E])."""
    from evaluator.cli.results_view import render
    from evaluator.store import queries
    from evaluator.store.database import masked

    if sum((run is not None, policy is not None, best)) > 1:
        raise UsageError("choose one of --run, --policy and --best")
    if env is not None and not best:
        raise UsageError("--env ranks checkpoints: use it with --best")
    if by is not RankBy.SCORE and not best:
        raise UsageError("--by ranks checkpoints: use it with --best")
    if by is not RankBy.SCORE and env is not None:
        raise UsageError(
            f"--by {by.value} ranks a checkpoint over its run's mixed episodes, not per environment: drop --env"
        )
    url = database_url(results_db, data_dir)
    answer: queries.RecentRuns | queries.RunDetail | queries.PolicyHistory | queries.BestCheckpoints
    if run is not None:
        answer = queries.run_detail(url, run)
    elif not queries.has_runs(url):
        answer = queries.RecentRuns(database=masked(url), runs=[])
    elif policy is not None:
        answer = queries.policy_history(url, policy, suite)
    elif best:
        answer = queries.best_checkpoints(url, suite, env, limit or 10, by.value)
    else:
        answer = queries.recent_runs(url, limit or 20, suite)
    return Printed(answer.model_dump_json(indent=2) if as_json else render(answer))
