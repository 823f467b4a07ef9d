"""report.html: the run as one self-contained page that works offline from `file://` and on a cluster without
internet. plotly.js, the replay player and the page's own script are inlined (no CDN, no fonts), the charts
come from `evaluator.scorecard.figures`, and episode-0 replays are embedded (base64 of their `.json.z`) up to
`embed_budget_bytes`, because a page opened from `file://` may not fetch files next to it. Replays beyond the
budget are linked by URL (relative to the page when they are in DATA_DIR: this run's, or another run's whose
stored episodes were reused), which `policy-evaluator view` serves; the player says so when it cannot fetch
one. Only drawing here: the driver writes the page (`evaluator.run.driver.write_scorecard`).
"""

from __future__ import annotations

import base64
import html
import json
import os
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlparse

from plotly.offline import get_plotlyjs

from evaluator.reduce.report import Report
from evaluator.scorecard.figures import cross_play_heatmap, environment_multiples, heatmap, suite_curve
from evaluator.scorecard.rows import Row, rows_of

PAGE_NAME = "report.html"
DEFAULT_EMBED_BUDGET_BYTES = 32 * 1024 * 1024
"""Replay bytes embedded in one page (the demo's 130 replays are 1.2 MB); the rest are linked."""


def asset(name: str) -> str:
    return resources.files("evaluator.scorecard").joinpath("assets", name).read_text(encoding="utf-8")


def local_replay(url: str, run_dir: Path) -> Path | None:
    """The replay's file on this machine: the `file://` URL itself, or for a delivered URL (s3://, http,
    wandb) the same `replays/<checkpoint>/<file>` under this run directory."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        return path if path.is_file() else None
    parts = parsed.path.split("/")
    if "replays" in parts:
        candidate = run_dir.joinpath(*parts[len(parts) - 1 - parts[::-1].index("replays") :])
        return candidate if candidate.is_file() else None
    return None


def replay_refs(rows: list[Row], envs: list[str], run_dir: Path, budget: int) -> list[list[dict[str, str] | None]]:
    """Per heatmap cell: `{"src": "base64:..."}` (embedded), `{"url": ...}` (linked) or None (no replay).
    A linked replay in DATA_DIR (this run's, or another run's whose stored episode was reused) gets a URL
    relative to report.html (`replays/...`, `../<run>/replays/...`), which `view` serves; others keep theirs."""
    refs: list[list[dict[str, str] | None]] = []
    resolved_dir = run_dir.resolve()
    for row in rows:
        cells: list[dict[str, str] | None] = []
        for env in envs:
            url = row.replays.get(env)
            if url is None:
                cells.append(None)
                continue
            path = local_replay(url, run_dir)
            ref: dict[str, str] = {"url": url}
            if path is not None:
                size = path.stat().st_size
                if size <= budget:
                    budget -= size
                    ref = {"src": "base64:" + base64.b64encode(path.read_bytes()).decode("ascii"), "url": url}
                elif path.resolve().is_relative_to(resolved_dir.parent):  # this run's, or another run's of DATA_DIR
                    ref = {"url": os.path.relpath(path.resolve(), resolved_dir)}
            if urlparse(url).scheme in ("http", "https"):  # MettaScope reads replays at an http(s) URL
                ref["mettascope"] = url
            cells.append(ref)
        refs.append(cells)
    return refs


_SCRIPT_UNSAFE = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)
"""What the HTML parser reads inside a <script> element (`</script>`, `<!--`, `<script`), written as JSON
escapes: the same string to `JSON.parse`, nothing the parser can take for markup, whatever a name holds."""


def script_safe(json_text: str) -> str:
    """JSON text safe inside a <script> element: no name can close it, open a comment or change the page."""
    return json_text.translate(_SCRIPT_UNSAFE)


def _script_json(value: object) -> str:
    return script_safe(json.dumps(value, separators=(",", ":")))


def _table(caption: str, header: list[str], rows: list[list[object]], klass: str = "") -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{klass}"><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>'


def _interval(interval: tuple[float, float] | None) -> str:
    return "-" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def comparisons_table(rows: list[Row]) -> str:
    found = []
    for row in rows:
        for c in row.comparisons:
            found.append(
                [row.label, c.against, c.other, f"{c.difference:+.3f}", _interval(c.ci95)]
                + [f"{c.probability_of_improvement:.2f}", c.verdict]
            )
    header = ["checkpoint", "against", "other", "difference", "95% CI (paired)", "P(improvement)", "verdict"]
    return _table("paired comparisons (same episode seeds)", header, found, "comparisons")


def errors_table(rows: list[Row]) -> str:
    failed = [[row.label, row.uri, row.error] for row in rows if row.error]
    table = _table(f"{len(failed)} checkpoint(s) failed", ["checkpoint", "uri", "error"], failed, "errors")
    unplayed = [[row.label, env, reason] for row in rows for env, reason in row.env_errors.items()]
    caption = f"{len(unplayed)} environment(s) a checkpoint could not play"
    return table + _table(caption, ["checkpoint", "environment", "why"], unplayed, "env-errors")


def vor_table(rows: list[Row]) -> str:
    """Each checkpoint's value over replacement against the --vor pool, with its paired interval and verdict."""
    found = [
        [row.label, f"{row.vor.value:+.3f}", _interval(row.vor.ci95), row.vor.verdict, ", ".join(row.vor.pool)]
        for row in rows
        if row.vor is not None
    ]
    header = ["checkpoint", "VOR", "95% CI (paired by seed)", "verdict", "pool"]
    return _table("value over replacement (cogames' pickup)", header, found, "vor")


