import numpy as np

from sim.baselines import NavigatorPolicy
from sim.batch_policy import BatchPolicy, Slot, StepBatch
from sim.envs import episode_seed
from sim.metrics import summarize
from sim.policies import load_policy
from sim.runner import EpisodeJob, run_episodes
from sim.suites import get_suite
from tests.support.replays import read_replay

SMOKE = get_suite("smoke")


def jobs(episodes: int = 4, replay: bool = False) -> list[EpisodeJob]:
    return [
        EpisodeJob(env, i, episode_seed(SMOKE.seed, env.name, i), record_replay=replay and i == 0)
        for env in SMOKE.envs
        for i in range(episodes)
    ]


class CountingPolicy(BatchPolicy):
    """Wraps a policy and records the batch size of every call."""

    def __init__(self, inner: BatchPolicy) -> None:
        self.inner, self.calls = inner, []
        self.stochastic = inner.stochastic

    def bind(self, env):
        self.inner.bind(env)

    def start_episode(self, slot: Slot) -> None:
        self.inner.start_episode(slot)

    def act(self, batch: StepBatch) -> np.ndarray:
        self.calls.append(batch.observations.shape[0])
        return self.inner.act(batch)


def test_one_batched_call_per_step_for_all_agents_of_all_envs():
    policy = CountingPolicy(load_policy("builtin://random", b""))
    tiny_room = [j for j in jobs() if j.env.name == "tiny_room"]
    run_episodes(policy, tiny_room)
    assert policy.calls == [4] * tiny_room[0].env.max_steps  # 4 episodes x 1 agent, in lockstep


def test_results_do_not_depend_on_batching_or_order():
    all_jobs = jobs()
    together = run_episodes(NavigatorPolicy(), all_jobs)
    alone = [run_episodes(NavigatorPolicy(), [job])[0] for job in reversed(all_jobs)][::-1]
    small_batches = run_episodes(NavigatorPolicy(), all_jobs, lockstep_envs=3)
    key = [(r.env, r.episode, r.rewards, r.steps) for r in together]
    assert key == [(r.env, r.episode, r.rewards, r.steps) for r in alone]
    assert key == [(r.env, r.episode, r.rewards, r.steps) for r in small_batches]


def test_navigator_beats_random_and_noop_scores_zero():
    def score(name: str) -> float:
        results = run_episodes(load_policy(f"builtin://{name}", b""), jobs(6))
        return summarize(results).score

    navigator, random, noop = score("navigator"), score("random"), score("noop")
    assert noop == 0.0
    assert navigator > random


def test_replay_recorded_only_when_asked():
    results = run_episodes(load_policy("builtin://navigator", b""), jobs(2, replay=True))
    recorded = [r for r in results if r.replay is not None]
    assert [(r.env, r.episode) for r in recorded] == [("tiny_room", 0), ("tiny_random", 0)]
    replay = read_replay(recorded[1].replay)
    assert replay["num_agents"] == 2 and replay["action_names"][0] == "noop"


def test_episode_results_carry_mettagrid_stats():
    result = run_episodes(load_policy("builtin://navigator", b""), jobs(1))[0]
    assert result.stats["agent/heart.gained"] == result.rewards[0]
    assert result.agent_steps == result.steps * len(result.rewards)


def test_episodes_leave_no_logger_behind():
    """mettagrid makes a logger per Simulation; kept, each new one costs a pass over all of them, and a
    worker slowed down the more episodes it played (BENCHMARKS.md, "Scale")."""
    import logging

    run_episodes(load_policy("builtin://random", b""), jobs(episodes=2))
    before = len(logging.Logger.manager.loggerDict)
    run_episodes(load_policy("builtin://random", b""), jobs(episodes=20))
    assert len(logging.Logger.manager.loggerDict) == before
