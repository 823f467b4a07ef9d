"""Mixed batched play gives each policy the actions mettagrid's own multi-policy path gives it (issue 23, "Batching").

Both sides play the same episodes: the same config and seed (`build_config`, the episode seed), the same seats (our
episode's `EpisodeResult.seats` handed to mettagrid as `assignments`, shuffling off). Our side is `sim.runner.play`
with several episodes in lockstep, so each policy's rows of different episodes share one forward and are gathered
from (and scattered back to) interleaved rows; mettagrid's side is `run_multi_episode_rollout`, which steps every
agent alone through `agent_policy(i).step(AgentObservation)`. The policies are `tests.support.peaked_policy`: every
action a deterministic function of the observation, so the two paths must write the same replays, action by action,
and pay the same rewards.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mettagrid.policy.policy import PolicySpec
from mettagrid.runner.rollout import run_multi_episode_rollout

from sim.baselines import NoopPolicy
from sim.batch_policy import BatchPolicy
from sim.envs import EnvSpec, RandomMap, build_config, episode_seed
from sim.lineup import CoPlayer
from sim.metrics import EpisodeResult
from sim.mettagrid_policies import MettagridBundlePolicy, PerAgentPolicy, StepBatchPolicy
from sim.runner import EpisodeJob, play
from sim.torch_policy import TorchPolicy
from tests.support.replays import read_replay

PEAKED = "tests.support.peaked_policy.PeakedPolicy"
PEAKED_PER_AGENT = "tests.support.peaked_policy.PeakedPerAgentPolicy"
METTAGRID_NOOP = "mettagrid.policy.noop.NoopPolicy"
NPC_DIGEST = "sha256:npc"
EPISODES = 4
LOCKSTEP = 3
"""Fewer slots than episodes: rows of several episodes share each forward, and a slot plays a second episode."""

ENV = EnvSpec(
    name="mix4",
    map=RandomMap(width=15, height=15, goals=6),
    max_steps=60,
    num_agents=4,
    npcs=(CoPlayer(uri="test://npc", digest=NPC_DIGEST),),
    candidate_share=0.5,
)

CANDIDATE_SPEC = PolicySpec(class_path=PEAKED, init_kwargs={"salt": 1})

CO_PLAYERS = {
    # name: (mettagrid's spec, how our loader drives it: the adapter class, or None for our own builtin)
    "peaked_batched": (PolicySpec(class_path=PEAKED, init_kwargs={"salt": 2}), TorchPolicy),
    "peaked_per_agent": (PolicySpec(class_path=PEAKED_PER_AGENT, init_kwargs={"salt": 2}), PerAgentPolicy),
    "mettagrid_noop": (PolicySpec(class_path=METTAGRID_NOOP), StepBatchPolicy),
    "builtin_noop": (PolicySpec(class_path=METTAGRID_NOOP), None),
}


def _ours(uri: str, spec: PolicySpec) -> MettagridBundlePolicy:
    """How `sim.policies` loads a mettagrid class (`_load_builtin`, bundles): the class through our adapters."""
    return MettagridBundlePolicy(uri, spec, None, "cpu")


def _agent_series(replay: dict, key: str) -> dict[int, list]:
    """Per agent id, the value of `key` at every step (replays store a series as its changes, or one value)."""
    steps = replay["max_steps"]
    series = {}
    for item in replay["objects"]:
        if "agent_id" not in item:
            continue
        agent = item["agent_id"] if isinstance(item["agent_id"], int) else item["agent_id"][-1][1]
        changes = item[key] if isinstance(item[key], list) and item[key] and isinstance(item[key][0], list) else None
        if changes is None:
            series[agent] = [item[key]] * steps
            continue
        values, at = [], 0
        for step in range(steps):
            while at + 1 < len(changes) and changes[at + 1][0] <= step:
                at += 1
            values.append(changes[at][1])
        series[agent] = values
    return series


def _first_difference(ours: list, theirs: list) -> int:
    return next((step for step, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b), -1)


def _mettagrid_episode(specs: list[PolicySpec], seats: list[int], seed: int, directory: Path) -> tuple[dict, list]:
    """One episode on mettagrid's multi-policy path with the given seats: (replay, per-agent rewards)."""
    directory.mkdir(parents=True, exist_ok=True)
    outcome, paths = run_multi_episode_rollout(
        policy_specs=specs,
        assignments=seats,
        env_cfg=build_config(ENV, seed),
        episodes=1,
        seed=seed,
        max_action_time_ms=60_000,
        replay_dir=directory,
        shuffle_assignments=False,
    )
    (episode,) = outcome.episodes
    assert episode.assignments == seats
    return read_replay(Path(paths[0]).read_bytes()), list(episode.rewards)


