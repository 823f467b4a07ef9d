"""The scorecard's charts, built with plotly: a checkpoints x environments heatmap, the suite score over
checkpoints with its 95% band (the "vs previous" verdicts as markers), and one small chart per environment.
Only figures here (plotly objects, no HTML): `evaluator.scorecard.page` renders them offline and the W&B
output logs the heatmap as it is.

Figures take `evaluator.scorecard.rows.Row`s (a few numbers per checkpoint), in the report's order.
"""

from __future__ import annotations

from itertools import groupby

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from evaluator.reduce.report import CrossPlayCell
from evaluator.scorecard.rows import ComparisonLine, Row

VERDICT_MARKERS = {"better": ("triangle-up", "#1a9850"), "worse": ("triangle-down", "#d73027")}
NO_DIFFERENCE_MARKER = ("circle", "#7f7f7f")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
MAX_MARKED_POINTS = 100
"""Beyond this many checkpoints in a policy its curves are plain lines: no markers, no error bars (a browser
draws every marker and bar as its own SVG element; 10,000 checkpoints x 20 environments did not load in 30 s)."""
MAX_HEATMAP_HEIGHT = 6000
"""Pixels: beyond this a heatmap of thousands of checkpoints scrolls inside its own frame."""


def policies(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    """Rows grouped by policy URI, in run order."""
    return [(uri, list(group)) for uri, group in groupby(rows, key=lambda r: r.policy_uri)]


def heatmap(rows: list[Row], envs: list[str]) -> go.Figure:
    """Colour = score; hover = mean, 95% CI, episodes, success rate (customdata, float32: a plain nested list
    of 10,000 x 20 cells takes plotly seconds to validate). A click's `pointNumber` is the (row, column) the
    page's handler maps to a replay."""
    scores = [[row.cells[env].score if env in row.cells else None for env in envs] for row in rows]
    custom = np.full((len(rows), len(envs), 4), np.nan, dtype=np.float32)
    for row_index, row in enumerate(rows):
        for column, env in enumerate(envs):
            cell = row.cells.get(env)
            if cell is not None:
                low, high = cell.ci95 if cell.ci95 else (np.nan, np.nan)
                custom[row_index, column] = (low, high, cell.episodes, cell.success_rate)
    figure = go.Figure(
        go.Heatmap(
            z=scores,
            x=envs,
            y=[row.label for row in rows],
            customdata=custom,
            colorscale="Viridis",
            colorbar={"title": {"text": "score"}},
            hoverongaps=False,
            hovertemplate=(
                "%{y}<br>%{x}<br>score %{z:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}]"
                "<br>%{customdata[2]} episodes, success %{customdata[3]:.0%}<br>click: replay<extra></extra>"
            ),
        )
    )
    figure.update_layout(  # titled by the page (a plotly title collides with the top axis labels)
        height=min(MAX_HEATMAP_HEIGHT, 160 + 26 * len(rows)),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"side": "top", "tickangle": -35, "automargin": True},
        yaxis={"autorange": "reversed", "automargin": True, "type": "category"},
    )
    return figure


def _verdict_marker(comparison: ComparisonLine | None) -> tuple[str, str, str]:
    """(symbol, colour, hover text) of a point on the suite curve."""
    if comparison is None:
        return "circle-open", PALETTE[-1], ""
    symbol, colour = VERDICT_MARKERS.get(comparison.verdict, NO_DIFFERENCE_MARKER)
    interval = f" [{comparison.ci95[0]:+.3f}, {comparison.ci95[1]:+.3f}]" if comparison.ci95 else ""
    return symbol, colour, f"vs previous: {comparison.difference:+.3f}{interval} {comparison.verdict}"


def suite_curve(suite: str, rows: list[Row]) -> go.Figure:
    """Suite score by checkpoint order within each policy, with the 95% band; a policy of one checkpoint (a
    baseline such as builtin://random) is drawn as a dashed reference line across."""
    figure = go.Figure()
    longest = max((row.position for row in rows), default=1)
    for colour_index, (policy_uri, policy_rows) in enumerate(policies(rows)):
        colour = PALETTE[colour_index % len(PALETTE)]
        scored = [r for r in policy_rows if r.suite_score is not None]
        if not scored:
            continue
        scores = [r.suite_score for r in scored]
        if len(policy_rows) == 1 and longest > 1:
            figure.add_trace(
                go.Scatter(
                    x=[1, longest],
                    y=[scores[0], scores[0]],
                    mode="lines",
                    line={"dash": "dash", "color": colour},
                    name=scored[0].label,
                    hovertemplate=f"{scored[0].label}: %{{y:.3f}}<extra></extra>",
                )
            )
            continue
        xs = [r.position for r in scored]
        bands = [r.suite_ci95 for r in scored]
        if all(band is not None for band in bands):
            figure.add_trace(
                go.Scatter(
                    x=xs + xs[::-1],
                    y=[b[1] for b in bands] + [b[0] for b in bands][::-1],  # type: ignore[index]
                    mode="lines",
                    fill="toself",
                    fillcolor=colour,
                    opacity=0.18,
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                )
            )
        markers = [_verdict_marker(r.previous) for r in scored]
        dense = len(scored) > MAX_MARKED_POINTS
        figure.add_trace(
            go.Scatter(
                x=xs,
                y=scores,
                mode="lines" if dense else "lines+markers",
                name=policy_uri,
                line={"color": colour},
                marker={
                    "symbol": [m[0] for m in markers],
                    "color": [m[1] for m in markers],
                    "size": 11,
                    "line": {"color": colour, "width": 1},
                },
                text=[f"{r.label}<br>{m[2]}" if m[2] else r.label for r, m in zip(scored, markers, strict=True)],
                hovertemplate="%{text}<br>score %{y:.3f}<extra></extra>",
            )
        )
    figure.update_layout(
        title={"text": f"{suite}/score over checkpoints (95% band; vs previous: better ▲, worse ▼, same ●)"},
        xaxis={"title": {"text": "checkpoint (order within its policy)"}} | ({"dtick": 1} if longest <= 30 else {}),
        yaxis={"title": {"text": "suite score"}},
        height=440,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": -0.2},
    )
    return figure


