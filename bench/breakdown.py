"""Where the time goes: microseconds per agent-step by phase for (a), (b) and (c) of bench/throughput.py,
and the example MLP's forward cost per row at several batch sizes (what bounds (c)).

    python -m bench.breakdown            # ~1 minute
    py-spy record -r 250 -f raw -o c.txt -- python -m bench.breakdown --only c   # sampled, per function

Every figure is measured in this run, in one process, torch on one thread.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from bench.cli_runs import checkpoint_bytes
from bench.naive import play_naive
from bench.throughput import CKPT, measure_limit, navigation_jobs
from sim.batch_policy import BatchPolicy, Slot, StepBatch
from sim.policies import TorchPolicy, load_policy
from sim.runner import run_episodes


class TimedPolicy(BatchPolicy):
    """Wraps a policy and adds up the seconds spent in `act`; keeps every observation batch if asked."""

    def __init__(self, inner: BatchPolicy, keep: int = 0) -> None:
        self.inner, self.act_s, self.calls, self.rows = inner, 0.0, 0, 0
        self.stochastic = inner.stochastic
        self.kept: list[np.ndarray] = []
        self._keep = keep

    def bind(self, env) -> None:
        self.inner.bind(env)

    def start_episode(self, slot: Slot) -> None:
        self.inner.start_episode(slot)

    def act(self, batch: StepBatch) -> np.ndarray:
        started = time.perf_counter()
        actions = self.inner.act(batch)
        self.act_s += time.perf_counter() - started
        self.calls += 1
        self.rows += batch.observations.shape[0]
        if len(self.kept) < self._keep:
            self.kept.append(batch.observations.copy())
        return actions


def per_step(seconds: float, agent_steps: int) -> str:
    return f"{1e6 * seconds / agent_steps:7.1f} us"


def breakdown_limit() -> None:
    limit = measure_limit(navigation_jobs())
    construct = limit.extra["construct_s"]
    print(f"(a) limit: {limit.rate:,.0f} agent-steps/s, per agent-step:")
    print(f"    episode construction (Simulation + config)  {per_step(construct, limit.agent_steps)}")
    print(f"    C++ step + lockstep loop                    {per_step(limit.seconds - construct, limit.agent_steps)}")


def breakdown_runner() -> list[np.ndarray]:
    policy = TimedPolicy(load_policy(CKPT.as_uri(), checkpoint_bytes(CKPT)), keep=64)
    started = time.perf_counter()
    results = run_episodes(policy, navigation_jobs())
    seconds = time.perf_counter() - started
    steps = sum(r.agent_steps for r in results)
    print(f"(c) runner: {steps / seconds:,.0f} agent-steps/s, {policy.rows / policy.calls:.1f} rows per forward")
    print(f"    policy.act (forward + sampling)             {per_step(policy.act_s, steps)}")
    print(f"    everything else (construct, step, loop)     {per_step(seconds - policy.act_s, steps)}")
    return policy.kept


def breakdown_naive() -> None:
    timers: dict[str, float] = {}
    module = load_policy(CKPT.as_uri(), checkpoint_bytes(CKPT))._module
    started = time.perf_counter()
    results = play_naive(module, navigation_jobs(3), timers)
    seconds = time.perf_counter() - started
    steps = sum(r.agent_steps for r in results)
    print(f"(b) naive (3 episodes per env): {steps / seconds:,.0f} agent-steps/s, per agent-step:")
    for name, spent in sorted(timers.items(), key=lambda item: -item[1]):
        print(f"    {name:44s}{per_step(spent, steps)}")


def forward_cost(observations: np.ndarray) -> None:
    """The example MLP alone on real observations: per-row cost of the token encoder and of the MLP."""
    policy = load_policy(CKPT.as_uri(), checkpoint_bytes(CKPT))
    assert isinstance(policy, TorchPolicy)
    module = policy._module
    print("example MLP forward, per row (encode = tokens -> one-hot grid, net = 3 Linear layers):")
    for rows in (1, 8, 32, 64, 128):
        tokens = torch.from_numpy(observations[:rows].copy())
        with torch.inference_mode():
            grid = module.encode(tokens)
            cost = {
                "full": _time(module, tokens),
                "encode": _time(module.encode, tokens),
                "net": _time(module.net, grid),
            }
        print(f"    batch {rows:4d}: " + "  ".join(f"{k} {1e6 * v / rows:6.1f} us" for k, v in cost.items()))


def _time(call, argument: torch.Tensor, budget_s: float = 0.2) -> float:
    call(argument)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < budget_s:
        call(argument)
        count += 1
    return (time.perf_counter() - started) / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["a", "b", "c"], help="one measure only (for py-spy)")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    if options.only in (None, "a"):
        breakdown_limit()
    if options.only in (None, "c"):
        kept = breakdown_runner()
        if options.only is None:
            forward_cost(np.concatenate(kept))
    if options.only in (None, "b"):
        breakdown_naive()
    return 0


if __name__ == "__main__":
    sys.exit(main())
