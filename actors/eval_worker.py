"""`EvalWorker`: owns a device and an LRU cache of loaded policies; runs work units with `sim.runner`.

A plain class, so tests call it directly. `evaluator.run.ray_cluster` makes the actor: its subclass
`RayEvalWorker` asks Ray inside the actor process for the GPU ids and node it got, and
`ray.remote(RayEvalWorker).options(num_cpus=..., num_gpus=..., max_restarts=0)` chooses the resources where
the work is launched.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections import OrderedDict
from collections.abc import Mapping

import torch

from actors.protocol import CoPlayerBytes, UnitResult, WorkerStats, WorkUnit
from sim.batch_policy import BatchPolicy
from sim.errors import PolicyError
from sim.policies import load_policy
from sim.runner import DEFAULT_LOCKSTEP_ENVS, play

logger = logging.getLogger(__name__)


def resolve_device(requested: str, gpu_ids: list[str], cuda_available: bool) -> str:
    """The torch device for this worker. Ray sets CUDA_VISIBLE_DEVICES to the actor's GPUs, so the first
    visible GPU is `cuda:0`. CUDA asked for but absent falls back to CPU with a warning, so a report still
    comes out of a box whose GPUs are only advertised (or missing)."""
    if requested != "cuda":
        return "cpu"
    if not gpu_ids:
        logger.warning("device cuda requested but Ray assigned this worker no GPU; using cpu")
        return "cpu"
    if not cuda_available:
        logger.warning("device cuda requested (GPU ids %s) but torch sees no CUDA device; using cpu", gpu_ids)
        return "cpu"
    return "cuda:0"


class EvalWorker:
    """Loads each checkpoint at most once while it stays in the LRU cache (digest -> policy)."""

    def __init__(
        self,
        *,
        device: str = "cpu",
        gpu_ids: list[str] | None = None,
        num_threads: int = 1,
        policy_cache_size: int = 4,
        lockstep_envs: int = DEFAULT_LOCKSTEP_ENVS,
        node_id: str = "",
        gpu_share: float = 0.0,
        trust_remote_code: bool = False,
        co_players: Mapping[str, CoPlayerBytes] | None = None,
    ) -> None:
        self._trust_remote_code = trust_remote_code
        self._co_player_bytes = dict(co_players or {})
        self._co_players: dict[str, BatchPolicy] = {}
        """Co-players loaded so far, by digest: few, used by every unit of a mixed env, so never evicted."""
        self._gpu_share = gpu_share
        self._gpu_ids = [str(i) for i in gpu_ids or []]
        self._device = resolve_device(device, self._gpu_ids, torch.cuda.is_available())
        self._policies: OrderedDict[str, BatchPolicy] = OrderedDict()
        self._policy_cache_size = max(1, policy_cache_size)
        self._lockstep_envs = lockstep_envs
        self._node_id = node_id
        self._name = f"worker-{os.getpid()}"
        self._loads = 0
        self._hits = 0
        self._loaded: list[str] = []
        torch.set_num_threads(max(1, num_threads))

    def run(self, unit: WorkUnit, checkpoint_bytes: bytes) -> UnitResult:
        """Play the unit's episodes. Checkpoint problems come back as `error` (the checkpoint fails, the
        run goes on); anything else raises, and the driver decides whether to retry."""
        started = time.perf_counter()
        try:
            policy, loaded = self._policy(unit.checkpoint_uri, unit.checkpoint_digest, checkpoint_bytes)
            load_s = time.perf_counter() - started
            played = play(
                policy,
                unit.jobs,
                lockstep_envs=self._lockstep_envs,
                co_players=self._co_players_of(unit),
                candidate_name=unit.checkpoint_uri,
            )
        except PolicyError as exc:
            return UnitResult(
                unit_id=unit.unit_id,
                worker=self._name,
                error=str(exc),
                held=tuple(self._policies),
                load_s=time.perf_counter() - started,
                node_id=self._node_id,
            )
        return UnitResult(
            unit_id=unit.unit_id,
            worker=self._name,
            episodes=tuple(played.results),
            env_errors=tuple(played.env_errors.items()),
            loaded=loaded,
            load_s=load_s,
            run_s=time.perf_counter() - started - load_s,
            held=tuple(self._policies),
            node_id=self._node_id,
        )

    def stats(self) -> WorkerStats:
        return WorkerStats(
            worker=self._name,
            device=self._device,
            node_id=self._node_id,
            gpu_ids=tuple(self._gpu_ids),
            policy_loads=self._loads,
            cache_hits=self._hits,
            loaded_checkpoints=tuple(self._loaded),
            cached_policies=len(self._policies),
            peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux reports KiB
            gpu_share=self._gpu_share,
        )

    def _co_players_of(self, unit: WorkUnit) -> dict[str, BatchPolicy]:
        """The unit's co-players, each loaded on first use (a co-player that fails to load fails the unit's
        checkpoint with its error, as the checkpoint's own would)."""
        for job in unit.jobs:
            for npc in job.env.npcs:
                if npc.digest in self._co_players:
                    continue
                if npc.digest not in self._co_player_bytes:
                    raise PolicyError(f"co-player {npc.uri} ({npc.digest}) was not handed to this worker")
                uri, data = self._co_player_bytes[npc.digest]
                try:
                    loaded = load_policy(uri, data, self._device, trust_remote_code=self._trust_remote_code)
                except PolicyError as exc:
                    raise PolicyError(f"co-player {npc.uri}: {exc}") from None
                self._co_players[npc.digest] = loaded
                self._loads += 1
        return self._co_players

    def _policy(self, uri: str, digest: str, data: bytes) -> tuple[BatchPolicy, bool]:
        if digest in self._policies:
            self._policies.move_to_end(digest)
            self._hits += 1
            return self._policies[digest], False
        policy = load_policy(uri, data, self._device, trust_remote_code=self._trust_remote_code)
        self._loads += 1
        self._loaded.append(digest)
        self._policies[digest] = policy
        if len(self._policies) > self._policy_cache_size:
            self._policies.popitem(last=False)
        return policy, True
