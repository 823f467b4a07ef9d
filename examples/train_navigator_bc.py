"""Train a navigation policy (MLP or LSTM) by imitating the scripted navigator (`builtin://navigator`).

The memoryless `sim.models.TokenGridMLP` (`--arch mlp`, the default) is the `navigator_bc` example, the
recurrent `sim.models.TokenGridLSTM` (`--arch lstm`) the `navigator_lstm` example.

Method: DAgger (Ross et al., 2011) rather than plain behaviour cloning.
Plain behaviour cloning trains only on states the *navigator* visits; the student's small mistakes then
take it to states it never saw (one step past a goal, into a dead end) and its errors compound over the
episode. DAgger fixes the training distribution instead: round 0 rolls out the navigator and records
(observation, navigator action); every later round rolls out the *student*, asks the navigator what it
would have done at each observation the student visits, adds those labelled observations to the
aggregated data set and keeps training (warm start, one Adam run with a linearly decaying learning rate).

The navigator has hidden state, its exploration heading, which the memoryless MLP cannot see. Queried
along the student's trajectory, a navigator left alone would keep steering by the walk it imagined, so the
recorder sets its heading to the direction the student actually moved (`DaggerRecorder._steer_teacher`).
Measured with the defaults (seed 1, same data volume and updates, evaluate_navigator_bc.py): plain
behaviour cloning (`--no-dagger`) 1.015 on held-out training-family seeds / 1.833 on the navigation suite;
DAgger without the heading fix 1.019 / 1.725; DAgger with it 1.026 / 1.900. The gain is small because
what the student still gets wrong (mazes, corridors, the memory map) needs memory, which no relabelling
gives a memoryless policy; DAgger stays as the method that is right in general and best here by a little.

The LSTM has that memory. Its data are sequences, not single observations: the recorder
(`EpisodeRecorder`) keeps every agent's episode in order, the episodes form one stream of agent-steps with
each episode's first step marked, and training is truncated backpropagation through time over chunks of
`bptt_steps` steps of that stream (`TokenGridLSTM.forward_sequence`: state zeroed at each chunk's start and
at every episode start inside it, PufferLib's convention). Its rollouts run the student through
`TorchPolicy` exactly as an evaluation does: one state row per agent, zeroed when the agent's episode
starts.

Everything runs through the evaluator's own machinery: episodes are played by `sim.runner.run_episodes`
with a recording `BatchPolicy` wrapper, on environment families of our own (`sim.envs` random maps,
mazes and ASCII maps, 1-4 agents; never an evaluation suite's environments) with training seeds
`episode_seed(10_000 * seed + round, env, i)`, disjoint from the held-out seeds of
`evaluate_navigator_bc.py` (`episode_seed(7, env, i)`).

Outputs are policy bundles (`sim.bundles.write_bundle`: a directory holding `policy_spec.json` and
`weights.safetensors`), the format our examples ship in. `--arch mlp`: `ckpt_0001/`, `ckpt_0002/`, ...
(natural sort = training order, later = stronger) and the final model as TorchScript. `--arch lstm`:
Metta's layout, `<run>:v<updates>/` with `<run>` the output directory's name (`navigator_lstm:v40/`, ...).

Usage (mlp: 45 s on 2 idle CPU cores, well under 3 minutes on busy ones; lstm: see examples/README.md):
    .venv/bin/python examples/train_navigator_bc.py
    .venv/bin/python examples/train_navigator_bc.py --arch lstm
    .venv/bin/python examples/train_navigator_bc.py --rounds 4 --out-dir /tmp/nav
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import logging
import os
import shutil
import sys
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from mettagrid.policy.policy_env_interface import PolicyEnvInterface

from sim.baselines import NavigatorPolicy
from sim.batch_policy import BatchPolicy, Slot, StepBatch
from sim.bundles import write_bundle
from sim.envs import AsciiMap, EnvSpec, MazeMap, RandomMap, build_config, episode_seed
from sim.models import TokenGridLSTM, TokenGridMLP
from sim.runner import EpisodeJob, run_episodes
from sim.torch_policy import TorchPolicy

REPO_ROOT = Path(__file__).resolve().parents[1]
POLICIES = REPO_ROOT / "examples" / "policies"
MAX_BUNDLE_BYTES = 1_000_000
"""Example checkpoints live in the repository: each bundle must stay under 1 MB."""

logger = logging.getLogger("train_navigator_bc")

ARCH_DEFAULTS: dict[str, dict[str, object]] = {
    "mlp": {
        "checkpoint_updates": (40, 160, 1200),
        "batch_size": 512,
        "learning_rate": 1e-3,
        "hidden": 128,
        "out_dir": POLICIES / "navigator_bc",
    },
    "lstm": {
        "checkpoint_updates": (40, 200, 600),
        "batch_size": 1024,
        "learning_rate": 2e-3,
        "hidden": 64,
        "out_dir": POLICIES / "navigator_lstm",
    },
}
"""The defaults of the `Args` fields left at None, per architecture."""


@dataclass
class Args:
    arch: Literal["mlp", "lstm"] = "mlp"
    """`mlp`: sim.models.TokenGridMLP, memoryless (the `navigator_bc` example); `lstm`: sim.models.TokenGridLSTM,
    recurrent, trained with truncated backpropagation through time (the `navigator_lstm` example)."""
    seed: int = 1
    """Seed of torch (initial weights, minibatch order); training episode seeds are
    `episode_seed(10_000 * seed + round, env, i)`."""
    rounds: int = 8
    """DAgger rounds. Round 0 is behaviour cloning on the navigator's own rollouts; every later round rolls
    out the student and labels the observations it visits with the navigator's actions."""
    episodes_per_env: int = 16
    """Episodes played per training environment in each round (about 31k labelled agent-steps a round)."""
    dagger: bool = True
    """False: every round rolls out the navigator itself (plain behaviour cloning), for comparison."""
    updates_per_round: int = 400
    """Gradient updates on the aggregated data after each round's collection."""
    checkpoint_updates: tuple[int, ...] | None = None
    """Cumulative update counts at which to save a checkpoint; the final model (rounds * updates_per_round
    updates) is always saved as the last one. Both defaults were chosen from a measured learning curve so that
    each checkpoint scores clearly above the one before. mlp (40, 160, 1200): 40 is barely trained, 160 is
    mid behaviour cloning (round 0), 1200 is after two DAgger rounds, the final one after seven. lstm
    (40, 200, 600): barely trained, mid behaviour cloning (round 0), mid DAgger round 1, then the final one."""
    batch_size: int | None = None
    """Minibatch size in agent-steps: mlp 512 observations, lstm 1024 (batch_size // bptt_steps chunks)."""
    learning_rate: float | None = None
    """Adam learning rate at the first update (mlp 1e-3, lstm 2e-3); it decays linearly to
    `final_lr_fraction` of it."""
    final_lr_fraction: float = 0.1
    """Learning rate at the last update, as a fraction of `learning_rate`."""
    hidden: int | None = None
    """Hidden width: mlp 128 (a checkpoint of about 0.5 MB), lstm 64 (about 0.35 MB)."""
    bptt_steps: int = 64
    """lstm: length of the chunks of the stream of agent-steps that truncated backpropagation through time
    unrolls (state zeroed at a chunk's start and at every episode start inside it)."""
    max_grad_norm: float = 1.0
    """lstm: gradient norm clip (recurrent gradients can spike); the mlp is not clipped."""
    threads: int = 2
    """torch intra-op threads (the whole run is sized for 2 CPU cores)."""
    out_dir: Path | None = None
    """Where the checkpoint bundles go (the checkpoints of an earlier run there are replaced): mlp
    examples/policies/navigator_bc, lstm examples/policies/navigator_lstm."""
    torchscript_path: Path = POLICIES / "navigator_bc_final.torchscript.pt"
    """mlp: where the final model goes as TorchScript."""

    def resolved(self) -> Args:
        """The arguments with the fields left at None set to `arch`'s defaults."""
        defaults = ARCH_DEFAULTS[self.arch]
        return dataclasses.replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})