def _play_ours(co_player: BatchPolicy) -> tuple[MettagridBundlePolicy, list[EpisodeResult]]:
    candidate = _ours("test://candidate", CANDIDATE_SPEC)
    jobs = [EpisodeJob(ENV, i, episode_seed(0, ENV.name, i), record_replay=True) for i in range(EPISODES)]
    played = play(candidate, jobs, lockstep_envs=LOCKSTEP, co_players={NPC_DIGEST: co_player})
    assert not played.env_errors
    return candidate, played.results


@pytest.mark.parametrize("co_player", list(CO_PLAYERS))
def test_mixed_batched_play_takes_mettagrids_actions(co_player: str, tmp_path: Path):
    npc_spec, adapter = CO_PLAYERS[co_player]
    ours_npc = NoopPolicy() if adapter is None else _ours("test://npc", npc_spec)
    candidate, results = _play_ours(ours_npc)
    assert isinstance(candidate.adapter, TorchPolicy), "the candidate must play on the batched path"
    if adapter is not None:
        assert isinstance(ours_npc.adapter, adapter)

    moved = set()
    for result in results:
        seats = list(result.seats)
        assert sorted(seats) == [0, 0, 1, 1] and result.steps == ENV.max_steps
        replay, rewards = _mettagrid_episode(
            [CANDIDATE_SPEC, npc_spec], seats, result.seed, tmp_path / co_player / str(result.episode)
        )
        ours = read_replay(result.replay)
        our_actions, their_actions = _agent_series(ours, "action_id"), _agent_series(replay, "action_id")
        assert sorted(our_actions) == list(range(ENV.num_agents))
        for agent, seat in enumerate(seats):
            assert our_actions[agent] == their_actions[agent], (
                f"episode {result.episode} (seed {result.seed}), agent {agent} (line-up place {seat}): actions "
                f"differ from step {_first_difference(our_actions[agent], their_actions[agent])}"
            )
            moved |= {seat} if len(set(our_actions[agent])) > 1 else set()
        # Same actions on the same map: the same walk, the same hearts, the same rewards.
        assert _agent_series(ours, "location") == _agent_series(replay, "location")
        assert list(result.rewards) == pytest.approx(rewards, abs=0)
    assert 0 in moved, "the candidate's actions must vary, or the comparison proves little"
    if co_player.startswith("peaked"):
        assert 1 in moved
    else:
        assert all(reward == 0 for result in results for reward in result.rewards_of(1))


def test_the_comparison_tells_the_two_policies_apart(tmp_path: Path):
    """The check has teeth: with the seats swapped, mettagrid's episode no longer matches ours."""
    npc_spec = CO_PLAYERS["peaked_batched"][0]
    _, results = _play_ours(_ours("test://npc", npc_spec))
    result = results[0]
    swapped = [1 - seat for seat in result.seats]
    replay, _ = _mettagrid_episode([CANDIDATE_SPEC, npc_spec], swapped, result.seed, tmp_path)
    ours, theirs = _agent_series(read_replay(result.replay), "action_id"), _agent_series(replay, "action_id")
    assert any(ours[agent] != theirs[agent] for agent in range(ENV.num_agents))