def environment_multiples(rows: list[Row], envs: list[str], columns: int = 4) -> go.Figure:
    """One small chart per environment: each policy's score over its checkpoints, with 95% error bars (up to
    `MAX_MARKED_POINTS` checkpoints)."""
    if not envs:
        return go.Figure()
    grid_rows = (len(envs) + columns - 1) // columns
    figure = make_subplots(rows=grid_rows, cols=columns, subplot_titles=envs, vertical_spacing=0.3 / grid_rows)
    for colour_index, (policy_uri, policy_rows) in enumerate(policies(rows)):
        colour = PALETTE[colour_index % len(PALETTE)]
        for env_index, env in enumerate(envs):
            points = [(r, r.cells[env]) for r in policy_rows if env in r.cells]
            if not points:
                continue
            dense = len(points) > MAX_MARKED_POINTS
            error_bars = {
                "type": "data",
                "symmetric": False,
                "array": np.array([(c.ci95[1] - c.score) if c.ci95 else 0 for _, c in points], np.float32),
                "arrayminus": np.array([(c.score - c.ci95[0]) if c.ci95 else 0 for _, c in points], np.float32),
                "thickness": 1,
            }
            figure.add_trace(
                go.Scatter(  # numpy arrays: plotly validates (and encodes) them at once, lists item by item
                    x=np.array([r.position for r, _ in points], dtype=np.int32),
                    y=np.array([c.score for _, c in points], dtype=np.float32),
                    error_y={"visible": False} if dense else error_bars,
                    mode="lines" if dense else "lines+markers",
                    marker={"size": 5},
                    line={"color": colour, "width": 1.5},
                    name=policy_uri,
                    legendgroup=policy_uri,
                    showlegend=env_index == 0,
                    text=[r.label for r, _ in points],
                    hovertemplate="%{text}<br>%{y:.3f}<extra></extra>",
                ),
                row=env_index // columns + 1,
                col=env_index % columns + 1,
            )
    figure.update_layout(
        title={"text": "score per environment over checkpoints (95% error bars)"},
        height=max(300, 230 * grid_rows),
        margin={"l": 10, "r": 10, "t": 70, "b": 10},
        legend={"orientation": "h", "y": -0.08},
    )
    return figure


def cross_play_heatmap(cells: list[CrossPlayCell]) -> go.Figure:
    """Rows: the policy; columns: whom it met; colour: the row's win rate against the column (hover: its mean
    reward, games, losses and ties). Empty without cross-play."""
    players = list(dict.fromkeys(cell.policy for cell in cells))
    met = {(cell.policy, cell.against): cell for cell in cells}
    win = [[met[(a, b)].win_rate if (a, b) in met else None for b in players] for a in players]
    custom = np.full((len(players), len(players), 4), np.nan, dtype=np.float32)
    for i, a in enumerate(players):
        for j, b in enumerate(players):
            cell = met.get((a, b))
            if cell is not None:
                custom[i, j] = (cell.mean_reward, cell.games, cell.loss_rate, cell.tie_rate)
    figure = go.Figure(
        go.Heatmap(
            z=win,
            x=players,
            y=players,
            customdata=custom,
            zmin=0,
            zmax=1,
            colorscale="RdBu",
            colorbar={"title": {"text": "win rate"}},
            hoverongaps=False,
            hovertemplate=(
                "%{y} against %{x}<br>win rate %{z:.0%} (loss %{customdata[2]:.0%}, tie %{customdata[3]:.0%})"
                "<br>mean reward %{customdata[0]:.3f} over %{customdata[1]} episodes<extra></extra>"
            ),
        )
    )
    figure.update_layout(
        height=min(MAX_HEATMAP_HEIGHT, 160 + 30 * len(players)),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"side": "top", "tickangle": -35, "automargin": True, "type": "category"},
        yaxis={"autorange": "reversed", "automargin": True, "type": "category"},
    )
    return figure
