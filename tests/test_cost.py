"""The cost estimate without Ray: node lifetimes from samples of the node list, the price table and its
validation, pricing and apportioning to checkpoints, the W&B keys."""

from __future__ import annotations

import itertools
import logging
import threading
from pathlib import Path

import pytest
import yaml

from actors.protocol import UnitResult, WorkUnit
from evaluator.cost.estimate import CheckpointIdentity, Usage, apportion, cost_metrics, cost_report
from evaluator.cost.node_clock import NodeClock, NodeLedger, NodeLifetime, node_type
from evaluator.cost.prices import DEFAULT_PRICES_FILE, load_prices
from sim.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


def node(node_id: str, alive: bool = True, **labels: str) -> dict:
    return {"NodeID": node_id, "Alive": alive, "Labels": {k.replace("_", "-"): v for k, v in labels.items()}}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    return path


# -- node lifetimes ----------------------------------------------------------------------------------------------


def test_node_type_prefers_the_instance_type_label():
    assert node_type({"instance-type": "g5.4xlarge", "ray.io/node-group": "gpu"}) == "g5.4xlarge"
    assert node_type({"ray.io/node-group": "gpu", "ray.io/node-id": "x"}) == "gpu"
    assert node_type({}) == "local"


def test_the_ledger_holds_a_node_from_first_seen_alive_to_first_seen_dead_or_gone():
    ledger = NodeLedger()
    ledger.observe(100.0, [node("head"), node("a", instance_type="m6i.large")])
    ledger.observe(101.0, [node("head"), node("a", instance_type="m6i.large"), node("b", instance_type="g5.xlarge")])
    ledger.observe(105.0, [node("head"), node("a", alive=False), node("b", instance_type="g5.xlarge")])
    ledger.observe(107.0, [node("head")])  # b's entry gone from the list altogether
    lifetimes = {lifetime.node_id: lifetime for lifetime in ledger.close(110.0)}
    assert lifetimes["a"] == NodeLifetime("a", "m6i.large", 100.0, 105.0)
    assert lifetimes["b"] == NodeLifetime("b", "g5.xlarge", 101.0, 107.0)
    assert lifetimes["head"] == NodeLifetime("head", "local", 100.0, 110.0)
    assert lifetimes["a"].seconds == 5.0


def test_the_clock_samples_in_the_background_and_survives_a_failed_sample():
    script = [[node("a")], RuntimeError("GCS busy"), [node("a"), node("b")], [node("b")]]
    calls: list[int] = []
    done = threading.Event()

    def list_nodes() -> list[dict]:
        answer = script[min(len(calls), len(script) - 1)]
        calls.append(1)
        if len(calls) >= len(script):
            done.set()
        if isinstance(answer, Exception):
            raise answer
        return answer

    ticks = itertools.count()
    clock = NodeClock(list_nodes, interval_s=0.001, now=lambda: float(next(ticks))).start()
    assert done.wait(10), "the clock's thread stopped sampling"
    lifetimes = {lifetime.node_id: lifetime for lifetime in clock.stop()}
    assert lifetimes["a"] == NodeLifetime("a", "local", 0.0, 2.0), "the failed sample costs nothing"
    assert lifetimes["b"].start == 1.0 and lifetimes["b"].end > 2.0


# -- the price table ---------------------------------------------------------------------------------------------


def test_the_packaged_table_prices_the_manifests_instance_types():
    table = load_prices()
    assert table.path == str(DEFAULT_PRICES_FILE) and "us-east-1" in table.source and table.as_of
    eksctl = yaml.safe_load((ROOT / "cluster" / "eksctl" / "cluster.yaml").read_text())
    for group in eksctl["managedNodeGroups"] + eksctl.get("nodeGroups", []):
        assert table.usd_per_hour(group["instanceType"]) is not None, group["instanceType"]
    assert table.usd_per_hour("local") == 0.0
    assert table.usd_per_hour("nonexistent.type") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prices: [a, b", "is not valid YAML: "),
        ("as_of: 2025-01-01\nsource: x\nprices: {g5.xlarge: -1}", "prices.g5.xlarge: Input should be greater than"),
        ("as_of: 2025-01-01\nprices: {local: 0}", "source: Field required"),
        ("as_of: 2025-01-01\nsource: x\nprices: {local: 0}\ncurrency: EUR", "currency: Extra inputs are not permitted"),
        ("- local", "expected a mapping with as_of, source and prices"),
    ],
)
def test_a_bad_price_table_is_one_line_naming_the_file(tmp_path: Path, text: str, message: str):
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as info:
        load_prices(path)
    assert message in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_missing_price_table_is_bad_usage(tmp_path: Path):
    with pytest.raises(UsageError, match="cannot read the price table .*nope.yaml: No such file"):
        load_prices(tmp_path / "nope.yaml")