def ratings_table(report: Report) -> str:
    """The ratings over the run's mixed episodes (openskill's Plackett-Luce with mu +- 3 sigma, and elote's Elo), in
    the report's order (`rating_system`)."""
    found = [
        [
            rating.policy_uri if rating.version == "co-player" else f"{rating.name}:{rating.version}",
            f"{rating.mu:.2f}",
            f"{rating.sigma:.2f}",
            f"{rating.ordinal:.2f}",
            f"[{rating.mu - 3 * rating.sigma:.2f}, {rating.mu + 3 * rating.sigma:.2f}]",
            f"{rating.elo:.1f}",
            rating.games,
        ]
        for rating in report.ratings
    ]
    header = ["policy", "mu", "sigma", "ordinal (mu - 3 sigma)", "mu +- 3 sigma", "Elo", "episodes"]
    order = "Elo" if report.rating_system == "elo" else "ordinal"
    return _table(f"ratings (openskill Plackett-Luce, and Elo), best {order} first", header, found, "ratings")


def lineups_table(rows: list[Row], envs: list[str]) -> str:
    """Mixed envs: who played beside each checkpoint, and the mean per-agent reward of its agents, the
    co-players' and everyone's."""
    found = [
        [env, row.label, cell.lineup, f"{cell.score:.3f}", f"{cell.npc_score:.3f}", f"{cell.all_score:.3f}"]
        for env in envs
        for row in rows
        for cell in [row.cells.get(env)]
        if cell is not None and cell.lineup is not None
    ]
    header = ["environment", "checkpoint", "line-up (agents per episode)", "candidate", "co-players", "all agents"]
    return _table("mixed line-ups: mean per-agent reward", header, found, "lineups")


def timing_tables(report: Report) -> str:
    timing = report.timing
    figures = [
        ["wall time", f"{timing.wall_s:.1f} s"],
        ["evaluation", f"{timing.evaluation_s:.1f} s"],
        ["Ray start", f"{timing.ray_init_s:.1f} s"],
        ["episodes played / from the store", f"{timing.episodes} / {timing.episodes_cached}"],
        ["agent-steps", f"{timing.agent_steps:,} ({timing.agent_steps_per_s:,.0f}/s)"],
        ["workers (replaced)", f"{timing.workers} ({timing.workers_replaced})"],
        ["policy loads", timing.policy_loads],
        ["work units", timing.units],
    ]
    workers = [
        [w.worker, w.device, w.node_id[:12], ",".join(w.gpu_ids) or "-", f"{w.gpu_share:g}", w.policy_loads]
        + [w.cache_hits, f"{w.peak_rss_mb:.0f} MB"]
        for w in report.workers
    ]
    header = ["worker", "device", "node", "GPU ids", "GPU share", "policy loads", "cache hits", "peak RSS"]
    return _table("timing", ["", ""], figures, "timing") + _table("workers", header, workers, "workers")


def cost_table(report: Report) -> str:
    """The cost estimate by node type, with its total and what it does not count (`evaluator.cost.estimate`)."""
    cost = report.cost
    if cost is None:
        return "<p>no cost estimate in this report</p>"
    rows = [
        [kind, c.nodes, f"{c.node_seconds:,.1f}", "unpriced" if c.usd_per_hour is None else f"{c.usd_per_hour:g}"]
        + ["-" if c.usd is None else f"{c.usd:.4f}"]
        for kind, c in cost.node_types.items()
    ]
    per_million = cost.usd_per_million_agent_steps
    total = f"total {cost.total_usd:.4f} USD" + (
        f", {per_million:.4f} USD per million agent-steps" if per_million else ""
    )
    notes = f"<p>{html.escape(total)}. {html.escape(cost.estimate)} Prices: {html.escape(cost.prices)}.</p>"
    header = ["node type", "nodes", "node-seconds", "USD per hour", "USD"]
    return notes + _table("an estimate, not a bill", header, rows, "cost")


