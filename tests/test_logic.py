"""Pure logic without Ray: config, sources, plan, reduction, worker cache."""

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from actors.eval_worker import EvalWorker, resolve_device
from evaluator.config import EvalConfig, default_run_name
from evaluator.reduce.assembly import checkpoint_metrics
from evaluator.run.plan import make_plan
from evaluator.sources import resolve
from evaluator.sources.files import natural_key
from evaluator.sources.selection import select
from sim.errors import UsageError
from sim.metrics import EpisodeResult, summarize
from sim.suites import get_suite
from tests.conftest import state_dict_bytes, tiny_model

SMOKE = get_suite("smoke")


def test_config_splits_commas_and_names_the_run():
    config = EvalConfig(policy_uris=["builtin://navigator, file:///x/run_7/"])
    assert config.policy_uris == ("builtin://navigator", "file:///x/run_7/")
    assert config.run_name.startswith("eval_navigator_")
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert default_run_name("file:///runs/my run/", now) == "eval_my_run_20260102T030405Z"
    with pytest.raises(ValidationError):
        EvalConfig(policy_uris=())
    with pytest.raises(ValidationError):
        EvalConfig(policy_uris=("x",), run_name="../escape")


def test_natural_sort_and_directory_sources(checkpoint_dir: Path, tmp_path: Path):
    assert sorted(["c10", "c2", "c1"], key=natural_key) == ["c1", "c2", "c10"]
    checkpoints = resolve(checkpoint_dir.as_uri(), "all")
    assert [(c.name, c.version) for c in checkpoints] == [("ckpt_2", "v1"), ("ckpt_10", "v2")]
    assert len({c.digest for c in checkpoints}) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="is empty"):
        resolve(str(tmp_path / "empty"))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("x")
    with pytest.raises(UsageError, match="holds no checkpoint files"):
        resolve(str(tmp_path / "notes"))


def test_plan_shards_and_seeds_do_not_depend_on_shard_size(checkpoint_dir: Path):
    checkpoints = resolve(str(checkpoint_dir), "all")
    suite = SMOKE.with_episodes(5)
    small, large = (make_plan(checkpoints, suite, shard_size=s) for s in (2, 5))
    assert len(small) == 2 * 2 * 3 and len(large) == 2 * 2
    assert [u.unit_id for u in small] == list(range(len(small)))

    def seeds(units):
        return sorted((u.checkpoint_index, j.env.name, j.episode, j.seed) for u in units for j in u.jobs)

    assert seeds(small) == seeds(large)
    assert sum(j.record_replay for u in small for j in u.jobs) == 2 * 2
    assert not any(j.record_replay for u in make_plan(checkpoints, suite, shard_size=2, replays=False) for j in u.jobs)


def _result(env: str, episode: int, rewards: tuple[float, ...], steps: int = 10) -> EpisodeResult:
    return EpisodeResult(env=env, episode=episode, seed=episode, rewards=rewards, steps=steps)


def test_reduction_to_metta_metric_names():
    results = [
        _result("tiny_room", 0, (2.0,)),
        _result("tiny_room", 1, (0.0,)),
        _result("tiny_random", 0, (1.0, 0.0)),
        _result("tiny_random", 1, (1.0, 1.0)),
    ]
    metrics = checkpoint_metrics(SMOKE, results)
    assert metrics.simulation_scores == {"smoke/tiny_room/score": 1.0, "smoke/tiny_random/score": 0.75}
    assert metrics.suite_scores == {"smoke/score": 0.875}
    assert metrics.reward_avg == pytest.approx((2 + 0 + 0.5 + 1) / 4)
    room = metrics.environments["tiny_room"]
    assert room.success_rate == 0.5 and room.std == pytest.approx(2**0.5)
    assert room.ci95[0] < 1.0 < room.ci95[1]
    single = summarize([_result("x", 0, (3.0,))])
    assert (single.score, single.std, single.episodes) == (3.0, 0.0, 1)


def test_resolve_device():
    assert resolve_device("cpu", ["0"], True) == "cpu"
    assert resolve_device("cuda", [], True) == "cpu"
    assert resolve_device("cuda", ["1"], False) == "cpu"
    assert resolve_device("cuda", ["1"], True) == "cuda:0"


def test_worker_caches_policies_lru_and_reports_errors(checkpoint_dir: Path):
    [first, second] = resolve(str(checkpoint_dir), "all")
    units = make_plan([first, second], SMOKE.with_episodes(1), shard_size=1, replays=False)
    data = {first.digest: first.data, second.digest: second.data}
    worker = EvalWorker(policy_cache_size=1)
    results = [worker.run(unit, data[unit.checkpoint_digest]) for unit in units + units[:1]]
    assert [r.loaded for r in results] == [True, False, True, False, True]
    stats = worker.stats()
    assert (stats.policy_loads, stats.cache_hits) == (3, 2)
    model, kwargs = tiny_model(0, hidden=8)
    broken = state_dict_bytes(model, {**kwargs, "hidden": 16})
    error = worker.run(replace(units[0], checkpoint_digest="sha256:other"), broken)
    assert error.error and "does not fit" in error.error and not error.episodes


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("latest", ["v5"]),
        ("all", ["v1", "v2", "v3", "v4", "v5"]),
        ("last:2", ["v4", "v5"]),
        ("last:9", ["v1", "v2", "v3", "v4", "v5"]),
        ("every:2", ["v1", "v3", "v5"]),
        ("every:3", ["v2", "v5"]),
        ("v2,v4", ["v2", "v4"]),
        (" v4, v2 ", ["v2", "v4"]),
    ],
)
def test_checkpoint_selection(selector: str, expected: list[str]):
    versions = [f"v{i}" for i in range(1, 6)]
    assert select(versions, versions, selector, "run") == expected


@pytest.mark.parametrize("selector", ["newest", "last:0", "every:x", "3", "v1;v2"])
def test_bad_selectors_are_usage_errors(selector: str):
    with pytest.raises(UsageError, match="latest, all, last:N, every:K"):
        select(["v1"], ["v1"], selector, "run")
    with pytest.raises(ValidationError):
        EvalConfig(policy_uris=("x",), checkpoints=selector)


def test_missing_explicit_version_lists_available():
    with pytest.raises(UsageError, match="run has no checkpoint v9; available: v1, v2"):
        select(["a", "b"], ["v1", "v2"], "v9", "run")


def test_every_option_of_an_evaluation_is_in_exactly_one_slice():
    """`EvalConfig` is validated whole at the edge and handed out in frozen slices, each taken by the module
    that owns it (selection, suite and episodes, workers and cluster, storage and outputs, W&B)."""
    from evaluator.config import SLICES

    owners = [name for kind in SLICES for name in kind.model_fields]
    assert sorted(owners) == sorted(EvalConfig.model_fields), "a field in no slice, or in two"
    config = EvalConfig(policy_uris=("builtin://random",), device="cpu", num_workers=3, wandb_entity="e")
    assert config.workers.num_workers == 3 and config.wandb.wandb_entity == "e"
    assert config.selection.policy_uris == ("builtin://random",) and config.play.suite == "navigation"
    with pytest.raises(ValueError, match="frozen"):
        config.workers.num_workers = 4
