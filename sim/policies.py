"""Turning checkpoint bytes into a `BatchPolicy`: the one place that knows every checkpoint format.

Formats (DESIGN.md "Policies"):
1. mettagrid policy specs: a submission `.zip` (or a directory, zipped by the source) holding
   `policy_spec.json` / `cogames.toml`, loaded through mettagrid's own loader;
2. TorchScript files: architecture included, module maps obs tokens to action logits;
3. `.pt` state-dict checkpoints `{format_version, class_path, init_kwargs, state_dict}`, read with
   `torch.load(weights_only=True)` so no pickled code ever runs;
4. baselines by URI `builtin://<name>`: ours (`random`, `noop`, `navigator`) and mettagrid's registered
   short names.
A pickled full module is refused, with the way to convert it.
"""

from __future__ import annotations

import difflib
import io
import logging
import pickle
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch
from mettagrid.policy.loader import (
    discover_and_register_policies,
    initialize_or_load_policy,
    resolve_policy_class_path,
)
from mettagrid.policy.policy import AgentPolicy, MultiAgentPolicy, PolicySpec
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from mettagrid.policy.policy_registry import get_policy_registry
from mettagrid.policy.prepare_policy_spec import (
    extract_submission_archive,
    find_package_source_root,
    load_policy_spec_from_path,
)
from mettagrid.policy.submission import (
    POLICY_MANIFEST_FILENAME,
    POLICY_SPEC_FILENAME,
    SubmissionPolicySpec,
    load_policy_manifest,
)
from mettagrid.util.module import load_symbol

from sim.baselines import BASELINES
from sim.batch_policy import BatchPolicy, Slot, StepBatch
from sim.errors import PolicyError

logger = logging.getLogger(__name__)

BUILTIN_SCHEME = "builtin://"
STATE_DICT_FORMAT_VERSION = 1
MAX_ARCHIVE_BYTES = 2 * 1024**3
"""Largest expanded size of a checkpoint archive (a policy of a few GB is already unusual)."""
MAX_ARCHIVE_MEMBERS = 10_000
STATE_DICT_KEYS = ("format_version", "class_path", "init_kwargs", "state_dict")
CONVERT_HINT = (
    "save it as TorchScript (torch.jit.save(torch.jit.script(model), path)) or as a state dict "
    "(torch.save({'format_version': 1, 'class_path': 'pkg.Module', 'init_kwargs': {...}, "
    "'state_dict': model.state_dict()}, path))"
)


class PolicyFormat(StrEnum):
    BUILTIN = "builtin"
    METTAGRID_SPEC = "mettagrid_spec"
    TORCHSCRIPT = "torchscript"
    STATE_DICT = "state_dict"


def builtin_names() -> list[str]:
    """Every name `builtin://<name>` accepts: our baselines, then mettagrid's registered short names."""
    discover_and_register_policies()
    return sorted(set(BASELINES) | set(get_policy_registry()))