def render_page(
    report: Report,
    rows: list[Row],
    envs: list[str],
    run_dir: Path,
    embed_budget_bytes: int = DEFAULT_EMBED_BUDGET_BYTES,
) -> str:
    """The page's HTML. `report` gives the header, timing and workers (its checkpoints are not read: a
    streamed run passes the skeleton); `rows` and `envs` give everything per checkpoint."""
    suite = report.simulation_suite
    figures = {
        "heatmap": heatmap(rows, envs).to_json(),
        "suite": suite_curve(suite, rows).to_json(),
        "environments": environment_multiples(rows, envs).to_json(),
        "crossplay": cross_play_heatmap(report.cross_play).to_json(),
    }
    data = {
        "rows": [row.label for row in rows],
        "envs": envs,
        "replays": replay_refs(rows, envs, run_dir, embed_budget_bytes),
    }
    figures_json = "{" + ",".join(f'"{name}":{fig}' for name, fig in figures.items()) + "}"
    title = f"{report.simulation_suite}: {report.run_name}"
    adaptive = report.adaptive
    subtitle = (
        f"{len(rows)} checkpoint(s) x {len(envs)} environment(s) · evaluator {report.evaluator_version} · "
        f"seed {report.seed}"
        + (f" · adaptive episodes (target 95% CI half-width {adaptive.target_ci})" if adaptive else "")
    )
    return PAGE_TEMPLATE.format(
        title=html.escape(title),
        suite=html.escape(suite),
        subtitle=html.escape(subtitle),
        css=asset("page.css"),
        plotly=get_plotlyjs(),
        player=asset("player.js"),
        page=asset("page.js"),
        figures=script_safe(figures_json),
        data=_script_json(data),
        comparisons=comparisons_table(rows) or "<p>no comparisons in this run</p>",
        errors=errors_table(rows) or "<p>every checkpoint was evaluated</p>",
        lineups=lineups_table(rows, envs) or "<p>every checkpoint played every agent of its episodes</p>",
        ratings=(ratings_table(report) or "<p>no mixed episodes in this run: nothing to rate</p>") + vor_table(rows),
        timing=timing_tables(report),
        cost=cost_table(report),
    )


def page_of_run(run_dir: Path) -> str:
    """The page of a finished run from its report.json (runs from before the page existed, `view`)."""
    report = Report.model_validate_json((run_dir / "report.json").read_bytes())
    page_rows, envs = rows_of(report)
    return render_page(report, page_rows, envs, run_dir)


PAGE_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
<script>{plotly}</script>
<script>{player}</script>
</head>
<body>
<header><h1>{title}</h1><p>{subtitle}</p>
<nav><a href="#scores">scores</a> <a href="#curves">curves</a> <a href="#environments">environments</a>
<a href="#lineups">line-ups</a> <a href="#ratings">ratings</a> <a href="#comparisons">comparisons</a>
<a href="#errors">errors</a> <a href="#timing">timing</a>
<a href="#cost">cost</a></nav></header>
<main>
<section id="scores"><h2>{suite}: score per checkpoint and environment</h2><div class="split">
<div id="heatmap" class="chart"></div>
<aside><h2>replay</h2><p id="replay-hint">click a cell of the heatmap to play its episode-0 replay</p>
<div id="player"></div></aside>
</div></section>
<section id="curves"><div id="suite" class="chart"></div></section>
<section id="environments"><div id="environment-multiples" class="chart"></div></section>
<section id="lineups"><h2>line-ups</h2>{lineups}</section>
<section id="ratings"><h2>ratings and cross-play</h2>{ratings}<div id="crossplay" class="chart"></div></section>
<section id="comparisons"><h2>comparisons</h2>{comparisons}</section>
<section id="errors"><h2>errors</h2>{errors}</section>
<section id="timing"><h2>timing and workers</h2>{timing}</section>
<section id="cost"><h2>cost</h2>{cost}</section>
</main>
<script type="application/json" id="scorecard-figures">{figures}</script>
<script type="application/json" id="scorecard-data">{data}</script>
<script>{page}</script>
</body>
</html>
"""
