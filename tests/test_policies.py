import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from evaluator.sources import resolve
from sim.errors import PolicyError
from sim.mettagrid_policies import MettagridBundlePolicy
from sim.policies import PolicyFormat, TorchPolicy, detect_format, load_policy
from sim.runner import EpisodeJob, run_episodes
from sim.suites import get_suite
from tests.conftest import state_dict_bytes, submission_zip, tiny_model

SMOKE = get_suite("smoke")


def play(policy, episodes: int = 2):
    jobs = [EpisodeJob(env, i, 1000 + i) for env in SMOKE.envs for i in range(episodes)]
    return run_episodes(policy, jobs)


def torchscript_bytes(module: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()


def test_builtins_and_unknown_builtin():
    assert detect_format("builtin://navigator", b"") is PolicyFormat.BUILTIN
    results = play(load_policy("builtin://navigator", b""))
    assert len(results) == 4 and all(r.steps > 0 for r in results)
    with pytest.raises(PolicyError, match=r"unknown builtin policy 'navigatr' \(did you mean 'navigator'\?\)"):
        load_policy("builtin://navigatr", b"")


def test_torchscript_and_state_dict_of_the_same_weights_play_identically():
    model, kwargs = tiny_model(0)
    scripted = load_policy("file:///m.ts", torchscript_bytes(model))
    from_state = load_policy("file:///m.pt", state_dict_bytes(model, kwargs))
    assert isinstance(scripted, TorchPolicy) and isinstance(from_state, TorchPolicy)
    assert [r.rewards for r in play(scripted)] == [r.rewards for r in play(from_state)]


def test_full_pickled_module_is_refused_with_conversion_hint():
    model, _ = tiny_model(0)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    with pytest.raises(PolicyError, match=r"pickled Python object, refused.*torch\.jit\.save"):
        load_policy("file:///full.pt", buffer.getvalue())


class _Evil:
    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_pickle_never_runs(tmp_path: Path):
    evil = _Evil()
    evil.marker = tmp_path / "pwned"
    inside_torch = io.BytesIO()
    torch.save({"format_version": 1, "payload": evil}, inside_torch)
    for data in (inside_torch.getvalue(), pickle.dumps(evil)):
        with pytest.raises(PolicyError, match="refused|never loaded"):
            load_policy("file:///evil.pt", data)
    assert not evil.marker.exists()


def test_state_dict_class_path_must_be_a_torch_module():
    model, kwargs = tiny_model(0)
    with pytest.raises(PolicyError, match="not an importable torch.nn.Module"):
        load_policy("file:///x.pt", state_dict_bytes(model, {"command": "true"}, class_path="os.system"))
    with pytest.raises(PolicyError, match="does not fit"):
        load_policy("file:///x.pt", state_dict_bytes(model, {**kwargs, "hidden": 8}))


class _WrongShape(torch.nn.Module):
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.zeros(tokens.shape[0], 3)


class _NaN(torch.nn.Module):
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.full((tokens.shape[0], 5), float("nan"))


@pytest.mark.parametrize(
    ("module", "message"), [(_WrongShape(), r"logits of shape \(1, 3\), expected \(1, 5\)"), (_NaN(), "NaN")]
)
def test_misbehaving_torchscript_is_refused(module, message):
    with pytest.raises(PolicyError, match=message):
        play(load_policy("file:///bad.ts", torchscript_bytes(module)), episodes=1)


def test_not_a_checkpoint():
    with pytest.raises(PolicyError, match="not a zip archive"):
        load_policy("file:///x.pt", b"hello")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(PolicyError, match="neither a mettagrid policy spec"):
        load_policy("file:///x.zip", buffer.getvalue())


@pytest.mark.parametrize("manifest", ["policy_spec.json", "cogames.toml"])
def test_mettagrid_policy_directory(tmp_path: Path, manifest: str):
    policy_dir = tmp_path / "submission"
    policy_dir.mkdir()
    class_path = "mettagrid.policy.random_agent.RandomMultiAgentPolicy"
    if manifest == "policy_spec.json":
        (policy_dir / manifest).write_text(json.dumps({"class_path": class_path}))
    else:
        (policy_dir / manifest).write_text(f'[policy]\nclass_path = "{class_path}"\n')
    [checkpoint] = resolve(str(policy_dir))
    assert detect_format(checkpoint.uri, checkpoint.data) is PolicyFormat.METTAGRID_SPEC
    policy = load_policy(checkpoint.uri, checkpoint.data)
    assert isinstance(policy, MettagridBundlePolicy)
    results = play(policy, episodes=1)
    assert all(r.steps == env.max_steps for r, env in zip(results, SMOKE.envs, strict=True))


def test_zip_slip_archive_is_refused(tmp_path: Path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("policy_spec.json", json.dumps({"class_path": "x.Y"}))
        archive.writestr("../../escaped.txt", "gotcha")
    with pytest.raises(PolicyError, match="path traversal"):
        load_policy("file:///slip.zip", buffer.getvalue())
    assert not list(tmp_path.parent.parent.glob("escaped.txt"))


def test_bundled_code_runs_only_with_trust_remote_code(tmp_path: Path):
    archive = submission_zip()
    with pytest.raises(PolicyError, match=r"ships code \(bundled_pkg/__init__.py\).*--trust-remote"):
        load_policy("file:///sub.zip", archive)
    policy = load_policy("file:///sub.zip", archive, trust_remote_code=True)
    assert all(r.rewards == (0.0,) * len(r.rewards) for r in play(policy, episodes=1))


def test_setup_script_never_runs_untrusted(tmp_path: Path):
    marker = tmp_path / "setup-ran"
    archive = submission_zip(setup_script=f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(PolicyError, match=r"ships a setup script \(setup_policy.py\)"):
        load_policy("file:///sub.zip", archive)
    assert not marker.exists()


def test_zip_bomb_is_refused_before_extraction(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("sim.policies.MAX_ARCHIVE_BYTES", 1_000_000)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("policy_spec.json", json.dumps({"class_path": "x.Y"}))
        archive.writestr("zeros.bin", b"\0" * 5_000_000)
    assert len(buffer.getvalue()) < 20_000
    with pytest.raises(PolicyError, match="expands to 5,000,0.. bytes .* refusing a possible zip bomb"):
        load_policy("file:///bomb.zip", buffer.getvalue())
