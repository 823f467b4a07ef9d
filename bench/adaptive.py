"""Adaptive episodes (issue 14): the episodes `--target-ci` needs to bring every environment's 95% interval
under a half-width, against the fixed allocation that reaches the same worst-case half-width.

    python -m bench.adaptive                      # the 4 example MLP checkpoints on navigation (~3 min on 2 cores)
    python -m bench.adaptive --target-ci 0.1 --max-episodes 128

1. A fixed run plays `--max-episodes` episodes of every environment of every checkpoint (in process; they
   go to a results database in a temp dir).
2. The adaptive run (`--target-ci`, `--min-episodes`, `--max-episodes`) is then answered from that database
   (episode i has one seed, so it is the same episode in both runs): it plays nothing, and its report says
   how many episodes each environment used and the half-width each reached.
3. Fixed allocations of n episodes per environment are the first n episodes of the fixed run: for n on the
   adaptive run's doubling grid, the worst half-width over every (checkpoint, environment), computed with the
   report's own interval (same seeds). The fixed baseline is the smallest n whose worst case is at most the
   adaptive run's worst case.
Figures: total episodes adaptive / fixed (target: at most 0.5), and both worst-case half-widths.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from evaluator.config import EvalConfig, Execution
from evaluator.reduce import statistics
from evaluator.run.driver import evaluate
from sim.suites import get_suite

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "policies" / "navigator_bc"
TARGET_RATIO = 0.5


def half_width(scores: np.ndarray, seed: int, env: str) -> float:
    interval = statistics.mean_interval(scores, statistics.rng_for(seed, env))
    return float("inf") if interval is None else (interval[1] - interval[0]) / 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="navigation")
    parser.add_argument("--target-ci", type=float, default=0.5, help="half-width (navigation scores span 0-10)")
    parser.add_argument("--min-episodes", type=int, default=8)
    parser.add_argument("--max-episodes", type=int, default=64)
    args = parser.parse_args()
    suite = get_suite(args.suite)
    with tempfile.TemporaryDirectory(prefix="bench_adaptive_") as tmp:
        common = dict(policy_uris=(str(EXAMPLES),), checkpoints="all", suite=args.suite, replays=False,
                      execution=Execution.IN_PROCESS, data_dir=Path(tmp))  # fmt: skip
        fixed = evaluate(EvalConfig(**common, episodes=args.max_episodes, run_name="fixed"))
        adaptive = evaluate(
            EvalConfig(**common, target_ci=args.target_ci, min_episodes=args.min_episodes,
                       max_episodes=args.max_episodes, run_name="adaptive")
        ).report  # fmt: skip
        rows = pq.read_table(fixed.run_dir / "episodes.parquet").to_pylist()
    assert adaptive.timing.units == 0, "the adaptive run is answered from the fixed run's episodes"
    checkpoints = [c for p in adaptive.policies for c in p.checkpoints]
    used = sum(m.episodes for c in checkpoints for m in c.metrics.environments.values())
    worst_adaptive = max(
        (m.ci95[1] - m.ci95[0]) / 2 for c in checkpoints for m in c.metrics.environments.values() if m.ci95
    )
    scores: dict[tuple[str, str], np.ndarray] = {}
    for digest in {r["digest"] for r in rows}:
        for env in suite.envs:
            mine = sorted(
                (r["episode"], r["reward_mean"]) for r in rows if r["digest"] == digest and r["env"] == env.name
            )
            scores[(digest, env.name)] = np.array([score for _, score in mine])
    grid, n = [], args.min_episodes
    while n <= args.max_episodes:
        grid.append(n)
        n *= 2
    print(f"{len(checkpoints)} checkpoints x {len(suite.envs)} environments of {args.suite}, target half-width "
          f"{args.target_ci}, episodes {args.min_episodes}..{args.max_episodes}")  # fmt: skip
    print(f"{'allocation':<24} {'episodes':>9} {'worst half-width':>17}")
    fixed_needed = None
    for n in grid:
        worst = max(half_width(s[:n], suite.seed, env) for (_, env), s in scores.items())
        total = n * len(scores)
        print(f"{'fixed ' + str(n) + ' per environment':<24} {total:>9} {worst:>17.4f}")
        if fixed_needed is None and worst <= worst_adaptive + 1e-12:
            fixed_needed = total
    print(f"{'adaptive':<24} {used:>9} {worst_adaptive:>17.4f}")
    if fixed_needed is None:
        print("no fixed allocation on the grid reaches the adaptive run's worst case")
        return 1
    ratio = used / fixed_needed
    met = ratio <= TARGET_RATIO
    print(
        f"adaptive / fixed at the same worst case: {ratio:.2f} (target <= {TARGET_RATIO}): {'met' if met else 'MISSED'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