def parse_args() -> Args:
    """One flag per `Args` field (`--episodes-per-env 8`; tuples take several values); help = docstrings."""
    body = ast.parse(inspect.getsource(Args)).body[0].body
    docs = {
        a.target.id: " ".join(b.value.value.split())
        for a, b in zip(body, body[1:], strict=False)
        if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr)
    }
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Args()
    hints = typing.get_type_hints(Args)
    for f in dataclasses.fields(Args):
        default = getattr(defaults, f.name)
        kind = hints[f.name]
        if isinstance(kind, types.UnionType):  # `X | None`: None means "the arch's default"
            kind = next(t for t in typing.get_args(kind) if t is not type(None))
        flag = "--" + f.name.replace("_", "-")
        shown = "per --arch, above" if default is None else default
        help_text = f"{docs.get(f.name, '')} (default: {shown})".replace("%", "%%")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typing.get_origin(kind) is tuple:
            parser.add_argument(flag, type=int, nargs="+", default=default, help=help_text)
        elif typing.get_origin(kind) is Literal:
            parser.add_argument(flag, choices=typing.get_args(kind), default=default, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=default, help=help_text)
    namespace = vars(parser.parse_args())
    return Args(**{key: tuple(v) if isinstance(v, list) else v for key, v in namespace.items()})