def detect_format(uri: str, data: bytes) -> PolicyFormat:
    """Classify checkpoint bytes by content, never by file name."""
    if uri.startswith(BUILTIN_SCHEME):
        return PolicyFormat.BUILTIN
    if not data.startswith(b"PK"):
        raise PolicyError(
            f"{uri} is not a zip archive: a legacy pickle or an unknown file; pickles are never loaded, {CONVERT_HINT}"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise PolicyError(f"{uri} is a corrupt zip archive: {exc}") from None
    _check_expanded_size(uri, members)
    names = [member.filename for member in members]
    if POLICY_SPEC_FILENAME in names or POLICY_MANIFEST_FILENAME in names:
        return PolicyFormat.METTAGRID_SPEC
    if any("/code/" in name or name.endswith("constants.pkl") for name in names):
        return PolicyFormat.TORCHSCRIPT
    if any(name.endswith("data.pkl") for name in names):
        return PolicyFormat.STATE_DICT
    raise PolicyError(
        f"{uri}: zip archive is neither a mettagrid policy spec ({POLICY_SPEC_FILENAME} / "
        f"{POLICY_MANIFEST_FILENAME}), TorchScript, nor a torch.save checkpoint"
    )


def _check_expanded_size(uri: str, members: list[zipfile.ZipInfo]) -> None:
    """Refuse zip bombs before anything is extracted or read (sizes come from the central directory)."""
    expanded = sum(member.file_size for member in members)
    if len(members) > MAX_ARCHIVE_MEMBERS or expanded > MAX_ARCHIVE_BYTES:
        raise PolicyError(
            f"{uri} expands to {expanded:,} bytes in {len(members):,} files (limits {MAX_ARCHIVE_BYTES:,} bytes, "
            f"{MAX_ARCHIVE_MEMBERS:,} files); refusing a possible zip bomb"
        )


def load_policy(uri: str, data: bytes, device: str = "cpu", *, trust_remote_code: bool = False) -> BatchPolicy:
    """Load one checkpoint for inference on `device`. Code shipped inside a mettagrid submission archive
    (bundled modules, a setup script) runs only with `trust_remote_code`."""
    kind = detect_format(uri, data)
    if kind is PolicyFormat.BUILTIN:
        return _load_builtin(uri[len(BUILTIN_SCHEME) :])
    if kind is PolicyFormat.METTAGRID_SPEC:
        return MettagridPolicy(_spec_from_archive(uri, data, trust_remote_code), device)
    if kind is PolicyFormat.TORCHSCRIPT:
        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; reading it is our contract
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(io.BytesIO(data), map_location=device)
        except Exception as exc:  # torch raises bare RuntimeErrors for any malformed archive
            raise PolicyError(f"{uri}: cannot load TorchScript module: {_first_line(exc)}") from None
        return TorchPolicy(module, uri, device)
    return TorchPolicy(_module_from_state_dict(uri, data, device), uri, device)


def _load_builtin(name: str) -> BatchPolicy:
    if name in BASELINES:
        return BASELINES[name]()
    discover_and_register_policies()
    registry = get_policy_registry()
    if name in registry:
        return MettagridPolicy(PolicySpec(class_path=registry[name]), "cpu")
    suggestion = difflib.get_close_matches(name, builtin_names(), n=1)
    hint = f" (did you mean {suggestion[0]!r}?)" if suggestion else ""
    raise PolicyError(f"unknown builtin policy {name!r}{hint}; known: {', '.join(builtin_names())}")


def _module_from_state_dict(uri: str, data: bytes, device: str) -> torch.nn.Module:
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise PolicyError(f"{uri} is a pickled Python object, refused (it could run code); {CONVERT_HINT}") from None
    except Exception as exc:
        raise PolicyError(f"{uri}: cannot read torch checkpoint: {_first_line(exc)}") from None
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in STATE_DICT_KEYS):
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise PolicyError(f"{uri}: state-dict checkpoint needs keys {list(STATE_DICT_KEYS)}, found {found}")
    if checkpoint["format_version"] != STATE_DICT_FORMAT_VERSION:
        raise PolicyError(
            f"{uri}: format_version {checkpoint['format_version']!r} unsupported (expected {STATE_DICT_FORMAT_VERSION})"
        )
    module_class = load_symbol(str(checkpoint["class_path"]), strict=False)
    if not (isinstance(module_class, type) and issubclass(module_class, torch.nn.Module)):
        raise PolicyError(f"{uri}: class_path {checkpoint['class_path']!r} is not an importable torch.nn.Module")
    try:
        module = module_class(**dict(checkpoint["init_kwargs"]))
        module.load_state_dict(checkpoint["state_dict"])
    except Exception as exc:
        raise PolicyError(f"{uri}: state dict does not fit {checkpoint['class_path']}: {_first_line(exc)}") from None
    return module.to(device).eval()


def _spec_from_archive(uri: str, data: bytes, trust_remote_code: bool) -> PolicySpec:
    """Extract a submission archive (mettagrid refuses absolute, traversing and symlinked members), and
    check what its spec would run before mettagrid's loader runs any of it."""
    root = Path(tempfile.mkdtemp(prefix="policy-spec-"))
    archive_path = root / "submission.zip"
    archive_path.write_bytes(data)
    extracted = root / "extracted"
    try:
        extract_submission_archive(archive_path, extracted)
        if not trust_remote_code:
            _refuse_bundled_code(uri, extracted)
        return load_policy_spec_from_path(extracted)
    except (ValueError, FileNotFoundError) as exc:
        raise PolicyError(f"{uri}: invalid mettagrid policy archive: {_first_line(exc)}") from None