def test_an_unpriced_node_type_names_the_type_and_the_file(tmp_path: Path):
    table = load_prices(write(tmp_path, "as_of: 2025-01-01\nsource: mine\nprices: {m6i.large: 0.096}"))
    assert table.as_of == "2025-01-01"
    table.require(["m6i.large"])
    with pytest.raises(UsageError) as info:
        table.require(["m6i.large", "gpu", "local"])
    assert f"no price for node type 'gpu', 'local' in the price table {tmp_path / 'prices.yaml'}" in str(info.value)


# -- pricing -----------------------------------------------------------------------------------------------------

IDENTITIES = [CheckpointIdentity("p", f"ckpt_{i}", f"v{i}", f"d{i}") for i in range(3)]


def usage_of(lifetimes: list[NodeLifetime], worker_nodes: set[str], busy: dict[int, float]) -> Usage:
    usage = Usage(lifetimes=lifetimes)
    usage.ran_on(worker_nodes)
    usage.busy_s.update(busy)
    return usage


def test_only_nodes_that_ran_workers_are_priced_and_the_total_is_apportioned_by_busy_time(tmp_path: Path):
    prices = load_prices(write(tmp_path, "as_of: x\nsource: y\nprices: {m6i.large: 0.36, g5.xlarge: 3.6}"))
    lifetimes = [
        NodeLifetime("head", "m6i.large", 0, 1000),  # up all along, no worker of ours: not counted
        NodeLifetime("a", "m6i.large", 0, 100),
        NodeLifetime("b", "m6i.large", 50, 150),
        NodeLifetime("g", "g5.xlarge", 10, 20),
    ]
    cost = cost_report(usage_of(lifetimes, {"a", "b", "g"}, {0: 30.0, 2: 10.0}), prices, 2_000_000, IDENTITIES)
    assert cost.node_types["m6i.large"].nodes == 2 and cost.node_types["m6i.large"].node_seconds == 200
    assert cost.node_types["m6i.large"].usd == pytest.approx(0.02)
    assert cost.node_types["g5.xlarge"].usd == pytest.approx(0.01)
    assert cost.total_usd == pytest.approx(0.03) and cost.unpriced == []
    assert cost.usd_per_million_agent_steps == pytest.approx(0.015)
    assert [c.usd for c in cost.checkpoints] == pytest.approx([0.0225, 0.0, 0.0075])
    assert [c.busy_s for c in cost.checkpoints] == [30.0, 0.0, 10.0] and cost.checkpoints[2].name == "ckpt_2"
    assert cost.estimate.startswith("estimate") and "as of x" in cost.prices


def test_an_unpriced_node_type_is_listed_and_warned_about_never_free(tmp_path: Path, caplog):
    prices = load_prices(write(tmp_path, "as_of: x\nsource: y\nprices: {m6i.large: 0.36}"))
    lifetimes = [NodeLifetime("a", "m6i.large", 0, 100), NodeLifetime("n", "p5.48xlarge", 40, 100)]
    with caplog.at_level(logging.WARNING):
        cost = cost_report(usage_of(lifetimes, {"a", "n"}, {0: 1.0}), prices, 0, IDENTITIES[:1])
    assert cost.unpriced == ["p5.48xlarge"] and "p5.48xlarge" in caplog.text
    assert cost.node_types["p5.48xlarge"].usd is None and cost.node_types["p5.48xlarge"].node_seconds == 60
    assert cost.total_usd == pytest.approx(0.01) and cost.usd_per_million_agent_steps is None
    assert cost_metrics(cost) == {
        "cost/total_usd": pytest.approx(0.01),
        "cost/node_seconds/m6i.large": 100,
        "cost/usd/m6i.large": pytest.approx(0.01),
        "cost/node_seconds/p5.48xlarge": 60,
    }


def test_usage_records_busy_time_and_nodes_from_unit_results():
    usage = Usage()
    seen = []
    on_result = usage.recording(lambda unit, result: seen.append(unit.unit_id))
    for unit_id, checkpoint in ((0, 0), (1, 0), (2, 1)):
        unit = WorkUnit(unit_id, checkpoint, "uri", "digest", ())
        on_result(unit, UnitResult(unit_id, "w", load_s=1.0, run_s=2.0, node_id=f"n{checkpoint}"))
    on_result(WorkUnit(3, 1, "uri", "digest", ()), UnitResult(3, "driver", error="timed out"))
    assert seen == [0, 1, 2, 3]
    assert dict(usage.busy_s) == {0: 6.0, 1: 3.0} and usage.worker_nodes == {"n0", "n1"}


def test_nothing_busy_apportions_nothing():
    assert [c.usd for c in apportion(1.0, {}, IDENTITIES)] == [0.0, 0.0, 0.0]
