"""Recurrent policies benchmark (issue 10): mettagrid's own `lstm` class, batched by our adapter, against the
example MLP and against mettagrid's per-agent path, in the same run.

    python -m bench.recurrent                 # ~2 minutes on 2 cores; part of `make bench`
    python -m bench.recurrent --json out.json

Workload: the `navigation` suite as in bench/throughput.py, torch on one thread (one actor = one core).
The `lstm` checkpoint is a bundle saved by `mettagrid.policy.lstm.LSTMPolicy.save_policy_data` itself (an
untrained network: speed does not depend on the weights, and every episode runs to max_steps either way).

(m) mlp        the example MLP (`examples/policies/navigator_bc/ckpt_0004`) through `sim.runner`;
(l) lstm       the `lstm` bundle through `sim.policies.load_policy` -> `MettagridBundlePolicy` -> batched
               `TorchPolicy` (one forward per step for every agent row, state rows per agent);
(p) per-agent  the same `lstm` class through mettagrid's per-agent path, as `Rollout` plays it:
               `agent_policy(i).step(AgentObservation)`, `set_action`, `Simulation.step()`, one episode at
               a time, on a subset (the first --per-agent-episodes episodes of every environment);
(l') lstm      batched on that same subset, for the (l')/(p) ratio.
Rounds are interleaved; each ratio is the median of per-round ratios. Exit status 1 on a missed target.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from mettagrid.policy.loader import initialize_or_load_policy
from mettagrid.policy.policy import PolicySpec
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from mettagrid.simulator.simulator import Simulation

from bench.cli_runs import ForeignLoad
from bench.throughput import Measure, Target, machine, measure_runner, navigation_jobs, print_figures
from evaluator.sources import resolve
from sim.envs import build_config
from sim.mettagrid_policies import MettagridBundlePolicy
from sim.policies import load_policy
from sim.runner import EpisodeJob, run_episodes
from sim.torch_policy import TorchPolicy

LSTM_CLASS = "mettagrid.policy.lstm.LSTMPolicy"


def lstm_bundle(directory: Path) -> tuple[str, bytes]:
    """A bundle as `cogames train` leaves one: the class's own weights file and a policy_spec.json."""
    jobs = navigation_jobs(1)
    interface = PolicyEnvInterface.from_mg_cfg(build_config(jobs[0].env, jobs[0].seed))
    torch.manual_seed(0)
    policy = initialize_or_load_policy(interface, PolicySpec(class_path=LSTM_CLASS))
    directory.mkdir(parents=True, exist_ok=True)
    policy.save_policy_data(str(directory / "weights.pt"))
    spec = {"class_path": LSTM_CLASS, "data_path": "weights.pt", "init_kwargs": {}}
    (directory / "policy_spec.json").write_text(json.dumps(spec))
    [checkpoint] = resolve(str(directory))
    return checkpoint.uri, checkpoint.data


def measure_batched(uri: str, data: bytes, jobs: list[EpisodeJob]) -> Measure:
    policy = load_policy(uri, data)
    started = time.perf_counter()
    results = run_episodes(policy, jobs)
    seconds = time.perf_counter() - started
    assert isinstance(policy, MettagridBundlePolicy) and isinstance(policy.adapter, TorchPolicy)
    assert policy.adapter.recurrent, "the lstm class must run on the batched recurrent path"
    return Measure(sum(r.agent_steps for r in results), seconds)


def measure_per_agent(weights: Path, jobs: list[EpisodeJob]) -> Measure:
    """mettagrid's per-agent path for the same class and weights, one episode after another."""
    spec = PolicySpec(class_path=LSTM_CLASS, data_path=str(weights))
    agent_steps, started = 0, time.perf_counter()
    for job in jobs:
        config = build_config(job.env, job.seed)
        policy = initialize_or_load_policy(PolicyEnvInterface.from_mg_cfg(config), spec)
        simulation = Simulation(config, seed=job.seed)
        agents = [policy.agent_policy(agent_id) for agent_id in range(simulation.num_agents)]
        for agent in agents:
            agent.reset()
        while not simulation.is_done():
            for agent_id, agent in enumerate(agents):
                handle = simulation.agent(agent_id)
                handle.set_action(agent.step(handle.observation))
            simulation.step()
        agent_steps += simulation.current_step * simulation.num_agents
        simulation.close()
    return Measure(agent_steps, time.perf_counter() - started)


def run_rounds(rounds: int, per_agent_episodes: int, log) -> dict[str, list[Measure]]:
    full, subset = navigation_jobs(), navigation_jobs(per_agent_episodes)
    measures: dict[str, list[Measure]] = {"m": [], "l": [], "p": [], "l_subset": []}
    with tempfile.TemporaryDirectory() as tmp:
        uri, data = lstm_bundle(Path(tmp) / "lstm:v1")
        for round_index in range(rounds):
            with ForeignLoad() as load:
                measures["m"].append(measure_runner(full))
                measures["l"].append(measure_batched(uri, data, full))
                measures["p"].append(measure_per_agent(Path(tmp) / "lstm:v1" / "weights.pt", subset))
                measures["l_subset"].append(measure_batched(uri, data, subset))
            rates = ", ".join(f"{name} {m[-1].rate:,.0f}" for name, m in measures.items())
            log(f"round {round_index + 1}/{rounds}: agent-steps/s {rates}; others used {load.share:.0%} of the CPUs")
    return measures


def figures_and_targets(measures: dict[str, list[Measure]]) -> tuple[dict[str, float], list[Target]]:
    def ratio(top: str, bottom: str) -> float:
        return statistics.median(t.rate / b.rate for t, b in zip(measures[top], measures[bottom], strict=True))

    figures = {
        "m: example MLP, agent-steps/s": statistics.median(m.rate for m in measures["m"]),
        "l: lstm class batched, agent-steps/s": statistics.median(m.rate for m in measures["l"]),
        "p: lstm class per-agent (subset), agent-steps/s": statistics.median(m.rate for m in measures["p"]),
        "l': lstm class batched (subset), agent-steps/s": statistics.median(m.rate for m in measures["l_subset"]),
        "l/m": ratio("l", "m"),
        "l'/p (same subset)": ratio("l_subset", "p"),
    }
    targets = [
        Target("(l) lstm batched / (m) example MLP >= 0.3", figures["l/m"], 0.3),
        Target("(l') lstm batched / (p) per-agent >= 10", figures["l'/p (same subset)"], 10.0),
    ]
    return figures, targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--per-agent-episodes", type=int, default=4, help="episodes per env for (p) and (l')")
    parser.add_argument("--margin", type=float, default=0.10, help="relative noise margin before a miss fails")
    parser.add_argument("--json", type=Path, help="write every figure here as JSON")
    options = parser.parse_args(argv)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    torch.set_num_threads(1)
    info = machine()
    log(f"machine: {info}")
    figures, targets = figures_and_targets(run_rounds(options.rounds, options.per_agent_episodes, log))
    missed = print_figures(
        f"Recurrent policies (median of {options.rounds} interleaved rounds)", figures, targets, options.margin
    )
    if options.json:
        options.json.write_text(json.dumps({"machine": info, "figures": figures}, indent=2))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
