"""Policy bundles, the mettagrid/Metta checkpoint format: a directory or `.zip` holding `policy_spec.json`
(or `cogames.toml`) with `class_path`, `data_path` and `init_kwargs`.

The class decides the path (DESIGN.md "Policies"):
- a torch `nn.Module` (ours, e.g. `sim.models.TokenGridLSTM`, or any installed one) is built from
  `init_kwargs`, gets the weights, and runs on our batched `TorchPolicy` directly;
- a mettagrid `MultiAgentPolicy` (`lstm`, `stateless`, `puffer`, any registered short name, or a class of
  an installed package) is built the way mettagrid's loader builds it and then driven by the fastest
  adapter that fits (`sim.mettagrid_policies`).
Weights are `.safetensors` (read with the `safetensors` library) or a `.pt` state dict read with
`torch.load(weights_only=True)`: no checkpoint byte is ever unpickled as code. A bundle shipping its own
code or a setup script runs only with `--trust-remote-code`.
"""

from __future__ import annotations

import io
import logging
import pickle
import shutil
import tempfile
import tomllib
from pathlib import Path, PurePosixPath

import torch
from mettagrid.policy.loader import resolve_policy_class_path
from mettagrid.policy.policy import MultiAgentPolicy, PolicySpec
from mettagrid.policy.prepare_policy_spec import (
    extract_submission_archive,
    load_policy_spec_from_path,
)
from mettagrid.policy.submission import (
    POLICY_MANIFEST_FILENAME,
    POLICY_SPEC_FILENAME,
    SubmissionPolicySpec,
    load_policy_manifest,
)
from mettagrid.util.module import load_symbol
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from sim.batch_policy import BatchPolicy
from sim.errors import PolicyError, first_line
from sim.mettagrid_policies import MettagridBundlePolicy
from sim.torch_policy import TorchPolicy

logger = logging.getLogger(__name__)

PUFFERLIB_INSTALL = "pip install --no-deps pufferlib-core==3.0.23 einops (README: mettagrid's trainable policies)"
INSTALL_HINTS: dict[str, str] = {
    "metta": "Metta (https://github.com/Metta-AI/metta; not on PyPI): install it from its repository",
    "pufferlib": PUFFERLIB_INSTALL,
    "cogames": "pip install cogames",
    "cogames_agents": "pip install cogames-agents",
}
"""What to tell a user whose bundle names a class from a package that is not installed."""
WEIGHTS_FILENAME = "weights.safetensors"
CODE_SUFFIXES = frozenset({".py", ".pyc", ".pyo", ".pyw", ".pyd", ".so", ".dylib", ".dll", ".pth"})
"""Suffixes of files Python imports or runs (any of a name's suffixes: `x.so.1`, `x.cpython-311-x86_64.so`)."""
CODE_SUFFIXES_LAST = (".egg", ".whl", ".pyz")
"""Archives Python imports from when they are on `sys.path` (only as the last suffix: `weights.v1.egg`)."""


