"""Human-readable tables of a report (for `policy-evaluator summary` and the demo)."""

from __future__ import annotations

from rich.table import Table

from evaluator.report import CheckpointReport, Report


def _label(checkpoint: CheckpointReport) -> str:
    return checkpoint.name if checkpoint.version == "builtin" else f"{checkpoint.name} ({checkpoint.version})"


def summary_tables(report: Report) -> list[Table]:
    suite = report.simulation_suite
    checkpoints = [c for p in report.policies for c in p.checkpoints]
    overview = Table(title=f"{suite}: {report.run_name}")
    for column in ("checkpoint", f"{suite}/score", "reward_avg", "success", "error"):
        overview.add_column(column, justify="left" if column in ("checkpoint", "error") else "right")
    for checkpoint in checkpoints:
        metrics = checkpoint.metrics
        if metrics is None:
            overview.add_row(_label(checkpoint), "-", "-", "-", checkpoint.error or "")
            continue
        success = sum(e.success_rate for e in metrics.environments.values()) / len(metrics.environments)
        overview.add_row(
            _label(checkpoint),
            f"{metrics.suite_scores[f'{suite}/score']:.3f}",
            f"{metrics.reward_avg:.3f}",
            f"{success:.0%}",
            "",
        )
    per_env = Table(title="score per environment (mean per-agent reward)")
    per_env.add_column("environment")
    scored = [c for c in checkpoints if c.metrics is not None]
    for checkpoint in scored:
        per_env.add_column(_label(checkpoint), justify="right")
    env_names = list(scored[0].metrics.environments) if scored else []
    for env in env_names:
        per_env.add_row(env, *(f"{c.metrics.environments[env].score:.2f}" for c in scored))
    timing = report.timing
    footer = Table(title="timing", show_header=False)
    footer.add_row("wall", f"{timing.wall_s:.1f} s (ray start {timing.ray_init_s:.1f} s)")
    footer.add_row("agent-steps", f"{timing.agent_steps:,} at {timing.agent_steps_per_s:,.0f}/s")
    footer.add_row("workers / policy loads", f"{timing.workers} / {timing.policy_loads}")
    return [overview, per_env, footer]
