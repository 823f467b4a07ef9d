"""What cross-play costs (issue 24): 8 checkpoints evaluated plainly, then with `--cross-play`, same machine, same
run, same suite.

    python -m bench.cross_play            # ~2-3 min on 2 cores

The 8 checkpoints are the examples' 4 MLP (`navigator_bc`) and 4 LSTM (`navigator_lstm`) checkpoints; the suite
is two multi-agent navigation environments (4 and 8 agents, scarce hearts). Cross-play adds, per checkpoint and
environment, one pairing with each of the 8 policies at equal shares (round robin; a checkpoint's pairing with
itself is played and is no game), on the environment's own seeds. Figures: episodes and wall time of each run,
and their ratios. No target: the cost is what it is, and it grows with the square of the policies.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from evaluator.config import EvalConfig, Execution
from evaluator.run.driver import evaluate

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "policies"
SUITE = """
name: crowd
envs:
  - name: open4
    map: {kind: random, width: 15, height: 15, goals: 6}
    num_agents: 4
    max_steps: 100
    episodes: 8
  - name: open8
    map: {kind: random, width: 21, height: 21, walls: 20, goals: 10}
    num_agents: 8
    max_steps: 100
    episodes: 8
"""


def run(data_dir: Path, suite: Path, name: str, cross_play: bool) -> tuple[int, float, list[str]]:
    config = EvalConfig(
        policy_uris=(str(EXAMPLES / "navigator_bc"), str(EXAMPLES / "navigator_lstm")),
        checkpoints="all",
        suite=str(suite),
        data_dir=data_dir,
        run_name=name,
        cross_play=cross_play,
        execution=Execution.IN_PROCESS,
        reuse_results=False,
        replays=False,
    )
    started = time.perf_counter()
    report = evaluate(config).report
    wall = time.perf_counter() - started
    order = [f"{r.name}:{r.version} {r.ordinal:.1f}" for r in report.ratings]
    return report.timing.episodes, wall, order


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        suite = data_dir / "crowd.yaml"
        suite.write_text(SUITE)
        plain_episodes, plain_wall, _ = run(data_dir, suite, "plain", cross_play=False)
        cross_episodes, cross_wall, ratings = run(data_dir, suite, "cross", cross_play=True)
    print("cross-play of 8 checkpoints (in process, one core), against a plain run of the same 8")
    print(f"{'run':<12}{'episodes':>10}{'wall s':>10}")
    print(f"{'plain':<12}{plain_episodes:>10}{plain_wall:>10.1f}")
    print(f"{'cross-play':<12}{cross_episodes:>10}{cross_wall:>10.1f}")
    print(f"ratio: episodes {cross_episodes / plain_episodes:.1f}x, wall {cross_wall / plain_wall:.1f}x")
    print("ratings (ordinal):", "; ".join(ratings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
