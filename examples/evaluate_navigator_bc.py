"""Score the example checkpoints (navigator_bc MLP, navigator_lstm) against random and the navigator.

Two benchmarks:
1. held-out episodes of the training environment families (`train_navigator_bc.training_envs()`), seeds
   `episode_seed(EVAL_SEED, env, i)`, which training (seeds 10_000 * seed + round) never uses;
2. the `navigation` suite (`sim.suites.get_suite("navigation")`), when it exists, with the suite's seeds.

Every checkpoint is found by the evaluator's source (`evaluator.sources.resolve`, so a bundle directory
is zipped as a real evaluation zips it) and goes through its loader (`sim.policies.load_policy`) and
runner. Score = mean per-agent reward per episode, averaged over each env's episodes, then over envs.
The check at the end: within each run (a directory of checkpoints), every checkpoint scores strictly
higher than the one before, and the last one beats random.

Usage:
    .venv/bin/python examples/evaluate_navigator_bc.py [--episodes 40] [--no-suite] [checkpoints or runs...]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling training script

from train_navigator_bc import training_envs  # noqa: E402

from evaluator.sources import resolve  # noqa: E402
from evaluator.sources.files import path_of  # noqa: E402
from sim.envs import EnvSpec, episode_seed  # noqa: E402
from sim.metrics import summarize  # noqa: E402
from sim.policies import load_policy  # noqa: E402
from sim.runner import EpisodeJob, run_episodes  # noqa: E402

EVAL_SEED = 7
"""Held-out seed of the training families (training uses 10_000 * seed + round)."""
REPO_ROOT = Path(__file__).resolve().parents[1]
POLICY_DIR = REPO_ROOT / "examples" / "policies"

logger = logging.getLogger("evaluate_navigator_bc")


def score(uri: str, data: bytes, jobs: list[EpisodeJob]) -> dict[str, float]:
    """Per-env mean score of one policy, plus `mean` over envs."""
    results = run_episodes(load_policy(uri, data), jobs)
    by_env: dict[str, list] = {}
    for result in results:
        by_env.setdefault(result.env, []).append(result)
    scores = {env: summarize(env_results).score for env, env_results in by_env.items()}
    scores["mean"] = float(np.mean(list(scores.values())))
    return scores


def table(
    title: str, envs: tuple[EnvSpec, ...], jobs: list[EpisodeJob], policies: list[tuple[str, str, bytes]]
) -> dict[str, float]:
    """Print a markdown table of every policy's per-env scores; return each policy's mean."""
    print(f"\n## {title} ({len(jobs)} episodes per policy)\n")
    names = [env.name for env in envs]
    print("| policy | mean | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 2) + "|")
    means = {}
    for label, uri, data in policies:
        started = time.perf_counter()
        scores = score(uri, data, jobs)
        means[label] = scores["mean"]
        cells = " | ".join(f"{scores[name]:.3f}" for name in names)
        print(f"| {label} | **{scores['mean']:.3f}** | {cells} |", flush=True)
        logger.info("%s on %s: %.3f (%.1fs)", label, title, scores["mean"], time.perf_counter() - started)
    return means


def checkpoints(paths: list[Path]) -> tuple[list[tuple[str, str, bytes]], list[list[str]]]:
    """(label, uri, bytes) of every checkpoint the paths hold, in training order, and the labels of each
    run (a path holding several checkpoints), whose scores must improve. Labels are the checkpoints' file or
    directory names (`ckpt_0004`, `navigator_lstm:v3200`)."""
    policies, runs = [], []
    for path in paths:
        found = resolve(str(path), "all")
        labels = [path_of(checkpoint.uri).name for checkpoint in found]
        policies += [(label, c.uri, c.data) for label, c in zip(labels, found, strict=True)]
        if len(found) > 1:
            runs.append(labels)
    return policies, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=40, help="held-out episodes per training family")
    parser.add_argument("--no-suite", action="store_true", help="skip the navigation suite")
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        help="checkpoints (files, bundle directories) or runs (directories of them); default: the examples "
        "navigator_bc/, navigator_bc_final.torchscript.pt and navigator_lstm/",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr, force=True)

    paths = args.paths or [
        POLICY_DIR / "navigator_bc",
        POLICY_DIR / "navigator_bc_final.torchscript.pt",
        POLICY_DIR / "navigator_lstm",
    ]
    found, runs = checkpoints([path for path in paths if path.exists()])
    policies = [
        ("builtin://random", "builtin://random", b""),
        *found,
        ("builtin://navigator", "builtin://navigator", b""),
    ]

    envs = training_envs()
    jobs = [EpisodeJob(env, i, episode_seed(EVAL_SEED, env.name, i)) for env in envs for i in range(args.episodes)]
    tables = [table("held-out seeds of the training families", envs, jobs, policies)]

    if not args.no_suite and (REPO_ROOT / "sim" / "suites" / "navigation.py").exists():
        from sim.suites import get_suite

        suite = get_suite("navigation")
        jobs = [
            EpisodeJob(env, i, episode_seed(suite.seed, env.name, i)) for env in suite.envs for i in range(env.episodes)
        ]
        tables.append(table("navigation suite", suite.envs, jobs, policies))

    # The acceptance check: each run's checkpoints in training order must score strictly higher each time.
    ok = bool(runs)
    for means in tables:
        for run in runs:
            scores = [means[label] for label in run]
            increasing = all(a < b for a, b in zip(scores, scores[1:], strict=False))
            ok &= increasing and scores[-1] > means["builtin://random"]
    print(f"\ncheckpoints strictly improving and last above random, in every run: {'yes' if ok else 'NO'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
