"""Mixed line-ups benchmark (issue 23): two policies in one episode against one policy, and against mettagrid's
own multi-policy path, in the same run.

    python -m bench.mixed                 # ~1-2 minutes on 2 cores; part of `make bench`

Workload: four multi-agent navigation envs (`ENVS`: 4 and 8 agents, open and walled random maps, one laid out as
4 walled-off instances), the same seeds for every measure, torch on one thread (one actor = one core), every
measure through `sim.runner.play` at the same lockstep width (the runner's default).

(a)  single   the example MLP `navigator_bc/ckpt_0004` plays every agent;
(b)  mixed    `ckpt_0004` as the candidate beside `ckpt_0001` (the same network, other weights: two distinct
              policies, so two forwards per step over half the rows each, plus the gather and scatter) as the
              co-player at candidate share 0.5: half the agents each, seats shuffled per episode;
(la) single   mettagrid's `lstm` class (`builtin://lstm`: `MettagridBundlePolicy` -> batched recurrent
              `TorchPolicy`, state rows per agent) plays every agent;
(lb) mixed    two `lstm` instances (other random weights) at share 0.5;
(c)  mettagrid `mettagrid.runner.rollout.run_multi_episode_rollout` with two `lstm` PolicySpecs, on the first
              --mettagrid-episodes episodes of every env: one call per episode with that episode's config, seed
              and our seats as `assignments` (shuffle_assignments=False), so it plays the very episodes (lb')
              plays (its `Rollout` steps every agent alone, the two policies' groups on a thread pool);
(lb') mixed   (lb) on (c)'s subset, for the (lb')/(c) ratio (fewer episodes in lockstep: it understates).
The example MLP is what our users evaluate, but it is not a mettagrid class, so mettagrid's path cannot load it:
the comparison with mettagrid runs a mettagrid class on both sides. `lstm` is the class `cogames train` uses by
default (a 1500x128 Linear over the raw tokens and an LSTM cell: about the MLP's cost per row, bench/recurrent.py).
`stateless` would be the closer match to the MLP, but mettagrid 0.26.22's `Rollout` cannot play it at all: its
`StatelessAgentPolicyImpl` never calls `AgentPolicy.__init__`, so `Rollout` fails reading `.infos` (`_infos`
unset); `token` fails to build from a PolicySpec. Rounds are interleaved; each ratio is the median of per-round
ratios. Exit status 1 when a target is missed beyond --margin. Prints the tables; writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from mettagrid.policy.policy import PolicySpec
from mettagrid.runner.rollout import run_multi_episode_rollout

from bench.cli_runs import CKPT, CKPT_DIR, ForeignLoad, checkpoint_bytes
from bench.throughput import Measure, Target, machine, print_figures
from sim.batch_policy import BatchPolicy
from sim.envs import EnvSpec, RandomMap, build_config, episode_seed
from sim.lineup import CoPlayer, seat_assignment
from sim.mettagrid_policies import MettagridBundlePolicy
from sim.policies import load_policy
from sim.runner import DEFAULT_LOCKSTEP_ENVS, EpisodeJob, play
from sim.torch_policy import TorchPolicy

CO_CKPT = CKPT_DIR / "ckpt_0001"
LSTM = "mettagrid.policy.lstm.LSTMPolicy"
NPC_DIGEST = "sha256:bench-co-player"
SHARE = 0.5

ENVS = (
    EnvSpec(name="open4", map=RandomMap(width=15, height=15, goals=6), max_steps=120, num_agents=4, episodes=16),
    EnvSpec(
        name="walls4", map=RandomMap(width=19, height=19, walls=40, goals=6), max_steps=120, num_agents=4, episodes=16
    ),
    EnvSpec(name="open8", map=RandomMap(width=25, height=25, goals=10), max_steps=120, num_agents=8, episodes=12),
    EnvSpec(
        name="rooms8",
        map=RandomMap(width=13, height=13, walls=12, goals=3),
        instances=4,
        num_agents=8,
        max_steps=120,
        episodes=12,
    ),
)


def jobs(mixed: bool, episodes_per_env: int | None = None) -> list[EpisodeJob]:
    """Every env's episodes; mixed: the same envs, seeds and names with a co-player at share 0.5."""
    lineup = {"npcs": (CoPlayer(uri="co-player", digest=NPC_DIGEST),), "candidate_share": SHARE} if mixed else {}
    out = []
    for env in ENVS:
        spec = env.model_copy(update=lineup)
        count = env.episodes if episodes_per_env is None else min(episodes_per_env, env.episodes)
        out += [EpisodeJob(spec, i, episode_seed(0, env.name, i)) for i in range(count)]
    return out


def mlp(path: Path) -> BatchPolicy:
    return load_policy(path.as_uri(), checkpoint_bytes(path))


def lstm() -> BatchPolicy:
    """`builtin://lstm`, as users load it: fresh (untrained) weights each call; speed does not depend on them."""
    return load_policy("builtin://lstm", b"")


