"""Human-readable tables of a report (for `policy-evaluator summary` and the demo)."""

from __future__ import annotations

from rich.table import Table

from evaluator.reduce.report import CheckpointReport, Comparison, CostReport, Report


def _label(checkpoint: CheckpointReport) -> str:
    return checkpoint.name if checkpoint.version == "builtin" else f"{checkpoint.name} ({checkpoint.version})"


def _interval(interval: tuple[float, float] | None) -> str:
    return "-" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def _versus(checkpoint: CheckpointReport, against: str) -> str:
    """`+0.120 [0.05, 0.19] better` against that checkpoint, or blank."""
    found: list[Comparison] = [c for c in checkpoint.comparisons if c.against == against]
    if not found:
        return ""
    comparison = found[0]
    return f"{comparison.difference:+.3f} {_interval(comparison.ci95)} {comparison.verdict}"


def cost_line(cost: CostReport) -> str:
    """`$0.0123 (0.05 node-hours; $0.41 per million agent-steps)`, naming unpriced node types."""
    hours = sum(node.node_seconds for node in cost.node_types.values()) / 3600
    line = f"${cost.total_usd:.4g} ({hours:.2f} node-hours"
    if cost.usd_per_million_agent_steps is not None:
        line += f"; ${cost.usd_per_million_agent_steps:.4g} per million agent-steps"
    line += ")"
    if cost.unpriced:
        line += f", not counting unpriced {', '.join(cost.unpriced)}"
    return line


def summary_tables(report: Report) -> list[Table]:
    suite = report.simulation_suite
    checkpoints = [c for p in report.policies for c in p.checkpoints]
    overview = Table(title=f"{suite}: {report.run_name}")
    columns = ("checkpoint", f"{suite}/score", "95% CI", "IQM", "success", "vs previous (95% CI)", "error")
    for column in columns:
        overview.add_column(column, justify="right" if column in (f"{suite}/score", "IQM", "success") else "left")
    for checkpoint in checkpoints:
        metrics = checkpoint.metrics
        if metrics is None:
            overview.add_row(_label(checkpoint), "-", "-", "-", "-", "", checkpoint.error or "")
            continue
        success = sum(e.success_rate for e in metrics.environments.values()) / len(metrics.environments)
        overview.add_row(
            _label(checkpoint),
            f"{metrics.suite_scores[f'{suite}/score']:.3f}",
            _interval(metrics.suite_ci95),
            "-" if metrics.iqm is None else f"{metrics.iqm:.3f}",
            f"{success:.0%}",
            _versus(checkpoint, "previous"),
            "; ".join(checkpoint.env_errors.values()),
        )
    per_env = Table(title="score per environment (mean per-agent reward)")
    per_env.add_column("environment")
    scored = [c for c in checkpoints if c.metrics is not None]
    for checkpoint in scored:
        per_env.add_column(_label(checkpoint), justify="right")
    env_names = list(dict.fromkeys(env for c in scored for env in c.metrics.environments))
    for env in env_names:
        per_env.add_row(env, *(_env_score(c, env) for c in scored))
    timing = report.timing
    footer = Table(title="timing", show_header=False)
    footer.add_row("wall", f"{timing.wall_s:.1f} s (ray start {timing.ray_init_s:.1f} s)")
    footer.add_row("agent-steps", f"{timing.agent_steps:,} at {timing.agent_steps_per_s:,.0f}/s")
    footer.add_row("workers / policy loads", f"{timing.workers} / {timing.policy_loads}")
    if report.cost is not None:
        footer.add_row("cost (estimate)", cost_line(report.cost))
    mixed = _lineups_table(scored, env_names)
    tables = (mixed, _vor_table(scored), _ratings_table(report), _cross_play_table(report))
    extra = [table for table in tables if table is not None]
    return [overview, per_env, *extra, footer]


def _vor_table(scored: list[CheckpointReport]) -> Table | None:
    rows = [(c, c.metrics.vor) for c in scored if c.metrics.vor is not None]
    if not rows:
        return None
    pool = ", ".join(rows[0][1].pool)
    table = Table(title=f"value over replacement against {pool} (cogames' pickup; paired by seed)")
    for column in ("checkpoint", "VOR", "95% CI", "verdict"):
        table.add_column(column, justify="right" if column == "VOR" else "left")
    for checkpoint, vor in rows:
        table.add_row(_label(checkpoint), f"{vor.value:+.3f}", _interval(vor.ci95), vor.verdict)
    return table


def _ratings_table(report: Report) -> Table | None:
    if not report.ratings:
        return None
    order = "Elo" if report.rating_system == "elo" else "ordinal"
    table = Table(
        title=f"ratings over the mixed episodes, best {order} first (openskill Plackett-Luce: ordinal = mu - 3 sigma;"
        " elote's Elo over every pairing)"
    )
    for column in ("policy", "mu", "sigma", "ordinal", "elo", "games"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for rating in report.ratings:
        label = rating.policy_uri if rating.version == "co-player" else f"{rating.name}:{rating.version}"
        figures = (f"{rating.mu:.2f}", f"{rating.sigma:.2f}", f"{rating.ordinal:.2f}", f"{rating.elo:.1f}")
        table.add_row(label, *figures, str(rating.games))
    return table


def _cross_play_table(report: Report) -> Table | None:
    """Rows: the policy; columns: whom it met; cells: its win rate (and mean reward) over their episodes."""
    if not report.cross_play:
        return None
    players = list(dict.fromkeys(cell.policy for cell in report.cross_play))
    met = {(cell.policy, cell.against): cell for cell in report.cross_play}
    table = Table(title="cross-play: win rate (mean reward) of the row's agents against the column's")
    table.add_column("policy")
    for player in players:
        table.add_column(player, justify="right")
    for row in players:
        cells = [met.get((row, column)) for column in players]
        table.add_row(row, *(f"{c.win_rate:.0%} ({c.mean_reward:.2f})" if c else "-" for c in cells))
    return table


def _env_score(checkpoint: CheckpointReport, env: str) -> str:
    found = checkpoint.metrics.environments.get(env) if checkpoint.metrics else None
    return f"{found.score:.2f}" if found is not None else "error"


def _lineups_table(scored: list[CheckpointReport], env_names: list[str]) -> Table | None:
    """Mixed envs: who played beside each checkpoint, and its score, the co-players' and everyone's."""
    rows = []
    for env in env_names:
        for checkpoint in scored:
            found = checkpoint.metrics.environments.get(env)
            if found is None or found.lineup is None:
                continue
            others = ", ".join(f"{npc.agents} {npc.uri}" for npc in found.lineup.npcs)
            lineup = f"{found.lineup.candidate_agents} candidate + {others}"
            rows.append((env, _label(checkpoint), lineup, found.score, found.npc_score, found.all_score))
    if not rows:
        return None
    table = Table(title="mixed line-ups (agents per episode; mean per-agent reward)")
    for column in ("environment", "checkpoint", "line-up", "candidate", "co-players", "all"):
        table.add_column(column, justify="right" if column in ("candidate", "co-players", "all") else "left")
    for env, label, lineup, score, npc_score, all_score in rows:
        table.add_row(env, label, lineup, f"{score:.2f}", f"{npc_score:.2f}", f"{all_score:.2f}")
    return table
