"""The cost estimate: what the evaluation held (node lifetimes, where its workers ran, how long each
checkpoint's units took) times the price table, in total, per node type, per checkpoint and per million
agent-steps. Pure: `evaluator.run.driver` fills a `Usage` as the run goes, `cost_report` prices it at the end.

What is counted: every node on which a worker of this evaluation ran (a pinned slot's node, a node a worker
reported from), for its time up between Ray's start (or the node's arrival) and the end of the evaluation,
as `evaluator.cost.node_clock` saw it. Not counted: nodes that ran none of our workers, the head the driver runs
on included (unless workers ran there: a local `ray.init`), the autoscaler's idle time after the run,
storage, transfer and discounts. A run in this process (no Ray) counts this machine (`local`) for the time
its units ran. A checkpoint's share is its units' worker seconds (loading and playing) over every
checkpoint's, so a checkpoint taken from the results store costs nothing in this run.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from actors.protocol import UnitResult, WorkUnit
from evaluator.cost.node_clock import NodeLifetime
from evaluator.cost.prices import PriceTable
from evaluator.reduce.report import CheckpointCost, CostReport, NodeTypeCost

logger = logging.getLogger(__name__)

ESTIMATE = (
    "estimate: each node where this evaluation's workers ran, for its time up during the evaluation (sampled "
    "every second), times its list price per node-hour; not counted: nodes without our workers (the head), idle "
    "time after the run, storage, transfer, discounts"
)

OnResult = Callable[[WorkUnit, UnitResult], None]


@dataclass(frozen=True)
class CheckpointIdentity:
    """Which checkpoint a run index is, for the cost block (the collector's entries, read at the end)."""

    policy_uri: str
    name: str
    version: str
    digest: str


@dataclass
class Usage:
    """What the evaluation held and did, gathered while it runs."""

    busy_s: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    """Checkpoint index -> worker seconds (load_s + run_s) of its units."""
    worker_nodes: set[str] = field(default_factory=set)
    """Node ids where our workers ran."""
    lifetimes: list[NodeLifetime] = field(default_factory=list)
    """Every node's time up during the evaluation (`evaluator.cost.node_clock`), used or not."""

    def record(self, unit: WorkUnit, result: UnitResult) -> None:
        self.busy_s[unit.checkpoint_index] += result.load_s + result.run_s
        if result.node_id:
            self.worker_nodes.add(result.node_id)

    def recording(self, on_result: OnResult) -> OnResult:
        """`on_result`, recording each unit's result here first."""

        def record_then(unit: WorkUnit, result: UnitResult) -> None:
            self.record(unit, result)
            on_result(unit, result)

        return record_then

    def ran_on(self, node_ids: Iterable[str | None]) -> None:
        self.worker_nodes.update(node_id for node_id in node_ids if node_id)


def cost_report(
    usage: Usage, prices: PriceTable, agent_steps: int, checkpoints: Sequence[CheckpointIdentity]
) -> CostReport:
    """Price `usage`: node-seconds by type (only nodes that ran our workers), priced where the table has the
    type; the total apportioned to checkpoints by busy seconds. An unpriced type is listed, warned about and
    left out of the total, never counted as free."""
    seconds: dict[str, float] = defaultdict(float)
    nodes: dict[str, set[str]] = defaultdict(set)
    for lifetime in usage.lifetimes:
        if lifetime.node_id in usage.worker_nodes:
            seconds[lifetime.node_type] += lifetime.seconds
            nodes[lifetime.node_type].add(lifetime.node_id)
    node_types = {kind: _priced(prices.usd_per_hour(kind), len(nodes[kind]), seconds[kind]) for kind in sorted(seconds)}
    unpriced = [kind for kind, cost in node_types.items() if cost.usd is None]
    if unpriced:
        logger.warning(
            "cost estimate: no price for node type %s in %s; left out of total_usd", ", ".join(unpriced), prices.path
        )
    total = sum(cost.usd for cost in node_types.values() if cost.usd is not None)
    return CostReport(
        estimate=ESTIMATE,
        prices=prices.described,
        total_usd=total,
        usd_per_million_agent_steps=total / agent_steps * 1e6 if agent_steps else None,
        node_types=node_types,
        checkpoints=apportion(total, usage.busy_s, checkpoints),
        unpriced=unpriced,
    )


def apportion(
    total_usd: float, busy_s: dict[int, float], checkpoints: Sequence[CheckpointIdentity]
) -> list[CheckpointCost]:
    """`total_usd` split over the checkpoints (in run order, by index) in proportion to their busy seconds; all
    zero when nothing was busy."""
    busy_total = sum(busy_s.values())
    return [
        CheckpointCost(
            policy_uri=identity.policy_uri,
            name=identity.name,
            version=identity.version,
            digest=identity.digest,
            busy_s=busy_s.get(index, 0.0),
            usd=total_usd * busy_s.get(index, 0.0) / busy_total if busy_total > 0 else 0.0,
        )
        for index, identity in enumerate(checkpoints)
    ]


def _priced(usd_per_hour: float | None, nodes: int, node_seconds: float) -> NodeTypeCost:
    usd = None if usd_per_hour is None else node_seconds / 3600 * usd_per_hour
    return NodeTypeCost(nodes=nodes, node_seconds=node_seconds, usd_per_hour=usd_per_hour, usd=usd)


def cost_metrics(cost: CostReport) -> dict[str, float]:
    """Flat W&B keys: `cost/total_usd`, `cost/usd_per_million_agent_steps` (when steps were played),
    `cost/node_seconds/<type>` and `cost/usd/<type>` (priced types)."""
    metrics = {"cost/total_usd": cost.total_usd}
    if cost.usd_per_million_agent_steps is not None:
        metrics["cost/usd_per_million_agent_steps"] = cost.usd_per_million_agent_steps
    for kind, node_cost in cost.node_types.items():
        metrics[f"cost/node_seconds/{kind}"] = node_cost.node_seconds
        if node_cost.usd is not None:
            metrics[f"cost/usd/{kind}"] = node_cost.usd
    return metrics
