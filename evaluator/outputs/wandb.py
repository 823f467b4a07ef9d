"""OUTPUT_URI wandb://<entity>/<project>[/<run_id>]: log the results to a W&B run, as the seed did.

The run has job type `policy_evaluation` (resumed when a run id is given); its summary holds, for the
latest checkpoint, the seed's keys (`<suite>/score`, `<suite>/<env>`, `reward_avg`) and the keys Metta logs
its own evaluations under (`evaluator/eval_<suite>/score`, `evaluator/eval_<suite>/<env>`,
`overview/evaluator/<suite>_score`, so Metta's dashboards and panels read our results unchanged), plus the
same keys under `<checkpoint>:<version>/` for every checkpoint; a `wandb.Table` holds one row per checkpoint
and environment, next to the run's page (`scorecard`, report.html) and its heatmap (`heatmap`); report.json
is logged as an artifact of type `evaluation_results` and waited for, so a successful return means W&B has
it.
"""

from __future__ import annotations

import re
from pathlib import Path

from evaluator.clients.wandb import require_key
from evaluator.cost.estimate import cost_metrics
from evaluator.outputs import OutputError
from evaluator.reduce.report import CheckpointReport, Report
from evaluator.sources import SourceSettings
from sim.errors import UsageError, first_line

_OUTPUT_FORM = re.compile(r"^wandb://(?P<entity>[\w.\-]+)/(?P<project>[\w.\-]+)(?:/(?P<run_id>[\w.\-]+))?/?$")
TABLE_COLUMNS = [
    "policy_uri",
    "checkpoint",
    "version",
    "digest",
    "env",
    "score",
    "std",
    "ci95_low",
    "ci95_high",
    "success_rate",
    "episodes",
    "mean_steps",
]


def parse_output_uri(output_uri: str) -> tuple[str, str, str | None]:
    match = _OUTPUT_FORM.match(output_uri)
    if not match:
        raise UsageError(f"malformed W&B OUTPUT_URI {output_uri!r}; expected wandb://<entity>/<project>[/<run_id>]")
    return match["entity"], match["project"], match["run_id"]


def summary_metrics(report: Report) -> dict[str, float]:
    """Metta's keys: unprefixed for the last evaluated checkpoint, prefixed by `<name>:<version>/` for all."""
    suite = report.simulation_suite
    summary: dict[str, float] = {}
    ratings = {rating.digest: rating for rating in report.ratings}
    for policy in report.policies:
        for checkpoint in policy.checkpoints:
            if checkpoint.metrics is None:
                continue
            score = checkpoint.metrics.suite_scores[f"{suite}/score"]
            envs = {env: m.score for env, m in checkpoint.metrics.environments.items()}
            metrics = {f"{suite}/score": score} | {f"{suite}/{env}": s for env, s in envs.items()}
            metrics["reward_avg"] = checkpoint.metrics.reward_avg
            # Metta's evaluation keys (`send_eval_results_to_wandb` / `process_policy_evaluator_stats` with
            # metta/rl/wandb.py's prefix "evaluator"): `evaluator/eval_<category>/score`, `.../<sim>`, and
            # `overview/evaluator/<category>_score`.
            metrics[f"evaluator/eval_{suite}/score"] = score
            metrics |= {f"evaluator/eval_{suite}/{env}": s for env, s in envs.items()}
            metrics[f"overview/evaluator/{suite}_score"] = score
            metrics |= _statistics(suite, checkpoint)
            if checkpoint.metrics.vor is not None:  # value over replacement against the --vor pool
                metrics[f"{suite}/vor"] = checkpoint.metrics.vor.value
            rating = ratings.get(checkpoint.digest)
            if rating is not None:  # openskill and Elo over the run's mixed episodes
                metrics |= {f"{suite}/rating/{key}": getattr(rating, key) for key in ("mu", "sigma", "ordinal", "elo")}
            for env, m in checkpoint.metrics.environments.items():  # mixed envs: the co-players' and everyone's
                if m.lineup is not None:
                    metrics |= {f"{suite}/{env}/npc_score": m.npc_score, f"{suite}/{env}/all_score": m.all_score}
            summary |= metrics | {f"{checkpoint.name}:{checkpoint.version}/{k}": v for k, v in metrics.items()}
    if report.cost is not None:  # the estimate of what the evaluation cost (`cost/total_usd`, ...)
        summary |= cost_metrics(report.cost)
    return summary


