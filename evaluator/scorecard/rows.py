"""What the scorecard keeps of each checkpoint: a few numbers per environment, the suite score and its band,
the comparisons and the replay URLs, never the whole `CheckpointReport` (10,000 of those are ~400 MB).

`RowCollector` takes them as report.json is streamed (`collecting` passes each checkpoint through), so the
driver renders the page without reading the report back; `rows_of` takes them from a report in memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from evaluator.reduce.report import CheckpointReport, Lineup, Report, Vor


@dataclass(frozen=True)
class Cell:
    """One environment of one checkpoint."""

    score: float
    ci95: tuple[float, float] | None
    episodes: int
    success_rate: float
    lineup: str | None = None
    """Who played beside the checkpoint in a mixed env (`2 candidate + 2 builtin://noop`); None: it played alone."""
    npc_score: float | None = None
    all_score: float | None = None


@dataclass(frozen=True)
class ComparisonLine:
    against: str
    other: str
    difference: float
    ci95: tuple[float, float] | None
    probability_of_improvement: float
    verdict: str


@dataclass
class Row:
    """One checkpoint of the run, as the page shows it."""

    label: str
    """`name:version`, made unique across the run (plotly merges equal category labels)."""
    policy_uri: str
    position: int
    """1-based order of the checkpoint within its policy."""
    uri: str
    error: str | None
    suite_score: float | None
    suite_ci95: tuple[float, float] | None
    cells: dict[str, Cell]
    comparisons: list[ComparisonLine]
    replays: dict[str, str]
    env_errors: dict[str, str] = field(default_factory=dict)
    vor: Vor | None = None

    @property
    def previous(self) -> ComparisonLine | None:
        return next((c for c in self.comparisons if c.against == "previous"), None)


def row_of(policy_uri: str, position: int, checkpoint: CheckpointReport, suite: str) -> Row:
    metrics = checkpoint.metrics
    cells = {}
    if metrics is not None:
        cells = {
            env: Cell(m.score, m.ci95, m.episodes, m.success_rate, lineup_text(m.lineup), m.npc_score, m.all_score)
            for env, m in metrics.environments.items()
        }
    comparisons = [
        ComparisonLine(
            c.against, f"{c.name}:{c.version}", c.difference, c.ci95, c.probability_of_improvement, c.verdict
        )
        for c in checkpoint.comparisons
    ]
    return Row(
        label=f"{checkpoint.name}:{checkpoint.version}",
        policy_uri=policy_uri,
        position=position,
        uri=checkpoint.uri,
        error=checkpoint.error,
        suite_score=metrics.suite_scores.get(f"{suite}/score") if metrics else None,
        suite_ci95=metrics.suite_ci95 if metrics else None,
        cells=cells,
        comparisons=comparisons,
        replays=dict(checkpoint.replays),
        env_errors=dict(checkpoint.env_errors),
        vor=metrics.vor if metrics else None,
    )


def lineup_text(lineup: Lineup | None) -> str | None:
    """`2 candidate + 1 builtin://noop + 1 builtin://random`: agents per policy in each episode."""
    if lineup is None:
        return None
    return " + ".join([f"{lineup.candidate_agents} candidate", *(f"{npc.agents} {npc.uri}" for npc in lineup.npcs)])


@dataclass
class RowCollector:
    """Rows gathered while something else consumes the checkpoints (the streamed report writer)."""

    suite: str
    rows: list[Row] = field(default_factory=list)
    environments: list[str] = field(default_factory=list)
    """In report order: every environment some checkpoint has metrics of (one that could not play an environment
    has none for it)."""

    def collecting(self, policy_uri: str, checkpoints: Iterable[CheckpointReport]) -> Iterator[CheckpointReport]:
        for position, checkpoint in enumerate(checkpoints, start=1):
            self.rows.append(row_of(policy_uri, position, checkpoint, self.suite))
            if checkpoint.metrics is not None and len(self.environments) < len(checkpoint.metrics.environments):
                self.environments = list(checkpoint.metrics.environments)
            yield checkpoint

    def finished(self) -> list[Row]:
        """The rows, labels made unique (the same checkpoint listed under two URIs is told apart, not merged)."""
        repeated = {label for label, count in Counter(r.label for r in self.rows).items() if count > 1}
        seen = Counter[str]()
        for row in self.rows:
            if row.label in repeated:
                seen[row.label] += 1
                row.label = f"{row.label} #{seen[row.label]}"
        return self.rows


def rows_of(report: Report) -> tuple[list[Row], list[str]]:
    """(rows, environments) of a report in memory."""
    collector = RowCollector(report.simulation_suite)
    for policy in report.policies:
        for _ in collector.collecting(policy.policy_uri, policy.checkpoints):
            pass
    return collector.finished(), collector.environments