# ---------------------------------------------------------------------------------------------------------
# Training environments: our own families, never the evaluation suite itself.

ROOMS = (
    "###################",
    "#@......#.........#",
    "#.......#....n....#",
    "#.......#.........#",
    "#...n.............#",
    "#.......#.........#",
    "####.####.........#",
    "#.......######.####",
    "#..m....#.........#",
    "#.......#....n...@#",
    "#.................#",
    "###################",
)
CORRIDOR = (
    "###########################",
    "#@........................#",
    "#########################.#",
    "#n........................#",
    "###########################",
)
ROOM_EXIT = (
    "#####################",
    "#.........#.........#",
    "#.@.......#.........#",
    "#.........#......n..#",
    "#.........#.........#",
    "#.........#.........#",
    "#.........#.........#",
    "#.........#.........#",
    "#..................n#",
    "#.........#.........#",
    "#####################",
)
HUB_FIELD = (
    "#################",
    "#@.....#.......@#",
    "#..___.#.._....m#",
    "#......#........#",
    "#..n......__....#",
    "#.......#.......#",
    "#..__...#...n...#",
    "#@......#......@#",
    "#################",
)


def training_envs() -> tuple[EnvSpec, ...]:
    """Varied sizes, wall densities, goal counts and 1-4 agents; max_steps short enough to reward speed."""
    return (
        EnvSpec(name="tr_open_small", map=RandomMap(width=11, height=11, walls=4, goals=2), max_steps=40),
        EnvSpec(
            name="tr_random_mid", map=RandomMap(width=19, height=19, walls=40, goals=4), max_steps=100, num_agents=2
        ),
        EnvSpec(
            name="tr_random_dense", map=RandomMap(width=15, height=15, walls=60, goals=2), max_steps=80, num_agents=1
        ),
        EnvSpec(
            name="tr_random_large", map=RandomMap(width=31, height=31, walls=90, goals=4), max_steps=200, num_agents=4
        ),
        EnvSpec(name="tr_open_far", map=RandomMap(width=41, height=41, walls=20, goals=3), max_steps=150),
        EnvSpec(name="tr_maze_small", map=MazeMap(width=11, height=11, branching=0.1), max_steps=80),
        EnvSpec(name="tr_maze_mid", map=MazeMap(width=15, height=15, branching=0.3, end="center"), max_steps=150),
        EnvSpec(name="tr_rooms", map=AsciiMap(rows=ROOMS), max_steps=60, num_agents=2),
        EnvSpec(name="tr_room_exit", map=AsciiMap(rows=ROOM_EXIT), max_steps=100),
        EnvSpec(name="tr_corridor", map=AsciiMap(rows=CORRIDOR), max_steps=80),
        EnvSpec(name="tr_hub_field", map=AsciiMap(rows=HUB_FIELD), max_steps=40, num_agents=4),
    )


def env_interface(env: EnvSpec) -> PolicyEnvInterface:
    return PolicyEnvInterface.from_mg_cfg(build_config(env, 0))


def model_kwargs(env: PolicyEnvInterface, hidden: int) -> dict[str, int]:
    """The init_kwargs of TokenGridMLP and TokenGridLSTM, all derived from the environment interface."""
    feature_ids = {feature.name: feature.id for feature in env.obs_features}
    height, width = env.egocentric_shape
    return {
        "num_tags": len(env.tags),
        "num_actions": len(env.action_names),
        "tag_feature_id": feature_ids["tag"],
        "obs_height": height,
        "obs_width": width,
        "hidden": hidden,
    }


# ---------------------------------------------------------------------------------------------------------
# Data collection: a BatchPolicy wrapper that acts with one policy and records the navigator's labels.


