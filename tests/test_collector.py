"""The run's sink and collector let go of episodes: replays are written and dropped, rows go to Parquet as they
arrive (the sink), a checkpoint's episodes are reduced when its last one is in (whatever the arrival order)
and dropped (the collector, which writes nothing)."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow.parquet as pq

from actors.protocol import UnitResult
from evaluator.reduce.assembly import checkpoint_metrics
from evaluator.reduce.collector import Collector, Entry
from evaluator.reduce.run_directory import EpisodeTable
from evaluator.reduce.sink import RunSink
from evaluator.run.plan import make_plan
from evaluator.sources import Checkpoint
from sim.metrics import EpisodeResult
from sim.suites import get_suite

SUITE = get_suite("smoke").with_episodes(3)


def played(job) -> EpisodeResult:
    rewards = tuple(float((job.seed + agent) % 3) for agent in range(job.env.num_agents))
    replay = b"replay" if job.record_replay else None
    return EpisodeResult(
        job.env.name, job.episode, job.seed, rewards, steps=5 + job.episode, stats={"x": 1.0}, replay=replay
    )


def test_episodes_are_reduced_per_checkpoint_and_dropped(tmp_path: Path):
    checkpoints = [Checkpoint(f"c{i}", f"file:///c{i}", "v1", f"sha256:{i}", b"x") for i in range(3)]
    entries = [Entry("file:///run", c) for c in checkpoints]
    units = make_plan(checkpoints, SUITE, shard_size=1)
    random.Random(0).shuffle(units)  # arrival order is any order
    table = EpisodeTable(tmp_path / "episodes.parquet")
    sink, collector = RunSink(tmp_path, table), Collector(entries, SUITE)
    completed = []
    for unit in units:
        result = UnitResult(unit.unit_id, "w", tuple(played(job) for job in unit.jobs))
        collector.add(unit, result, sink.write(unit.checkpoint_index, entries[unit.checkpoint_index], result.episodes))
        assert all(e.replay is None and not e.stats for kept in collector.results.values() for e in kept)
        completed.append(set(collector.metrics))
        assert not set(collector.metrics) & set(collector.results), "a reduced checkpoint's episodes were kept"
    table.close()
    assert collector.results == {} and set(collector.metrics) == {0, 1, 2}
    assert completed[len(units) // 2] != {0, 1, 2}, "checkpoints are reduced as they complete, not at the end"
    for index in range(3):  # the same figures as reducing all of its episodes at once
        mine = [played(job) for unit in units if unit.checkpoint_index == index for job in unit.jobs]
        assert collector.metrics_of(index) == checkpoint_metrics(SUITE, mine)
    assert pq.read_table(tmp_path / "episodes.parquet").num_rows == len(units)
    assert len(list(tmp_path.rglob("*_ep0.json.z"))) == 3 * len(SUITE.envs)


def test_the_streamed_report_is_the_full_reports_json(tmp_path: Path):
    """report.json written checkpoint by checkpoint is byte for byte what dumping the whole report gives
    (two policies, one with no checkpoints, an error, a replay URL), and reads back as the same report."""
    from evaluator.reduce.assembly import build_report
    from evaluator.reduce.report import CheckpointReport, Timing
    from evaluator.reduce.run_directory import write_report_streamed

    results = [
        played(job) for unit in make_plan([Checkpoint("c", "u", "v", "d")], SUITE, shard_size=1) for job in unit.jobs
    ]
    good = CheckpointReport(
        name="c0",
        uri="file:///c0",
        version="v1",
        digest="sha256:0",
        metrics=checkpoint_metrics(SUITE, results),
        replay_url="file:///r/0.json.z",
    )
    bad = CheckpointReport(name="c1", uri="file:///c1", version="v2", digest="", error='gone: "c1"')
    timing = Timing(
        wall_s=1,
        ray_init_s=0,
        evaluation_s=1,
        agent_steps=5,
        agent_steps_per_s=5,
        episodes=2,
        policy_loads=1,
        workers=1,
    )
    uris = ["file:///run", "builtin://none", "s3://b/p"]
    by_policy = {"file:///run": [good, bad], "builtin://none": [], "s3://b/p": [bad]}
    full = build_report([(u, c) for u in uris for c in by_policy[u]], SUITE, uris, "run", timing, [])
    skeleton = build_report([], SUITE, uris, "run", timing, [])
    path = write_report_streamed(tmp_path, skeleton, [iter(by_policy[u]) for u in uris])
    assert path.read_text() == full.model_dump_json(indent=2)
    assert type(full).model_validate_json(path.read_text()) == full
