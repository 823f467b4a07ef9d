"""OUTPUT_URI wandb://<entity>/<project>[/<run_id>]: log the results to a W&B run, as the seed did.

The run has job type `policy_evaluation` (resumed when a run id is given); its summary holds, for the
latest checkpoint, the seed's keys (`<suite>/score`, `<suite>/<env>`, `reward_avg`) and the keys Metta logs
its own evaluations under (`evaluator/eval_<suite>/score`, `evaluator/eval_<suite>/<env>`,
`overview/evaluator/<suite>_score`, so Metta's dashboards and panels read our results unchanged), plus the
same keys under `<checkpoint>:<version>/` for every checkpoint; a `wandb.Table` holds one row per checkpoint
and environment; report.json is logged as an artifact of type `evaluation_results` and waited for, so a
successful return means W&B has it.
"""

from __future__ import annotations

import re
from pathlib import Path

from evaluator.outputs import OutputError
from evaluator.report import Report
from evaluator.sources import SourceSettings
from evaluator.wandb_client import require_key
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
            summary |= metrics | {f"{checkpoint.name}:{checkpoint.version}/{k}": v for k, v in metrics.items()}
    return summary


def table_rows(report: Report) -> list[list[object]]:
    rows = []
    for policy in report.policies:
        for c in policy.checkpoints:
            for env, m in c.metrics.environments.items() if c.metrics else ():
                row = [policy.policy_uri, c.name, c.version, c.digest, env, m.score, m.std, *m.ci95]
                rows.append(row + [m.success_rate, m.episodes, m.mean_steps])
    return rows


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
            run.log({"evaluation": wandb.Table(columns=TABLE_COLUMNS, data=table_rows(report))})
            artifact = wandb.Artifact(name=f"evaluation_results_{report.run_name}", type="evaluation_results")
            artifact.add_file(str(run_dir / "report.json"), name="report.json")
            run.log_artifact(artifact).wait()
        finally:
            run.finish()
    except Exception as exc:  # wandb raises many types (CommError, UsageError, timeouts): all mean "not delivered"
        raise OutputError(f"logging results to {output_uri} failed: {first_line(exc)}") from None
