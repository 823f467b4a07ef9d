"""The `view` server's own pages: the runs of a DATA_DIR and the leaderboard across runs. Plain HTML tables
(no script), styled like the scorecard page."""

from __future__ import annotations

import html
from dataclasses import dataclass
from urllib.parse import quote

from evaluator.secrets import redact_url
from evaluator.store.queries import Leaderboard, Ranked, RunSummary

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{css}</style></head>
<body><header><h1>{title}</h1><nav><a href="/">runs</a> <a href="/leaderboard">leaderboard</a></nav></header>
<main>{body}</main></body></html>
"""


@dataclass(frozen=True)
class RunEntry:
    """A run directory of DATA_DIR with a report.json, and what the results store says of it (if anything)."""

    name: str
    suite: str
    modified: str
    recorded: RunSummary | None


def _cells(values: list[object]) -> str:
    return "".join(f"<td>{value}</td>" for value in values)


def _table(header: list[str], rows: list[str], caption: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    caption_html = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{caption_html}<tr>{head}</tr>{''.join(rows)}</table>"


def runs_page(data_dir: str, entries: list[RunEntry], css: str, note: str = "") -> str:
    rows = []
    for entry in entries:
        link = f'<a href="/runs/{quote(entry.name)}/">{html.escape(entry.name)}</a>'
        recorded = entry.recorded
        status = html.escape(recorded.status) if recorded else "-"
        checkpoints = f"{recorded.checkpoints} ({recorded.failed} failed)" if recorded else "-"
        wall = f"{recorded.wall_s:.1f} s" if recorded and recorded.wall_s is not None else "-"
        files = f'<a href="/runs/{quote(entry.name)}/report.json">report.json</a>'
        values = [link, html.escape(entry.suite), status, checkpoints, wall, html.escape(entry.modified), files]
        rows.append(f"<tr>{_cells(values)}</tr>")
    body = (
        _table(["run", "suite", "status", "checkpoints", "wall", "written (UTC)", "files"], rows)
        if rows
        else f"<p>no runs with a report.json in {html.escape(data_dir)}</p>"
    )
    if note:
        body += f"<p>{html.escape(note)}</p>"
    return PAGE.format(title=html.escape(f"runs in {data_dir}"), css=css, body=body)


def _ranked_rows(ranked: list[Ranked]) -> list[str]:
    return [
        "<tr>"
        + _cells(
            [
                r.rank,
                html.escape(f"{r.name}:{r.version}"),
                f"{r.score:.3f}",
                f'<a href="/runs/{quote(r.run)}/">{html.escape(r.run)}</a>',
                html.escape(r.uri),
            ]
        )
        + "</tr>"
        for r in ranked
    ]


def leaderboard_page(board: Leaderboard, css: str) -> str:
    header = ["rank", "checkpoint", "score", "run", "uri"]
    parts = []
    for suite, ranked in board.suites.items():
        parts.append(f"<section><h2>{html.escape(suite)}: suite score</h2>{_table(header, _ranked_rows(ranked))}")
        for leaders in board.environments:
            if leaders.suite == suite:
                parts.append(_table(header, _ranked_rows(leaders.best), f"{suite} / {leaders.env}"))
        parts.append("</section>")
    for suite, ranked in board.ratings.items():
        rows = [
            "<tr>"
            + _cells(
                [
                    r.rank,
                    html.escape(f"{r.name}:{r.version}"),
                    f"{r.score:.2f}",
                    f"{r.mu:.2f} +- {3 * r.sigma:.2f}" if r.mu is not None and r.sigma is not None else "-",
                    f'<a href="/runs/{quote(r.run)}/">{html.escape(r.run)}</a>',
                    html.escape(r.uri),
                ]
            )
            + "</tr>"
            for r in ranked
        ]
        header = ["rank", "checkpoint", "ordinal (mu - 3 sigma)", "mu +- 3 sigma", "run", "uri"]
        parts.append(f"<section><h2>{html.escape(suite)}: rating</h2>{_table(header, rows)}</section>")
    database = redact_url(board.database)  # masked by the query already; a page served must not rely on it
    body = "".join(parts) or f"<p>no scored checkpoints in {html.escape(database)}</p>"
    title = f"leaderboard: best {board.limit} per suite and environment ({database})"
    return PAGE.format(title=html.escape(title), css=css, body=body)