class DaggerRecorder(BatchPolicy):
    """Acts with `actor` (None: the navigator itself) and records, for every live agent row of every step,
    the observation tokens and the navigator's action for them (its label)."""

    stochastic = True  # the runner draws per-episode Gumbel noise; the navigator and TorchPolicy both use it

    def __init__(self, actor: BatchPolicy | None) -> None:
        self.teacher = NavigatorPolicy()
        self.actor = actor
        self.observations: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def bind(self, env: PolicyEnvInterface) -> None:
        self.teacher.bind(env)
        if self.actor is not None:
            self.actor.bind(env)

    def start_episode(self, slot: Slot) -> None:
        self.teacher.start_episode(slot)  # the navigator keeps a per-row exploration heading
        if self.actor is not None:
            self.actor.start_episode(slot)  # a recurrent student zeroes the slot's state rows

    def act(self, batch: StepBatch) -> np.ndarray:
        labels = self.teacher.act(batch)
        actions = labels
        if self.actor is not None:
            actions = self.actor.act(batch)
            self._steer_teacher(actions)
        self._record(batch, labels)
        return actions

    def _record(self, batch: StepBatch, labels: np.ndarray) -> None:
        live = np.concatenate([np.arange(slot.rows.start, slot.rows.stop) for slot in batch.slots])
        self.observations.append(batch.observations[live].copy())
        self.labels.append(labels[live].astype(np.int64))

    def _steer_teacher(self, actions: np.ndarray) -> None:
        """Set the navigator's heading to the direction the student actually moved; it measured better
        than leaving the heading alone (see the module docstring)."""
        self.teacher.follow(actions)


class EpisodeRecorder(DaggerRecorder):
    """`DaggerRecorder` for a recurrent student: keeps every agent's episode as one sequence, in step order.

    The runner's slots are reused: a slot's rows belong to one episode's agents from its `start_episode` to
    the next `start_episode` of the same slot index, so that call closes the slot's previous episode;
    `finish` closes the episodes still open when `run_episodes` returns."""

    def __init__(self, actor: BatchPolicy | None) -> None:
        super().__init__(actor)
        self.sequences: list[tuple[np.ndarray, np.ndarray]] = []
        """(observations (steps, tokens, 3) uint8, labels (steps,) int64) per agent-episode."""
        self._open: dict[int, tuple[Slot, list[np.ndarray], list[np.ndarray]]] = {}

    def start_episode(self, slot: Slot) -> None:
        super().start_episode(slot)
        self._close(slot.index)
        self._open[slot.index] = (slot, [], [])

    def _record(self, batch: StepBatch, labels: np.ndarray) -> None:
        for slot in batch.slots:
            owner, observations, actions = self._open[slot.index]
            assert owner is slot, "a slot stepped without start_episode"
            observations.append(batch.observations[slot.rows].copy())
            actions.append(labels[slot.rows].astype(np.int64))

    def finish(self) -> list[tuple[np.ndarray, np.ndarray]]:
        for index in list(self._open):
            self._close(index)
        return self.sequences

    def _close(self, index: int) -> None:
        entry = self._open.pop(index, None)
        if entry is None or not entry[1]:
            return
        observations = np.stack(entry[1], axis=1)  # (agents, steps, tokens, 3)
        labels = np.stack(entry[2], axis=1)
        self.sequences.extend(zip(observations, labels, strict=True))