def measure_play(candidate: BatchPolicy, work: list[EpisodeJob], co_player: BatchPolicy | None = None) -> Measure:
    co_players = {NPC_DIGEST: co_player} if co_player is not None else None
    started = time.perf_counter()
    played = play(candidate, work, lockstep_envs=DEFAULT_LOCKSTEP_ENVS, co_players=co_players)
    seconds = time.perf_counter() - started
    assert not played.env_errors, played.env_errors
    for policy in (candidate, co_player):
        if isinstance(policy, MettagridBundlePolicy):
            adapter = policy.adapter
            assert isinstance(adapter, TorchPolicy) and adapter.recurrent, "lstm must play on the batched path"
    if co_player is not None:  # every mixed episode seated half and half
        counts = {job.env.name: job.env.seat_counts for job in work}
        assert all(tuple(np.bincount(r.seats, minlength=2)) == counts[r.env] for r in played.results)
    return Measure(sum(r.agent_steps for r in played.results), seconds)


def measure_mettagrid(work: list[EpisodeJob]) -> Measure:
    """mettagrid's multi-policy path on `work` (mixed jobs): each episode with its own config, seed and seats."""
    specs = [PolicySpec(class_path=LSTM), PolicySpec(class_path=LSTM)]
    agent_steps, started = 0, time.perf_counter()
    for job in work:
        seats = [int(seat) for seat in seat_assignment(job.env.seat_counts, job.seed)]
        outcome, _ = run_multi_episode_rollout(
            policy_specs=specs,
            assignments=seats,
            env_cfg=build_config(job.env, job.seed),
            episodes=1,
            seed=job.seed,
            max_action_time_ms=10_000,
            shuffle_assignments=False,
        )
        (episode,) = outcome.episodes
        agent_steps += episode.steps * len(episode.rewards)
    return Measure(agent_steps, time.perf_counter() - started)


def run_rounds(rounds: int, mettagrid_episodes: int, log) -> dict[str, list[Measure]]:
    single, mixed, subset = jobs(False), jobs(True), jobs(True, mettagrid_episodes)
    names = ("a", "b", "la", "lb", "c", "lb_subset")
    measures: dict[str, list[Measure]] = {name: [] for name in names}
    for round_index in range(rounds):
        with ForeignLoad() as load:
            measures["a"].append(measure_play(mlp(CKPT), single))
            measures["b"].append(measure_play(mlp(CKPT), mixed, mlp(CO_CKPT)))
            measures["la"].append(measure_play(lstm(), single))
            measures["lb"].append(measure_play(lstm(), mixed, lstm()))
            measures["c"].append(measure_mettagrid(subset))
            measures["lb_subset"].append(measure_play(lstm(), subset, lstm()))
        rates = ", ".join(f"{name} {m[-1].rate:,.0f}" for name, m in measures.items())
        log(f"round {round_index + 1}/{rounds}: agent-steps/s {rates}; others used {load.share:.0%} of the CPUs")
    return measures


def figures_and_targets(measures: dict[str, list[Measure]]) -> tuple[dict[str, float], list[Target]]:
    def ratio(top: str, bottom: str) -> float:
        return statistics.median(t.rate / b.rate for t, b in zip(measures[top], measures[bottom], strict=True))

    def rate(name: str) -> float:
        return statistics.median(m.rate for m in measures[name])

    figures = {
        "a: example MLP alone, agent-steps/s": rate("a"),
        "b: two MLP checkpoints mixed, agent-steps/s": rate("b"),
        "la: lstm class alone, agent-steps/s": rate("la"),
        "lb: two lstm instances mixed, agent-steps/s": rate("lb"),
        "c: mettagrid run_multi_episode_rollout, two lstm (subset), agent-steps/s": rate("c"),
        "lb': two lstm instances mixed (subset), agent-steps/s": rate("lb_subset"),
        "b/a": ratio("b", "a"),
        "lb/la": ratio("lb", "la"),
        "lb'/c (same episodes)": ratio("lb_subset", "c"),
    }
    targets = [
        Target("(b) mixed / (a) single, example MLP >= 0.8", figures["b/a"], 0.8),
        Target("(lb) mixed / (la) single, lstm >= 0.8", figures["lb/la"], 0.8),
        Target("(lb') mixed / (c) mettagrid's rollout >= 10", figures["lb'/c (same episodes)"], 10.0),
    ]
    return figures, targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--mettagrid-episodes", type=int, default=3, help="episodes per env for (c) and (lb')")
    parser.add_argument("--margin", type=float, default=0.10, help="relative noise margin before a miss fails")
    options = parser.parse_args(argv)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    torch.set_num_threads(1)
    info = machine()
    log(f"machine: {info}")
    figures, targets = figures_and_targets(run_rounds(options.rounds, options.mettagrid_episodes, log))
    missed = print_figures(
        f"Mixed line-ups (median of {options.rounds} interleaved rounds)", figures, targets, options.margin
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