def load_bundle(uri: str, data: bytes, device: str, *, trust_remote_code: bool) -> BatchPolicy:
    """Load a zipped bundle (sources zip bundle directories deterministically, so `data` is always a zip).

    The bundle is extracted to a temporary directory, removed once everything it holds is in memory; it
    stays only while something may still read it: a mettagrid class that loads its own data file when it is
    built (at `bind`), or code shipped in a trusted archive."""
    root = Path(tempfile.mkdtemp(prefix="policy-bundle-"))
    keep = False
    try:
        spec = _read_spec(uri, data, root, trust_remote_code)
        policy_class = _import_class(uri, spec.class_path)
        if isinstance(policy_class, type) and issubclass(policy_class, torch.nn.Module):
            module = _build_module(uri, policy_class, spec)
            keep = trust_remote_code
            return TorchPolicy(module.to(device), uri, device)
        if isinstance(policy_class, type) and issubclass(policy_class, MultiAgentPolicy):
            weights = read_weights(uri, Path(spec.data_path)) if _is_weights_file(spec.data_path) else None
            keep = trust_remote_code or (weights is None and spec.data_path is not None)
            return MettagridBundlePolicy(uri, spec, weights, device)
        raise PolicyError(f"{uri}: class_path {spec.class_path!r} is neither a torch.nn.Module nor a MultiAgentPolicy")
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _read_spec(uri: str, data: bytes, root: Path, trust_remote_code: bool) -> PolicySpec:
    """Extract (mettagrid refuses absolute, traversing and symlinked members) and read the spec.

    Untrusted, nothing the bundle holds can be imported, by construction: a bundle holding Python source, a
    compiled or native module, a `.pth` or a setup script is refused before anything is imported, the
    bundle root never goes on `sys.path`, and the class is then resolved among installed packages (and
    mettagrid's short names) only. Trusted, mettagrid's own loader runs the setup script and puts the
    bundle's code on `sys.path`. Either way `data_path` must name a file inside the bundle, so the
    checkpoint's digest (of the archive's bytes) covers every byte that is loaded."""
    archive_path = root / "bundle.zip"
    archive_path.write_bytes(data)
    extracted = root / "extracted"
    try:
        extract_submission_archive(archive_path, extracted)
        submission = _submission_spec(extracted)
        data_path = _data_path_inside(uri, extracted, submission.data_path)
        if trust_remote_code:
            return load_policy_spec_from_path(extracted)
        _refuse_shipped_code(uri, extracted, submission, data_path)
    except (ValueError, FileNotFoundError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise PolicyError(f"{uri}: invalid policy bundle: {first_line(exc)}") from None
    return PolicySpec(
        class_path=submission.class_path,
        data_path=data_path,
        init_kwargs=dict(submission.init_kwargs),
        policy_env_interface=submission.policy_env_interface,
    )


def _submission_spec(root: Path) -> SubmissionPolicySpec:
    spec_path, manifest_path = root / POLICY_SPEC_FILENAME, root / POLICY_MANIFEST_FILENAME
    if spec_path.is_file():
        return SubmissionPolicySpec.model_validate_json(spec_path.read_text())
    if manifest_path.is_file():
        return load_policy_manifest(manifest_path)
    raise FileNotFoundError(f"neither {POLICY_SPEC_FILENAME} nor {POLICY_MANIFEST_FILENAME} at the bundle's top")


def _data_path_inside(uri: str, root: Path, data_path: str | None) -> str | None:
    """`data_path` resolved inside the bundle (symlinks followed), or a refusal that names only what the
    bundle said, never what is outside it."""
    if not data_path:
        return None
    relative = PurePosixPath(data_path)
    inside = root.resolve()
    target = (inside / relative).resolve()
    if relative.is_absolute() or not target.is_relative_to(inside):
        raise PolicyError(f"{uri}: data_path {data_path!r} points outside the bundle; it must name a file in it")
    if not target.is_file():
        raise PolicyError(f"{uri}: data_path {data_path!r} is not a file in the bundle")
    return str(target)


def _refuse_shipped_code(uri: str, root: Path, submission: SubmissionPolicySpec, data_path: str | None) -> None:
    if submission.setup_script:
        raise PolicyError(
            f"{uri} ships a setup script ({submission.setup_script}); it runs only with --trust-remote-code "
            "(only for archives you trust)"
        )
    for path in sorted(root.rglob("*")):
        if _is_code(path) and not (path.suffix == ".pth" and str(path.resolve()) == data_path):  # torch weights
            raise PolicyError(
                f"{uri} ships code ({path.relative_to(root).as_posix()}); bundled code runs only with "
                "--trust-remote-code (only for archives you trust)"
            )


def _is_code(path: Path) -> bool:
    """Anything Python could import or run: source, bytecode, native modules (`x.so`, `x.cpython-311-...so`,
    `x.so.1`), `.pth` files, importable archives, package directories."""
    if path.is_dir():
        return False  # a package directory holds an __init__.py or modules, which are refused themselves
    name = path.name.lower()
    return bool(CODE_SUFFIXES.intersection(PurePosixPath(name).suffixes)) or name.endswith(CODE_SUFFIXES_LAST)


def _import_class(uri: str, class_path: str) -> object:
    """The class a bundle names (mettagrid short names such as `lstm` included); a missing package is this
    checkpoint's error, naming what to install."""
    full_path = resolve_policy_class_path(class_path)
    try:
        return load_symbol(full_path)
    except ImportError as exc:
        missing = (getattr(exc, "name", None) or "").split(".")[0]
        if "PufferLib" in str(exc):  # mettagrid's own check for its `train` extra
            missing = "pufferlib"
        if missing and missing in INSTALL_HINTS:
            hint = INSTALL_HINTS[missing]
        elif missing:
            hint = f"install the package that provides {missing!r}"
        else:
            hint = "check the class path"
        raise PolicyError(f"{uri}: cannot import {full_path} (package {missing or '?'!r} missing): {hint}") from None
    except AttributeError as exc:
        raise PolicyError(f"{uri}: cannot import {full_path}: {first_line(exc)}") from None


def _build_module(uri: str, module_class: type[torch.nn.Module], spec: PolicySpec) -> torch.nn.Module:
    if not spec.data_path:
        raise PolicyError(f"{uri}: bundle of {spec.class_path} names no data_path (the weights)")
    weights = read_weights(uri, Path(spec.data_path))
    try:
        module = module_class(**spec.init_kwargs)
        module.load_state_dict(weights)
    except Exception as exc:
        raise PolicyError(f"{uri}: weights do not fit {spec.class_path}: {first_line(exc)}") from None
    return module.eval()


def _is_weights_file(data_path: str | None) -> bool:
    return bool(data_path) and Path(data_path).suffix in (".safetensors", ".pt", ".pth")


def read_weights(uri: str, path: Path) -> dict[str, torch.Tensor]:
    """A state dict from `.safetensors`, or from a torch file read with `weights_only=True` (a bare state
    dict, or our `{format_version, ..., state_dict}` dict). Anything else is refused, never unpickled."""
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        try:
            return load_safetensors(data)
        except (SafetensorError, ValueError) as exc:
            raise PolicyError(f"{uri}: {path.name} is not a valid safetensors file: {first_line(exc)}") from None
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise PolicyError(f"{uri}: {path.name} is a pickled Python object, refused (it could run code)") from None
    except Exception as exc:
        raise PolicyError(f"{uri}: cannot read {path.name}: {first_line(exc)}") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise PolicyError(f"{uri}: {path.name} is not a state dict (a mapping of parameter names to tensors)")
    return loaded


def write_bundle(directory: Path, module: torch.nn.Module, init_kwargs: dict, *, class_path: str | None = None) -> Path:
    """Save `module` as a bundle: `policy_spec.json` + `weights.safetensors`, written under a temporary name
    and renamed into place (a reader never sees half a bundle). Our examples ship in this format."""
    from safetensors.torch import save as save_safetensors

    class_path = class_path or f"{type(module).__module__}.{type(module).__qualname__}"
    spec = SubmissionPolicySpec(class_path=class_path, data_path=WEIGHTS_FILENAME, init_kwargs=init_kwargs)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    weights = {name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}
    (staging / WEIGHTS_FILENAME).write_bytes(save_safetensors(weights))
    (staging / POLICY_SPEC_FILENAME).write_text(spec.model_dump_json(exclude_defaults=True, indent=2) + "\n")
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    return directory