def collect(
    envs: tuple[EnvSpec, ...], round_index: int, episodes: int, student: torch.nn.Module | None, seed: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Play `episodes` per env; return observations, navigator labels and the actor's mean score."""
    actor = None if student is None else TorchPolicy(student, "student", "cpu")
    recorder = DaggerRecorder(actor)
    results = run_episodes(recorder, training_jobs(envs, round_index, episodes, seed))
    score = float(np.mean([r.reward_mean for r in results]))
    return np.concatenate(recorder.observations), np.concatenate(recorder.labels), score


def collect_sequences(
    envs: tuple[EnvSpec, ...], round_index: int, episodes: int, student: torch.nn.Module | None, seed: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    """`collect` keeping each agent's episode as a sequence (for the LSTM)."""
    actor = None if student is None else TorchPolicy(student, "student", "cpu")
    recorder = EpisodeRecorder(actor)
    results = run_episodes(recorder, training_jobs(envs, round_index, episodes, seed))
    score = float(np.mean([r.reward_mean for r in results]))
    return recorder.finish(), score


def training_jobs(envs: tuple[EnvSpec, ...], round_index: int, episodes: int, seed: int) -> list[EpisodeJob]:
    return [
        EpisodeJob(env, i, episode_seed(10_000 * seed + round_index, env.name, i))
        for env in envs
        for i in range(episodes)
    ]


class SequenceStream:
    """The LSTM's aggregated data: every agent-episode recorded so far, one after the other, as one stream of
    agent-steps, with `starts` marking each episode's first step."""

    def __init__(self, obs_shape: tuple[int, ...]) -> None:
        self.observations = torch.zeros((0, *obs_shape), dtype=torch.uint8)
        self.labels = torch.zeros(0, dtype=torch.int64)
        self.starts = torch.zeros(0, dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.labels)

    def extend(self, sequences: list[tuple[np.ndarray, np.ndarray]]) -> None:
        starts = np.zeros(sum(len(labels) for _, labels in sequences), dtype=bool)
        starts[np.cumsum([0] + [len(labels) for _, labels in sequences[:-1]])] = True
        self.observations = torch.cat([self.observations, torch.from_numpy(np.concatenate([o for o, _ in sequences]))])
        self.labels = torch.cat([self.labels, torch.from_numpy(np.concatenate([a for _, a in sequences]))])
        self.starts = torch.cat([self.starts, torch.from_numpy(starts)])

    def sample(
        self, chunks: int, steps: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`chunks` windows of `steps` consecutive agent-steps at uniformly random offsets: tokens
        (steps, chunks, tokens, 3), starts (steps, chunks) and labels (steps, chunks), time first."""
        first = torch.randint(len(self) - steps + 1, (chunks,), generator=generator)
        index = torch.arange(steps).unsqueeze(1) + first.unsqueeze(0)
        return self.observations[index], self.starts[index], self.labels[index]


# ---------------------------------------------------------------------------------------------------------
# Checkpoints


def save_bundle(model: torch.nn.Module, init_kwargs: dict[str, int], directory: Path) -> None:
    """A policy bundle (`sim.bundles.write_bundle`: written under a temporary name and renamed, so a reader
    never sees half a checkpoint), refused at 1 MB or more."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    write_bundle(directory, model, dict(init_kwargs))
    size = sum(path.stat().st_size for path in directory.iterdir())
    if size >= MAX_BUNDLE_BYTES:
        raise RuntimeError(f"{directory} is {size} bytes; example checkpoints must stay under 1 MB")
    logger.info("saved %s (%d bytes)", directory, size)


def remove_checkpoints(directory: Path, pattern: str) -> None:
    """Remove an earlier run's checkpoints: what `pattern` matches among bundle directories and `.pt` files
    (the state-dict format the examples used before bundles). Anything else there is left alone."""
    for stale in directory.glob(pattern):
        if stale.is_dir() and not stale.is_symlink() and (stale / "policy_spec.json").is_file():
            shutil.rmtree(stale)
        elif stale.is_file() and stale.suffix == ".pt":
            stale.unlink()


def save_torchscript(model: TokenGridMLP, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.jit.save(torch.jit.script(model.eval()), str(tmp))
    os.replace(tmp, path)
    logger.info("saved TorchScript %s (%d bytes)", path, path.stat().st_size)


def learning_rate(args: Args, updates: int, total_updates: int) -> float:
    fraction = updates / max(total_updates - 1, 1)
    return args.learning_rate * (1 - (1 - args.final_lr_fraction) * fraction)


# ---------------------------------------------------------------------------------------------------------


def main(args: Args) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr, force=True)
    args = args.resolved()
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    if args.arch == "lstm":
        train_lstm(args, started)
    else:
        train_mlp(args, started)


def train_mlp(args: Args, started: float) -> None:
    generator = torch.Generator().manual_seed(args.seed)
    envs = training_envs()
    init_kwargs = model_kwargs(env_interface(envs[0]), args.hidden)
    model = TokenGridMLP(**init_kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    total_updates = args.rounds * args.updates_per_round
    remove_checkpoints(args.out_dir, "ckpt_*")

    observations = torch.zeros((0, *env_interface(envs[0]).observation_shape), dtype=torch.uint8)
    labels = torch.zeros(0, dtype=torch.int64)
    updates = 0
    saved = 0
    for round_index in range(args.rounds):
        # 1. Roll out (round 0: the navigator; later: the student) and label every visited observation.
        model.eval()
        student = model if args.dagger and round_index > 0 else None
        obs, lab, score = collect(envs, round_index, args.episodes_per_env, student, args.seed)
        observations = torch.cat([observations, torch.from_numpy(obs)])
        labels = torch.cat([labels, torch.from_numpy(lab)])
        actor = "navigator" if student is None else "student"
        logger.info(
            "round %d: %s scored %.3f; +%d samples, %d aggregated (%.0fs)",
            round_index,
            actor,
            score,
            len(lab),
            len(labels),
            time.perf_counter() - started,
        )

        # 2. Train on the aggregated data set (warm start from the current weights).
        model.train()
        correct = seen = 0
        loss_sum = 0.0
        for _ in range(args.updates_per_round):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(args, updates, total_updates)
            index = torch.randint(len(labels), (args.batch_size,), generator=generator)
            logits = model(observations[index])
            loss = F.cross_entropy(logits, labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            updates += 1
            loss_sum += float(loss.detach()) * len(index)
            correct += int((logits.argmax(dim=1) == labels[index]).sum())
            seen += len(index)
            if saved < len(args.checkpoint_updates) and updates == args.checkpoint_updates[saved]:
                saved += 1
                save_bundle(model, init_kwargs, args.out_dir / f"ckpt_{saved:04d}")
        log_round(round_index, updates, loss_sum, correct, seen, started)

    model.eval()
    if updates not in args.checkpoint_updates:
        saved += 1
        save_bundle(model, init_kwargs, args.out_dir / f"ckpt_{saved:04d}")
    save_torchscript(model, args.torchscript_path)
    logger.info("done: %d checkpoints, %d updates, %.1fs", saved, updates, time.perf_counter() - started)


def train_lstm(args: Args, started: float) -> None:
    """DAgger like `train_mlp`, on sequences: truncated BPTT over `bptt_steps`-step chunks of the stream."""
    generator = torch.Generator().manual_seed(args.seed)
    envs = training_envs()
    interface = env_interface(envs[0])
    init_kwargs = model_kwargs(interface, args.hidden)
    model = TokenGridLSTM(**init_kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    total_updates = args.rounds * args.updates_per_round
    chunks = max(1, args.batch_size // args.bptt_steps)
    run = args.out_dir.name
    remove_checkpoints(args.out_dir, f"{run}:v*")
    saved = 0

    stream = SequenceStream(interface.observation_shape)
    updates = 0
    for round_index in range(args.rounds):
        model.eval()
        student = model if args.dagger and round_index > 0 else None
        sequences, score = collect_sequences(envs, round_index, args.episodes_per_env, student, args.seed)
        stream.extend(sequences)
        actor = "navigator" if student is None else "student"
        logger.info(
            "round %d: %s scored %.3f; +%d sequences, %d agent-steps aggregated (%.0fs)",
            round_index,
            actor,
            score,
            len(sequences),
            len(stream),
            time.perf_counter() - started,
        )

        model.train()
        correct = seen = 0
        loss_sum = 0.0
        for _ in range(args.updates_per_round):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(args, updates, total_updates)
            tokens, starts, labels = stream.sample(chunks, args.bptt_steps, generator)
            logits = model.forward_sequence(tokens, starts).flatten(0, 1)
            loss = F.cross_entropy(logits, labels.flatten())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            updates += 1
            loss_sum += float(loss.detach()) * labels.numel()
            correct += int((logits.argmax(dim=1) == labels.flatten()).sum())
            seen += labels.numel()
            if updates in args.checkpoint_updates:
                saved += 1
                save_bundle(model, init_kwargs, args.out_dir / f"{run}:v{updates}")
        log_round(round_index, updates, loss_sum, correct, seen, started)

    model.eval()
    if updates not in args.checkpoint_updates:
        saved += 1
        save_bundle(model, init_kwargs, args.out_dir / f"{run}:v{updates}")
    logger.info("done: %d checkpoints, %d updates, %.1fs", saved, updates, time.perf_counter() - started)


def log_round(round_index: int, updates: int, loss_sum: float, correct: int, seen: int, started: float) -> None:
    logger.info(
        "round %d: %d updates, loss %.3f, train accuracy %.3f (%.0fs)",
        round_index,
        updates,
        loss_sum / max(seen, 1),
        correct / max(seen, 1),
        time.perf_counter() - started,
    )


if __name__ == "__main__":
    main(parse_args())
