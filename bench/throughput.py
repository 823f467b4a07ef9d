"""Throughput benchmark (issue 6): agent-steps/s of evaluation, always as ratios measured in the same run.

    python -m bench.throughput                 # everything, ~3-4 minutes on 2 cores; `make bench`
    python -m bench.throughput --skip-ray      # in-process measures only
    python -m bench.throughput --sweep         # also lockstep width and torch threads sweeps
    python -m bench.throughput --json out.json # also write every figure as JSON

Workload: the `navigation` suite with its own episode counts (13 environments, 444 episodes, 98,050
agent-steps per checkpoint; every episode runs to max_steps, so every policy plays the same env mix), the
example MLP `examples/policies/navigator_bc/ckpt_0004` (a bundle), torch on one thread (one actor = one core).

(a) limit     mettagrid alone: a fresh `Simulation` per episode (as the determinism contract requires),
              random actions copied straight into the shared action buffer, the C++ step called directly,
              as many environments in lockstep as the runner; no policy. Also reported without episode
              construction (a').
(b) naive     one env at a time, the MLP called once per agent per step through mettagrid's per-agent
              `AgentPolicy.step` path (bench/naive.py), on a fixed subset: the first
              --naive-episodes episodes of every environment.
(c) runner    `sim.runner.run_episodes` in this process (also on (b)'s subset, for the (c)/(b) ratio);
              once more with `builtin://random` (the runner's own overhead, no model) and once with the
              CLI's default replays (episode 0 of every environment recorded).
(d) ray       the full CLI (`python -m evaluator run`) in a subprocess with --num-workers 1 and 2, all four
              example checkpoints; the report's `timing` gives ray start apart from evaluation.
(e) tiny      `python -m evaluator run --suite smoke` on one checkpoint, process start to exit.

In-process measures run interleaved for --rounds rounds; each ratio is the median of per-round ratios
(these machines are shared and noisy; absolute figures are not comparable across runs). Each CLI run
waits (up to 2 minutes) for other processes to leave the CPUs idle; runs that still saw more than 25% of
the CPUs busy with other work are listed but left out of the medians unless no run was quiet. Exit status 1 when
a target is missed by more than --margin (relative), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from mettagrid.mettagrid_c import dtype_actions, dtype_observations, dtype_rewards, dtype_terminals
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from mettagrid.simulator.simulator import Buffers, Simulation

from bench.cli_runs import CKPT, SUITE, ForeignLoad, checkpoint_bytes, run_ray_rounds
from bench.naive import play_naive
from sim.envs import build_config, episode_seed
from sim.policies import load_policy
from sim.runner import DEFAULT_LOCKSTEP_ENVS, EpisodeJob, run_episodes
from sim.suites import get_suite


@dataclass
class Measure:
    """One timed run: agent-steps played in `seconds` (plus named extras)."""

    agent_steps: int
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.agent_steps / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    goal: float
    higher_is_better: bool = True
    exact: bool = False

    def verdict(self, margin: float) -> str:
        if self.value is None:
            return "not measured"
        if self.exact:
            return "met" if self.value == self.goal else "MISSED"
        met = self.value >= self.goal if self.higher_is_better else self.value <= self.goal
        if met:
            return "met"
        within = (
            self.value >= self.goal * (1 - margin) if self.higher_is_better else self.value <= self.goal * (1 + margin)
        )
        return "within noise margin" if within else "MISSED"


def navigation_jobs(episodes_per_env: int | None = None) -> list[EpisodeJob]:
    suite = get_suite(SUITE)
    return [
        EpisodeJob(env, i, episode_seed(suite.seed, env.name, i))
        for env in suite.envs
        for i in range(env.episodes if episodes_per_env is None else min(episodes_per_env, env.episodes))
    ]


# ---------------------------------------------------------------------------------------------------------
# (a) the limit: mettagrid alone


def measure_limit(jobs: list[EpisodeJob], lockstep: int = DEFAULT_LOCKSTEP_ENVS) -> Measure:
    """Random actions, C++ step, `lockstep` envs at a time; `extra["construct_s"]` is episode construction."""
    started = time.perf_counter()
    agent_steps, construct_s = 0, 0.0
    for agents in sorted({job.env.num_agents for job in jobs}):
        group = [job for job in jobs if job.env.num_agents == agents]
        steps, seconds = _limit_group(group, agents, lockstep)
        agent_steps += steps
        construct_s += seconds
    return Measure(agent_steps, time.perf_counter() - started, {"construct_s": construct_s})


def _limit_group(jobs: list[EpisodeJob], agents: int, lockstep: int) -> tuple[int, float]:
    pending = list(reversed(jobs))
    slots = min(lockstep, len(jobs))
    rows = slots * agents
    shape = PolicyEnvInterface.from_mg_cfg(build_config(jobs[0].env, jobs[0].seed)).observation_shape
    observations = np.zeros((rows, *shape), dtype=dtype_observations)
    flags = np.zeros((2, slots, agents), dtype=dtype_terminals)
    rewards = np.zeros(rows, dtype=dtype_rewards)
    actions = np.zeros(rows, dtype=dtype_actions)
    vibes = np.zeros(rows, dtype=dtype_actions)
    done = np.zeros((2, slots), dtype=bool)
    random_actions = np.random.default_rng(0).integers(0, 5, size=(256, rows), dtype=dtype_actions)
    construct_s, agent_steps = 0.0, 0

    def start(index: int) -> Simulation:
        nonlocal construct_s
        began = time.perf_counter()
        job = pending.pop()
        rows_ = slice(index * agents, (index + 1) * agents)
        view = Buffers(observations[rows_], flags[0, index], flags[1, index], rewards[rows_],
                       np.ones(agents, dtype=bool), actions[rows_], vibes[rows_])  # fmt: skip
        simulation = Simulation(build_config(job.env, job.seed), seed=job.seed, buffers=view)
        construct_s += time.perf_counter() - began
        return simulation

    live: list[Simulation | None] = [start(i) for i in range(slots)]
    calls = [sim._c_sim.step for sim in live if sim is not None]
    tick = 0
    while calls:
        np.copyto(actions, random_actions[tick & 255])
        tick += 1
        for call in calls:
            call()
        np.all(flags, axis=2, out=done)
        if not done.any():
            continue
        for index in np.flatnonzero(done.any(axis=0)):
            simulation = live[index]
            agent_steps += simulation.current_step * agents
            simulation.close()
            flags[:, index] = False
            live[index] = start(index) if pending else None
        calls = [sim._c_sim.step for sim in live if sim is not None]
    return agent_steps, construct_s


# ---------------------------------------------------------------------------------------------------------
# (b) naive and (c) runner, in this process


def measure_runner(jobs: list[EpisodeJob], lockstep: int = DEFAULT_LOCKSTEP_ENVS) -> Measure:
    policy = load_policy(CKPT.as_uri(), checkpoint_bytes(CKPT))
    started = time.perf_counter()
    results = run_episodes(policy, jobs, lockstep_envs=lockstep)
    seconds = time.perf_counter() - started
    return Measure(sum(r.agent_steps for r in results), seconds, {"results": results})


def measure_naive(jobs: list[EpisodeJob]) -> Measure:
    module = load_policy(CKPT.as_uri(), checkpoint_bytes(CKPT))._module
    started = time.perf_counter()
    results = play_naive(module, jobs)
    seconds = time.perf_counter() - started
    return Measure(sum(r.agent_steps for r in results), seconds, {"results": results})


def same_episodes(first: Measure, second: Measure) -> tuple[int, int]:
    """(episodes with identical rewards and steps, episodes) between two measures of the same jobs."""
    pairs = list(zip(first.extra["results"], second.extra["results"], strict=True))
    return sum((a.rewards, a.steps) == (b.rewards, b.steps) for a, b in pairs), len(pairs)


# ---------------------------------------------------------------------------------------------------------
# Reporting


def print_figures(title: str, figures: dict[str, float], targets: list[Target], margin: float) -> bool:
    """The figures and targets as markdown tables on stdout (what BENCHMARKS.md records); True when a target
    is missed beyond `margin`."""
    print(f"## {title}\n")
    print("| figure | value |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {value:,.0f} |" if value >= 100 else f"| {key} | {value:.2f} |")
    print(f"\n| target | measured | verdict (noise margin {margin:.0%}) |\n|---|---|---|")
    for target in targets:
        print(f"| {target.name} | {target.value:.2f} | {target.verdict(margin)} |")
    return any(target.verdict(margin) == "MISSED" for target in targets)


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    import mettagrid
    import ray

    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "mettagrid": getattr(mettagrid, "__version__", "0.26.22"),
        "ray": ray.__version__,
        "load average (1 min) at start": f"{os.getloadavg()[0]:.2f}",
    }


def median_ratio(numerators: list[Measure], denominators: list[Measure]) -> float:
    return statistics.median(n.rate / d.rate for n, d in zip(numerators, denominators, strict=True))


def run_rounds(rounds: int, naive_episodes: int, log: Callable[[str], None]) -> dict[str, list[Measure]]:
    full, subset = navigation_jobs(), navigation_jobs(naive_episodes)
    measures: dict[str, list[Measure]] = {"a": [], "c": [], "b": [], "c_subset": []}
    for round_index in range(rounds):
        with ForeignLoad() as load:
            measures["a"].append(measure_limit(full))
            measures["c"].append(measure_runner(full))
            measures["b"].append(measure_naive(subset))
            measures["c_subset"].append(measure_runner(subset))
        measures["a"][-1].extra["foreign_load"] = load.share
        rates = ", ".join(f"{name} {m[-1].rate:,.0f}" for name, m in measures.items())
        log(f"round {round_index + 1}/{rounds}: agent-steps/s {rates}; others used {load.share:.0%} of the CPUs")
    return measures


def sweep(log: Callable[[str], None]) -> dict[str, float]:
    """(c)/(a) for several lockstep widths and torch thread counts, each against its own interleaved (a)."""
    full = navigation_jobs()
    variants = [(1, width) for width in (8, 16, 32, 64, 128)] + [(2, DEFAULT_LOCKSTEP_ENVS)]
    out = {}
    try:
        for threads, width in variants:
            torch.set_num_threads(threads)
            limit, batched = measure_limit(full), measure_runner(full, width)
            name = f"sweep c/a: lockstep {width}, {threads} thread(s)"
            out[name] = batched.rate / limit.rate
            log(f"{name}: {out[name]:.2f}")
    finally:
        torch.set_num_threads(1)
    return out


def measure_extras(log: Callable[[str], None]) -> dict[str, float]:
    """The runner without a model (`builtin://random`: its own overhead) and what the CLI's default replays
    cost (episode 0 of every environment recorded), each against an interleaved (a) or (c)."""
    plain = navigation_jobs()
    limit = measure_limit(plain)
    started = time.perf_counter()
    results = run_episodes(load_policy("builtin://random", b""), plain)
    random_rate = sum(r.agent_steps for r in results) / (time.perf_counter() - started)
    recorded = [EpisodeJob(j.env, j.episode, j.seed, record_replay=j.episode == 0) for j in plain]
    without, with_replays = measure_runner(plain), measure_runner(recorded)
    figures = {
        "runner with builtin://random / a": random_rate / limit.rate,
        "c with replays of episode 0 per env / c without": with_replays.rate / without.rate,
    }
    log(", ".join(f"{name}: {value:.2f}" for name, value in figures.items()))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the in-process measures")
    parser.add_argument("--naive-episodes", type=int, default=4, help="episodes per env for (b) and its (c)")
    parser.add_argument("--margin", type=float, default=0.10, help="relative noise margin before a miss fails")
    parser.add_argument("--skip-ray", action="store_true", help="skip (d) and (e)")
    parser.add_argument("--sweep", action="store_true", help="also sweep lockstep width and torch threads")
    parser.add_argument("--ray-args", default="--shard-size 32 --no-replays", help="extra `run` args for (d)")
    parser.add_argument("--ray-rounds", type=int, default=1, help="rounds of (d,1), (d,2) and (e)")
    parser.add_argument("--also-defaults", action="store_true", help="also (d,1) with the CLI's own defaults")
    parser.add_argument("--json", type=Path, help="write every figure here as JSON")
    options = parser.parse_args(argv)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    torch.set_num_threads(1)  # one actor per core, as the CLI's default --cpus-per-worker 1 gives
    info = machine()
    log(f"machine: {info}")
    measures = run_rounds(options.rounds, options.naive_episodes, log)
    figures = _in_process_figures(measures)
    same, total = same_episodes(measures["b"][0], measures["c_subset"][0])
    figures["naive and runner episodes identical"] = f"{same}/{total}"
    figures.update(measure_extras(log))
    if options.sweep:
        figures.update(sweep(log))

    ray: dict[str, list[dict]] = {}
    if not options.skip_ray:
        ray = run_ray_rounds(options.ray_rounds, options.ray_args.split(), options.also_defaults, log)
    limit_rate = statistics.median(m.rate for m in measures["a"])
    figures.update(_ray_figures(ray, limit_rate))
    targets = _targets(figures, ray)
    info["load average (1 min) at end"] = f"{os.getloadavg()[0]:.2f}"
    _print(info, figures, targets, options)
    if options.json:
        options.json.write_text(json.dumps({"machine": info, "figures": figures, "ray": ray}, indent=2, default=str))
    return 1 if any(t.verdict(options.margin) == "MISSED" for t in targets) else 0


def _in_process_figures(measures: dict[str, list[Measure]]) -> dict[str, float | str]:
    a_step_only = [Measure(m.agent_steps, m.seconds - m.extra["construct_s"]) for m in measures["a"]]
    rate = {name: statistics.median(m.rate for m in ms) for name, ms in measures.items()}
    return {
        "a: limit, agent-steps/s": rate["a"],
        "a': limit without episode construction, agent-steps/s": statistics.median(m.rate for m in a_step_only),
        "b: naive (subset), agent-steps/s": rate["b"],
        "c: runner, agent-steps/s": rate["c"],
        "c: runner on the naive subset, agent-steps/s": rate["c_subset"],
        "c/a": median_ratio(measures["c"], measures["a"]),
        "c/a'": median_ratio(measures["c"], a_step_only),
        "c/b (same subset)": median_ratio(measures["c_subset"], measures["b"]),
        "other processes' share of the CPUs, per round": " ".join(
            f"{m.extra['foreign_load']:.0%}" for m in measures["a"]
        ),
    }


QUIET = 0.25
"""A CLI run counts when other processes used less than this share of the CPUs just before and after it;
noisier runs are listed but left out of the medians (unless no run was quiet)."""


def _quiet(runs: list[dict]) -> list[dict]:
    return [run for run in runs if run["ambient_load"] < QUIET] or runs


def _ray_figures(ray: dict[str, list[dict]], limit_rate: float) -> dict[str, float | str]:
    figures: dict[str, float | str] = {}
    for key in ("d1", "d2", "d1_defaults"):
        runs = ray.get(key, [])
        if not runs:
            continue
        rate = statistics.median(run["rate"] for run in _quiet(runs))
        figures[f"{key}: ray, agent-steps/s"] = rate
        figures[f"{key}/a"] = rate / limit_rate
        figures[f"{key}: per run, s ray_init / [workers_start /] evaluation / process wall; ambient load"] = "; ".join(
            f"{r['timing']['ray_init_s']:.1f} / "
            + (f"{r['timing']['workers_start_s']:.1f} / " if "workers_start_s" in r["timing"] else "")
            + f"{r['timing']['evaluation_s']:.1f} / {r['wall_s']:.1f}; {r['ambient_load']:.0%}"
            for r in runs
        )
        figures[f"{key}: checkpoints loaded per worker"] = " ".join(str(run["loads_per_worker"]) for run in runs)
    if ray.get("d1") and ray.get("d2"):
        pairs = list(zip(ray["d2"], ray["d1"], strict=True))
        quiet = [(two, one) for two, one in pairs if max(two["ambient_load"], one["ambient_load"]) < QUIET]
        figures["d2/d1"] = statistics.median(two["rate"] / one["rate"] for two, one in quiet or pairs)
        figures["d2/d1 per round"] = " ".join(f"{two['rate'] / one['rate']:.2f}" for two, one in pairs)
    if ray.get("tiny"):
        figures["e: tiny end-to-end, s"] = statistics.median(run["wall_s"] for run in _quiet(ray["tiny"]))
        figures["e: per run, s ray_init / evaluation / in-process wall / process wall; ambient load"] = "; ".join(
            f"{r['timing']['ray_init_s']:.1f} / {r['timing']['evaluation_s']:.1f} / {r['timing']['wall_s']:.1f} / "
            f"{r['wall_s']:.1f}; {r['ambient_load']:.0%}"
            for r in ray["tiny"]
        )
    return figures


def _targets(figures: dict[str, float | str], ray: dict[str, list[dict]]) -> list[Target]:
    def get(key: str) -> float | None:
        value = figures.get(key)
        return value if isinstance(value, float) else None

    runs = [run for key in ("d1", "d2", "d1_defaults") for run in ray.get(key, [])]
    repeated = float(sum(run["repeated_loads"] for run in runs)) if runs else None
    return [
        Target("(c)/(a) >= 0.6", get("c/a"), 0.6),
        Target("(d,1)/(a) >= 0.5", get("d1/a"), 0.5),
        Target("(c)/(b) >= 10", get("c/b (same subset)"), 10.0),
        Target("(d,2)/(d,1) >= 1.8", get("d2/d1"), 1.8),
        Target("repeated loads per (actor, checkpoint) == 0", repeated, 0.0, exact=True),
        Target("tiny end-to-end <= 10 s", get("e: tiny end-to-end, s"), 10.0, higher_is_better=False),
    ]


def _print(info: dict[str, str], figures: dict, targets: list[Target], options: argparse.Namespace) -> None:
    print("## Machine")
    for key, value in info.items():
        print(f"- {key}: {value}")
    print(f"\n## Figures (median of {options.rounds} interleaved rounds; ratios are medians of per-round ratios)\n")
    print("| figure | value |\n|---|---|")
    for key, value in figures.items():
        shown = f"{value:,.0f}" if isinstance(value, float) and value >= 100 else value
        shown = f"{shown:.2f}" if isinstance(shown, float) else shown
        print(f"| {key} | {shown} |")
    print(f"\n## Targets (noise margin {options.margin:.0%})\n")
    print("| target | measured | verdict |\n|---|---|---|")
    for target in targets:
        measured = "-" if target.value is None else f"{target.value:.2f}"
        print(f"| {target.name} | {measured} | {target.verdict(options.margin)} |")


if __name__ == "__main__":
    sys.exit(main())
