"""Turning checkpoint bytes into a `BatchPolicy`: the one place that knows every checkpoint format.

Formats (DESIGN.md "Policies"):
1. policy bundles (`sim.bundles`): a `.zip` (or a directory, zipped by the source) holding
   `policy_spec.json` / `cogames.toml`; torch modules and mettagrid classes, batched where they allow;
2. TorchScript files: architecture included, module maps obs tokens to action logits;
3. `.pt` state-dict checkpoints `{format_version, class_path, init_kwargs, state_dict}`, read with
   `torch.load(weights_only=True)` so no pickled code ever runs;
4. baselines by URI `builtin://<name>`: ours (`random`, `noop`, `navigator`) and mettagrid's registered
   short names.
A pickled full module is refused, with the way to convert it.
"""

from __future__ import annotations

import io
import logging
import pickle
import warnings
import zipfile
from enum import StrEnum

import torch
from mettagrid.policy.loader import discover_and_register_policies
from mettagrid.policy.policy import PolicySpec
from mettagrid.policy.policy_registry import get_policy_registry
from mettagrid.policy.submission import POLICY_MANIFEST_FILENAME, POLICY_SPEC_FILENAME
from mettagrid.util.module import load_symbol

from sim.baselines import BASELINES
from sim.batch_policy import BatchPolicy
from sim.bundles import load_bundle
from sim.errors import PolicyError, did_you_mean, first_line
from sim.mettagrid_policies import MettagridBundlePolicy
from sim.torch_policy import TorchPolicy

__all__ = ["BUILTIN_SCHEME", "PolicyFormat", "TorchPolicy", "builtin_names", "detect_format", "load_policy"]

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
        return load_bundle(uri, data, device, trust_remote_code=trust_remote_code)
    if kind is PolicyFormat.TORCHSCRIPT:
        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; reading it is our contract
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(io.BytesIO(data), map_location=device)
        except Exception as exc:  # torch raises bare RuntimeErrors for any malformed archive
            raise PolicyError(f"{uri}: cannot load TorchScript module: {first_line(exc)}") from None
        return TorchPolicy(module, uri, device)
    return TorchPolicy(_module_from_state_dict(uri, data, device), uri, device)


def _load_builtin(name: str) -> BatchPolicy:
    """Our baselines, or mettagrid's registered short names (untrained networks for the trainable ones)."""
    if name in BASELINES:
        return BASELINES[name]()
    discover_and_register_policies()
    registry = get_policy_registry()
    if name in registry:
        return MettagridBundlePolicy(f"{BUILTIN_SCHEME}{name}", PolicySpec(class_path=registry[name]), None, "cpu")
    known = builtin_names()
    raise PolicyError(f"unknown builtin policy {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}")


def _module_from_state_dict(uri: str, data: bytes, device: str) -> torch.nn.Module:
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise PolicyError(f"{uri} is a pickled Python object, refused (it could run code); {CONVERT_HINT}") from None
    except Exception as exc:
        raise PolicyError(f"{uri}: cannot read torch checkpoint: {first_line(exc)}") from None
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
        raise PolicyError(f"{uri}: state dict does not fit {checkpoint['class_path']}: {first_line(exc)}") from None
    return module.to(device).eval()
