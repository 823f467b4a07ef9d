"""`TorchPolicy`: every torch network, feed-forward or recurrent, driven as one batched call per step.

Three call conventions, told apart once at load time (never inside the loop):
- `FEED_FORWARD`: `module(tokens) -> logits` (our state-dict and TorchScript checkpoints);
- `FORWARD_EVAL`: PufferLib's `forward_eval(observations, state) -> (logits, values)` without memory
  (mettagrid's `stateless`), called with `state=None`;
- `RECURRENT`: the same `forward_eval` with memory (mettagrid's `lstm` and `puffer`, our `TokenGridLSTM`).
  The state is a dict of tensors, one row per agent row, kept on the policy's device in buffers allocated
  once; a row is zeroed when its episode starts (`start_episode`), so nothing leaks from the episode that
  used the slot before. Which entries a network keeps, and their shapes, is learnt from one probe call with
  the entries set to `None` (what both PufferLib and mettagrid treat as "zeros") at `bind`.

Sampling always uses the runner's per-episode Gumbel noise (the Gumbel-max trick): reports do not depend on
workers, shard sizes or lockstep widths, for recurrent policies too (mettagrid's own per-agent path samples
from torch's global RNG instead).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
from mettagrid.policy.policy_env_interface import PolicyEnvInterface

from sim.batch_policy import BatchPolicy, Slot, StepBatch
from sim.errors import PolicyError

logger = logging.getLogger(__name__)

DEFAULT_STATE_KEYS = ("lstm_h", "lstm_c")
"""PufferLib's and mettagrid's recurrent state entries; a module may name others in `state_keys`."""


class CallConvention(StrEnum):
    FEED_FORWARD = "feed_forward"
    FORWARD_EVAL = "forward_eval"
    RECURRENT = "recurrent"


def probe_state(module: torch.nn.Module, obs_shape: tuple[int, ...], device: torch.device) -> dict[str, torch.Tensor]:
    """The state entries `module.forward_eval` writes for one all-empty observation row, starting from entries
    set to None: none for a network without memory. Costs one tiny forward, once per environment interface."""
    keys = tuple(getattr(module, "state_keys", DEFAULT_STATE_KEYS))
    state: dict[str, torch.Tensor | None] = dict.fromkeys(keys)
    probe = torch.full((1, *obs_shape), 0xFF, dtype=torch.uint8, device=device)
    with torch.inference_mode():
        module.forward_eval(probe, state)
    return {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}


class TorchPolicy(BatchPolicy):
    """A torch network mapping uint8 tokens (rows, tokens, 3) to logits (rows, actions).

    Two paths, chosen once from the device; both run under `torch.inference_mode` (torch threads are the
    actor's business: `EvalWorker` sets them to its CPUs):
    - CPU: the module reads the runner's observation buffer in place (`torch.from_numpy`, no copy) and the
      sampled actions come back as a view of argmax's output (`.numpy()`, no copy).
    - CUDA (`staged`): observations and noise go through pinned host buffers allocated once, copied to the
      GPU with non-blocking copies; the forward covers all agents of all environments of the step, the
      actions come back into a pinned buffer, and the step costs one stream synchronisation. Recurrent state
      never leaves the device. `staged=True` on CPU runs the same logic with ordinary memory (how the tests
      cover it without a GPU).
    """

    stochastic = True

    def __init__(self, module: torch.nn.Module, name: str, device: str, *, staged: bool | None = None) -> None:
        self._module = module.eval()
        self._name = name
        self._device = torch.device(device)
        self._staged = self._device.type == "cuda" if staged is None else staged
        self._host: _HostBuffers | None = None
        has_forward_eval = callable(getattr(module, "forward_eval", None))
        self._convention = CallConvention.FORWARD_EVAL if has_forward_eval else CallConvention.FEED_FORWARD
        """A `forward_eval` network turns out RECURRENT at `bind` when its probe step writes state."""
        self._state: dict[str, torch.Tensor] = {}
        self._row_shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}

    @property
    def recurrent(self) -> bool:
        return self._convention is CallConvention.RECURRENT

    def bind(self, env: PolicyEnvInterface) -> None:
        self._num_actions = len(env.action_names)
        if self._convention is not CallConvention.FEED_FORWARD:
            try:
                found = probe_state(self._module, env.observation_shape, self._device)
            except Exception as exc:
                raise PolicyError(f"policy {self._name} failed on a probe observation: {exc}") from None
            self._convention = CallConvention.RECURRENT if found else CallConvention.FORWARD_EVAL
            shapes = {key: (tuple(value.shape[1:]), value.dtype) for key, value in found.items()}
            if shapes != self._row_shapes:
                self._row_shapes, self._state = shapes, {}
        probe = np.full((1, *env.observation_shape), 0xFF, dtype=np.uint8)
        with torch.inference_mode():
            self._check_finite(self._logits(torch.from_numpy(probe).to(self._device), fresh_state=True))

    def start_episode(self, slot: Slot) -> None:
        """Zero the episode's state rows (queued on the device's stream on CUDA: no synchronisation)."""
        if not self.recurrent:
            return
        with torch.inference_mode():
            self._ensure_state_rows(slot.rows.stop)
            for buffer in self._state.values():
                buffer[slot.rows].zero_()

    def _ensure_state_rows(self, rows: int) -> None:
        """Grow the state buffers to `rows` (once per group in practice), keeping the rows already held."""
        held = next(iter(self._state.values())).shape[0] if self._state else 0
        if held >= rows:
            return
        for key, (shape, dtype) in self._row_shapes.items():
            grown = torch.zeros((rows, *shape), dtype=dtype, device=self._device)
            if key in self._state:
                grown[:held] = self._state[key]
            self._state[key] = grown

    def _logits(self, tokens: torch.Tensor, *, fresh_state: bool = False) -> torch.Tensor:
        rows = tokens.shape[0]
        try:
            if self._convention is CallConvention.FEED_FORWARD:
                output = self._module(tokens)
            elif self._convention is CallConvention.FORWARD_EVAL:
                output = self._module.forward_eval(tokens, None)
            else:
                output = self._recurrent_step(tokens, rows, fresh_state)
        except PolicyError:
            raise
        except Exception as exc:
            raise PolicyError(f"policy {self._name} failed on observations {tuple(tokens.shape)}: {exc}") from None
        logits = output[0] if isinstance(output, tuple) else output
        expected = (rows, self._num_actions)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise PolicyError(f"policy {self._name} returned logits of shape {shape}, expected {expected}")
        return logits.float()

    def _recurrent_step(self, tokens: torch.Tensor, rows: int, fresh_state: bool):
        """One forward over the first `rows` state rows; the network's new state is copied back in place
        (on the device: ~2 us per entry), so the buffers stay the one place a row's memory lives."""
        if fresh_state:  # bind's probe: a throwaway state, the buffers are untouched
            return self._module.forward_eval(tokens, dict.fromkeys(self._row_shapes))
        self._ensure_state_rows(rows)  # a no-op (~1 us) unless a runner steps rows no episode started in
        state = {key: buffer[:rows] for key, buffer in self._state.items()}
        output = self._module.forward_eval(tokens, state)
        for key, buffer in self._state.items():
            new = state[key]
            if new is not None and new.data_ptr() != buffer.data_ptr():
                buffer[:rows].copy_(new.reshape(buffer[:rows].shape))
        return output

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