def _statistics(suite: str, checkpoint: CheckpointReport) -> dict[str, float]:
    """The suite score's interval and IQM, and each comparison (`<suite>/vs_<previous|best|baseline>/...`:
    difference, its paired interval, probability of improvement, verdict as +1 / 0 / -1)."""
    metrics = checkpoint.metrics
    assert metrics is not None
    found: dict[str, float] = {}
    if metrics.suite_ci95 is not None:
        found |= {f"{suite}/score_ci95_low": metrics.suite_ci95[0], f"{suite}/score_ci95_high": metrics.suite_ci95[1]}
    if metrics.iqm is not None:
        found[f"{suite}/iqm"] = metrics.iqm
    for comparison in checkpoint.comparisons:
        prefix = f"{suite}/vs_{comparison.against}"
        found[f"{prefix}/difference"] = comparison.difference
        found[f"{prefix}/probability_of_improvement"] = comparison.probability_of_improvement
        found[f"{prefix}/verdict"] = VERDICT_SIGN[comparison.verdict]
        if comparison.ci95 is not None:
            found[f"{prefix}/ci95_low"], found[f"{prefix}/ci95_high"] = comparison.ci95
    return found


VERDICT_SIGN = {"better": 1.0, "no difference": 0.0, "worse": -1.0}


def table_rows(report: Report) -> list[list[object]]:
    rows = []
    for policy in report.policies:
        for c in policy.checkpoints:
            for env, m in c.metrics.environments.items() if c.metrics else ():
                row = [policy.policy_uri, c.name, c.version, c.digest, env, m.score, m.std, *(m.ci95 or (None, None))]
                rows.append(row + [m.success_rate, m.episodes, m.mean_steps])
    return rows


def scorecard(run_dir: Path, report: Report) -> dict[str, object]:
    """The run's page (`wandb.Html`, self-contained: it plays its replays inside W&B too) and its heatmap
    (`wandb.Plotly`, W&B's own interactive chart), next to the table."""
    import wandb

    from evaluator.scorecard.figures import heatmap
    from evaluator.scorecard.page import PAGE_NAME
    from evaluator.scorecard.rows import rows_of

    rows, envs = rows_of(report)
    logged: dict[str, object] = {"heatmap": wandb.Plotly(heatmap(rows, envs))}
    page = run_dir / PAGE_NAME
    if page.is_file():  # absent only when drawing it failed (logged then)
        logged["scorecard"] = wandb.Html(page.read_text(encoding="utf-8"), inject=False)
    return logged


def log_run(run_dir: Path, report: Report, output_uri: str, settings: SourceSettings) -> None:
    entity, project, run_id = parse_output_uri(output_uri)
    key = require_key(settings.wandb_api_key, output_uri)
    import wandb

    try:
        run = wandb.init(
            entity=entity,
            project=project,
            id=run_id,
            resume="allow" if run_id else None,
            job_type="policy_evaluation",
            name=report.run_name,
            config={"simulation_suite": report.simulation_suite, "seed": report.seed, "run_name": report.run_name},
            settings=wandb.Settings(api_key=key, silent=True, console="off", save_code=False),
        )
        try:
            run.summary.update(summary_metrics(report))
            run.log(
                {"evaluation": wandb.Table(columns=TABLE_COLUMNS, data=table_rows(report))} | scorecard(run_dir, report)
            )
            artifact = wandb.Artifact(name=f"evaluation_results_{report.run_name}", type="evaluation_results")
            artifact.add_file(str(run_dir / "report.json"), name="report.json")
            run.log_artifact(artifact).wait()
        finally:
            run.finish()
    except Exception as exc:  # wandb raises many types (CommError, UsageError, timeouts): all mean "not delivered"
        raise OutputError(f"logging results to {output_uri} failed: {first_line(exc)}") from None
