"""Packed units (issue 12): does batching still work when a suite has few episodes per environment?

    python -m bench.packing            # ~1 minute on 2 cores

One `EvalWorker` (what each Ray actor is) plays the units of `evaluator.run.plan.make_plan` for the example MLP
on the `navigation` suite, one torch thread, shard size 32 (the CLI's default):
(full)     the suite's own episode counts (444 episodes);
(packed)   2 episodes per environment, units packing environments of one agent count (today's plan);
(per-env)  2 episodes per environment, one unit per environment (the plan before packing).
Rounds are interleaved; ratios are medians of per-round ratios. Target: packed / full >= 0.8.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from actors.eval_worker import EvalWorker
from actors.protocol import WorkUnit
from bench.cli_runs import CKPT, checkpoint_bytes
from evaluator.run.plan import make_plan
from evaluator.sources import resolve
from sim.suites import get_suite


def per_env(units: list[WorkUnit]) -> list[WorkUnit]:
    """The same episodes as one unit per (unit, environment): the plan before packing."""
    split: list[WorkUnit] = []
    for unit in units:
        for name in dict.fromkeys(job.env.name for job in unit.jobs):
            jobs = tuple(job for job in unit.jobs if job.env.name == name)
            split.append(WorkUnit(len(split), unit.checkpoint_index, unit.checkpoint_uri, unit.checkpoint_digest, jobs))
    return split


def rate(units: list[WorkUnit], data: bytes) -> float:
    worker = EvalWorker(num_threads=1)
    worker.run(units[0], data)  # load the policy outside the clock
    started, agent_steps = time.perf_counter(), 0
    for unit in units:
        agent_steps += sum(episode.agent_steps for episode in worker.run(unit, data).episodes)
    return agent_steps / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    [checkpoint] = resolve(str(CKPT))
    data = checkpoint_bytes(CKPT)
    suite = get_suite("navigation")
    plans = {
        "full": make_plan([checkpoint], suite, shard_size=32, replays=False),
        "packed": make_plan([checkpoint], suite.with_episodes(2), shard_size=32, replays=False),
    }
    plans["per-env"] = per_env(plans["packed"])
    rates: dict[str, list[float]] = {name: [] for name in plans}
    for round_index in range(options.rounds):
        for name, units in plans.items():
            rates[name].append(rate(units, data))
        shown = ", ".join(f"{name} {values[-1]:,.0f}" for name, values in rates.items())
        print(f"round {round_index + 1}/{options.rounds}: agent-steps/s {shown}", file=sys.stderr, flush=True)

    def ratio(top: str, bottom: str) -> float:
        return statistics.median(t / b for t, b in zip(rates[top], rates[bottom], strict=True))

    print("| figure | value |\n|---|---|")
    for name, values in rates.items():
        print(f"| {name}: units {len(plans[name])}, agent-steps/s | {statistics.median(values):,.0f} |")
    packed_full, per_env_full = ratio("packed", "full"), ratio("per-env", "full")
    print(f"| packed / full (target >= 0.8) | {packed_full:.2f} |")
    print(f"| per-env / full (before packing) | {per_env_full:.2f} |")
    return 0 if packed_full >= 0.8 * 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