def _refuse_bundled_code(uri: str, root: Path) -> None:
    spec_path, manifest_path = root / POLICY_SPEC_FILENAME, root / POLICY_MANIFEST_FILENAME
    if spec_path.is_file():
        spec = SubmissionPolicySpec.model_validate_json(spec_path.read_text())
    else:
        spec = load_policy_manifest(manifest_path)
    what = None
    if spec.setup_script:
        what = f"a setup script ({spec.setup_script})"
    elif find_package_source_root(root, resolve_policy_class_path(spec.class_path)) is not None:
        what = f"its own code ({spec.class_path})"
    if what:
        raise PolicyError(f"{uri} ships {what}; it runs only with --trust-remote-code (only for archives you trust)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TorchPolicy(BatchPolicy):
    """A module mapping uint8 tokens (batch, tokens, 3) to logits (batch, actions); samples with the
    runner's Gumbel noise (the Gumbel-max trick), so sampling is reproducible per episode.

    Two paths, chosen once from the device; both run under `torch.inference_mode` (torch threads are the
    actor's business: `EvalWorker` sets them to its CPUs):
    - CPU: the module reads the runner's observation buffer in place (`torch.from_numpy`, no copy) and the
      sampled actions come back as a view of argmax's output (`.numpy()`, no copy).
    - CUDA (`staged`): observations and noise go through pinned host buffers allocated once, copied to the
      GPU with non-blocking copies; the forward covers all agents of all environments of the step, the
      actions come back into a pinned buffer, and the step costs one stream synchronisation. `staged=True`
      on CPU runs the same logic with ordinary memory (how the tests cover it without a GPU).
    """

    stochastic = True

    def __init__(self, module: torch.nn.Module, name: str, device: str, *, staged: bool | None = None) -> None:
        self._module = module.eval()
        self._name = name
        self._device = torch.device(device)
        self._staged = self._device.type == "cuda" if staged is None else staged
        self._host: _HostBuffers | None = None

    def bind(self, env: PolicyEnvInterface) -> None:
        self._num_actions = len(env.action_names)
        probe = np.full((1, *env.observation_shape), 0xFF, dtype=np.uint8)
        with torch.inference_mode():
            self._check_finite(self._logits(torch.from_numpy(probe).to(self._device)))

    def _logits(self, tokens: torch.Tensor) -> torch.Tensor:
        try:
            logits = self._module(tokens)
        except Exception as exc:
            raise PolicyError(f"policy {self._name} failed on observations {tuple(tokens.shape)}: {exc}") from None
        expected = (tokens.shape[0], self._num_actions)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise PolicyError(f"policy {self._name} returned logits of shape {shape}, expected {expected}")
        return logits.float()

    def _check_finite(self, logits_or_flag: torch.Tensor) -> None:
        """Refuse NaN/inf logits; on the staged path the flag was computed on the device and copied back
        with the actions, so the check costs no extra synchronisation."""
        finite = logits_or_flag if logits_or_flag.dtype == torch.bool else torch.isfinite(logits_or_flag).all()
        if not bool(finite):
            raise PolicyError(f"policy {self._name} returned NaN or infinite logits")

    @torch.inference_mode()
    def act(self, batch: StepBatch) -> np.ndarray:
        if self._staged:  # CUDA: pinned copies + one sync per step (see _act_staged)
            return self._act_staged(batch)
        logits = self._logits(torch.from_numpy(batch.observations))
        self._check_finite(logits)  # ~3 us on (rows, actions); a broken checkpoint fails loudly, not silently
        if batch.noise is not None:
            logits = logits + torch.from_numpy(batch.noise)
        return logits.argmax(dim=1).numpy()

    def _act_staged(self, batch: StepBatch) -> np.ndarray:
        rows = batch.observations.shape[0]
        host = self._host_buffers(rows, batch.observations.shape[1:], batch.noise is not None)
        np.copyto(host.observations_np[:rows], batch.observations)  # one memcpy into pinned memory
        tokens = host.observations[:rows].to(self._device, non_blocking=True)
        if batch.noise is not None:  # queued behind the tokens on the same stream, overlaps the forward
            np.copyto(host.noise_np[:rows], batch.noise)
            noise = host.noise[:rows].to(self._device, non_blocking=True)
        logits = self._logits(tokens)
        finite = torch.isfinite(logits).all()
        if batch.noise is not None:
            logits = logits + noise
        host.actions[:rows].copy_(logits.argmax(dim=1), non_blocking=True)
        host.finite.copy_(finite, non_blocking=True)
        if self._device.type == "cuda":  # the step's only sync: actions and the finite flag are on the host
            torch.cuda.current_stream(self._device).synchronize()
        self._check_finite(host.finite)
        return host.actions_np[:rows]

    def _host_buffers(self, rows: int, obs_shape: tuple[int, ...], noise: bool) -> _HostBuffers:
        """Allocated on first use and when a group needs more rows (once per run in practice)."""
        host = self._host
        if host is None or host.observations.shape[0] < rows or host.observations.shape[1:] != obs_shape:
            pin = self._device.type == "cuda"
            host = self._host = _HostBuffers.allocate(rows, obs_shape, self._num_actions, pin)
        return host


@dataclass
class _HostBuffers:
    """Host-side staging for the CUDA path: pinned so host<->device copies are asynchronous DMA.

    `*_np` are numpy views of the same memory, so filling them is a plain memcpy."""

    observations: torch.Tensor
    noise: torch.Tensor
    actions: torch.Tensor
    finite: torch.Tensor
    observations_np: np.ndarray
    noise_np: np.ndarray
    actions_np: np.ndarray

    @classmethod
    def allocate(cls, rows: int, obs_shape: tuple[int, ...], num_actions: int, pin: bool) -> _HostBuffers:
        observations = torch.empty((rows, *obs_shape), dtype=torch.uint8, pin_memory=pin)
        noise = torch.empty((rows, num_actions), dtype=torch.float32, pin_memory=pin)
        actions = torch.empty(rows, dtype=torch.int64, pin_memory=pin)
        finite = torch.ones((), dtype=torch.bool, pin_memory=pin)
        return cls(observations, noise, actions, finite, observations.numpy(), noise.numpy(), actions.numpy())


class MettagridPolicy(BatchPolicy):
    """Adapter for mettagrid `MultiAgentPolicy` classes: per-agent `AgentPolicy.step` on the simulation's
    own observation objects. One instance per agent count, since mettagrid policies are built for one."""

    def __init__(self, spec: PolicySpec, device: str) -> None:
        self._spec = spec
        self._device = device
        self._by_agent_count: dict[int, tuple[MultiAgentPolicy, PolicyEnvInterface]] = {}
        self._agents: dict[int, list[AgentPolicy]] = {}

    def start_episode(self, slot: Slot) -> None:
        num_agents = slot.simulation.num_agents
        if num_agents not in self._by_agent_count:
            env = PolicyEnvInterface.from_mg_cfg(slot.simulation.config)
            try:
                policy = initialize_or_load_policy(env, self._spec, device_override=self._device)
            except Exception as exc:
                raise PolicyError(f"mettagrid policy {self._spec.class_path}: {_first_line(exc)}") from None
            self._by_agent_count[num_agents] = (policy, env)
        policy, _ = self._by_agent_count[num_agents]
        self._agents[slot.index] = [policy.agent_policy(agent_id) for agent_id in range(num_agents)]
        for agent in self._agents[slot.index]:
            agent.reset()

    def act(self, batch: StepBatch) -> np.ndarray:
        actions = np.zeros(batch.observations.shape[0], dtype=np.int64)
        for slot in batch.slots:
            _, env = self._by_agent_count[slot.simulation.num_agents]
            index = env.action_name_to_flat_index
            for agent_id, agent in enumerate(self._agents[slot.index]):
                action = agent.step(slot.simulation.agent(agent_id).observation)
                actions[slot.rows.start + agent_id] = index[action.name]
        return actions
