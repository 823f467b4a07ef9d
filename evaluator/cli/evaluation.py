"""`run`, `entrypoint` and `sweep`: evaluations, each offered every evaluation option (`EVALUATION_OPTIONS`),
whose values reach the command as `**evaluation` and are validated once into an `EvalConfig`."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from evaluator.cli.command import Printed, command
from evaluator.cli.option_sets import EVALUATION_OPTIONS, with_options
from evaluator.config import MAX_SECONDS, EvalConfig
from evaluator.markers import MARKER_END, MARKER_START
from evaluator.options import SELECTION, Checkpoints, PolicyUris, SweepCheckpoints
from sim.errors import ExitCode, UsageError

logger = logging.getLogger(__name__)

Markers = Annotated[
    bool, typer.Option(help=f"Wrap the JSON in {MARKER_START} / {MARKER_END} lines (for Ray job logs).")
]
ShowProgress = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")]
PoliciesFile = Annotated[
    Path | None,
    typer.Option(
        envvar="SWEEP_POLICIES_FILE",
        rich_help_panel=SELECTION,
        help="A file of policy URIs, one per line ('#' comments), added to -p.",
    ),
]
LeaseTtl = Annotated[
    float,
    typer.Option(
        envvar="SWEEP_LEASE_TTL",
        min=0,
        max=MAX_SECONDS,
        help="Seconds after which an unrenewed lease is stale (renewed every third).",
    ),
]
WaitForLeases = Annotated[
    float,
    typer.Option(
        envvar="SWEEP_WAIT_FOR_LEASES",
        min=0,
        max=MAX_SECONDS,
        help="Seconds to wait for checkpoints another sweep is evaluating.",
    ),
]
IncludeCached = Annotated[
    bool,
    typer.Option(help="Also report checkpoints already in the results store (from the cache, nothing replayed)."),
]


PlanOnly = Annotated[
    bool,
    typer.Option(
        "--plan-only",
        help="Print the episodes this evaluation needs (a comparison at 80% power, and --target-ci's interval), "
        "estimated from the results database's earlier episodes (or a --min-episodes pilot); evaluate nothing.",
    ),
]
Difference = Annotated[
    float | None,
    typer.Option(
        help="With --plan-only: the score difference to tell apart [default: 0.1 of each environment's score spread].",
        min=0,
        max=1e9,
    ),
]


@command()
@with_options(EVALUATION_OPTIONS)
def run(
    # `...`: required. typer keeps the default a shared declaration got last (None, from `entrypoint`) otherwise.
    policy_uri: PolicyUris = ...,  # type: ignore[assignment]
    checkpoints: Checkpoints = "latest",
    markers: Markers = False,
    progress: ShowProgress = True,
    plan_only: PlanOnly = False,
    difference: Difference = None,
    **evaluation: Any,
) -> Printed:
    """Evaluate the selected checkpoints of the given policies and print the JSON report on stdout (with
    --plan-only: the episodes the evaluation would need, estimated, and nothing evaluated)."""
    if plan_only:
        from evaluator.run.power_plan import plan_only as power_plan

        config = EvalConfig.model_validate(
            {**evaluation, "policy_uris": tuple(policy_uri or []), "checkpoints": checkpoints}
        )
        return Printed(power_plan(config, difference).model_dump_json(indent=2))
    if difference is not None:
        raise UsageError("--difference sizes a comparison for --plan-only: use it with --plan-only")
    return _evaluate(evaluation, policy_uri or [], checkpoints, progress)


@command(usage_exit=ExitCode.FAILED, always_markers=True)
@with_options(EVALUATION_OPTIONS)
def entrypoint(policy_uri: PolicyUris = None, checkpoints: Checkpoints = "latest", **evaluation: Any) -> Printed:
    """The container's command: configured by environment variables (POLICY_URI required, and the variables
    `run` reads, see .env.example); the JSON between markers; bad input exits 1 (the seed's contract), an
    outage 3."""
    return _evaluate(evaluation, policy_uri or [], checkpoints, progress=False)


def _evaluate(evaluation: dict[str, Any], policy_uri: list[str], checkpoints: str, progress: bool) -> Printed:
    from evaluator.cli.progress_bar import EpisodeProgressBar
    from evaluator.run.driver import evaluate

    config = EvalConfig.model_validate({**evaluation, "policy_uris": tuple(policy_uri), "checkpoints": checkpoints})
    with EpisodeProgressBar() if progress else contextlib.nullcontext() as bar:
        outcome = evaluate(config, on_progress=bar)
    logger.info("wrote %s", outcome.run_dir)
    return Printed(outcome.run_dir / "report.json", tuple(outcome.failures) if outcome.failed else None)


@command()
@with_options(EVALUATION_OPTIONS)
def sweep(
    policy_uri: PolicyUris = None,
    policies_file: PoliciesFile = None,
    checkpoints: SweepCheckpoints = "all",
    lease_ttl: LeaseTtl = 900.0,
    wait_for_leases: WaitForLeases = 0.0,
    include_cached: IncludeCached = False,
    markers: Markers = False,
    progress: ShowProgress = True,
    **evaluation: Any,
) -> Printed:
    """Evaluate only the checkpoints not yet in the results database, each once even when sweeps overlap
    (leases in the same database, `--results-db`); print every checkpoint's state and the report of what was
    evaluated."""
    from evaluator.cli.progress_bar import EpisodeProgressBar
    from evaluator.run.sweep import SweepConfig, read_policy_list
    from evaluator.run.sweep import sweep as run_sweep

    uris = [u.strip() for item in policy_uri or [] for u in item.split(",") if u.strip()]
    if policies_file is not None:
        try:
            uris += read_policy_list(policies_file)
        except OSError as exc:
            raise UsageError(f"cannot read the policies file {policies_file}: {exc.strerror or exc}") from None
    if not uris:
        raise UsageError("no policy given: pass --policy-uri / POLICY_URI or --policies-file / SWEEP_POLICIES_FILE")
    run_name = evaluation["run_name"] or f"sweep_{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    config = SweepConfig(
        evaluation=EvalConfig.model_validate(
            {**evaluation, "policy_uris": tuple(uris), "checkpoints": checkpoints, "run_name": run_name}
        ),
        lease_ttl_s=lease_ttl,
        wait_for_leases_s=wait_for_leases,
        include_cached=include_cached,
    )
    with EpisodeProgressBar() if progress else contextlib.nullcontext() as bar:
        result = run_sweep(config, on_progress=bar)
    if not result.failed:
        return Printed(result.model_dump_json(indent=2))
    failures = [f"{c.name} ({c.version}): {c.error}" for c in result.checkpoints if c.error]
    report = result.report
    failures += [report.output.error] if report and report.output and report.output.error else []
    return Printed(result.model_dump_json(indent=2), tuple(failures))
