"""Bad input, case by case, through the real CLI: a one-line message on stderr naming problem and fix, JSON on
stdout (the error JSON, or for a failing checkpoint the report with that checkpoint's `error`), the
documented exit code, no Python traceback on stderr, nothing half-written.

docs/errors.md is generated from CASES: `python -m tests.test_errors` rewrites it; a test checks it is current.
"""

from __future__ import annotations

import io
import json
import pickle
import socket
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from evaluator.cli.app import app
from tests.conftest import state_dict_bytes, submission_zip, tiny_model
from tests.support.fake_wandb import DROP
from tests.support.s3 import deny_after

DOC = Path(__file__).parents[1] / "docs" / "errors.md"


@dataclass(frozen=True)
class Ctx:
    tmp: Path
    fixtures: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    name: str
    exit_code: int
    message: str
    """Text the stderr line and the JSON's error must contain (as documented in docs/errors.md)."""
    prepare: Callable[[Ctx], list[str]]
    """Returns the `run` arguments; may write files under ctx.tmp."""
    env: dict[str, str] = field(default_factory=dict)
    fixtures: tuple[str, ...] = ()
    check: Callable[[Ctx], None] | None = None
    others_complete: bool = False
    """Exit 1 for one checkpoint: the report must hold another checkpoint with its metrics."""
    command: str = "run"
    """The command; `prepare` returns all its arguments when it is not `run`."""


def _write(ctx: Ctx, name: str, data: bytes | str) -> str:
    path = ctx.tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def _suite(ctx: Ctx, body: str, maps: dict[str, str] | None = None) -> list[str]:
    for name, text in (maps or {}).items():
        _write(ctx, name, text)
    return ["-p", "builtin://navigator", "--suite", _write(ctx, "suite.yaml", body)]


def _full_module(ctx: Ctx) -> list[str]:
    buffer = io.BytesIO()
    torch.save(tiny_model(0)[0], buffer)
    return ["-p", _write(ctx, "full.pt", buffer.getvalue())]


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _malicious(ctx: Ctx) -> list[str]:
    buffer = io.BytesIO()
    torch.save({"format_version": 1, "payload": _Evil(ctx.tmp / "pwned")}, buffer)
    _write(ctx, "evil/a_torch.pt", buffer.getvalue())
    _write(ctx, "evil/b_raw.pt", pickle.dumps(_Evil(ctx.tmp / "pwned")))
    return ["-p", str(ctx.tmp / "evil"), "--checkpoints", "all"]


def _zip(members: dict[str, bytes | str], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _zip_bomb(ctx: Ctx) -> list[str]:
    # 2.2 GB of zeros deflate to ~2 MB; declared sizes are what the check reads, so build it from a small
    # real archive whose central directory claims the large size.
    data = bytearray(_zip({"policy_spec.json": '{"class_path": "x.Y"}', "zeros.bin": b"\0" * 1000}))
    central = data.rfind(b"PK\x01\x02")
    name_at = data.find(b"zeros.bin", central)
    data[name_at - 46 + 24 : name_at - 46 + 28] = (2_200_000_000).to_bytes(4, "little")  # uncompressed size
    return ["-p", _write(ctx, "bomb.zip", bytes(data))]


def _module_beside_spec(ctx: Ctx) -> list[str]:
    _write(ctx, "evil/policy_spec.json", '{"class_path": "evilmod.Policy"}')
    _write(ctx, "evil/evilmod.py", "from sim.models import TokenGridMLP as Policy\n")
    return ["-p", str(ctx.tmp / "evil")]


def _bundle_with_data_path(ctx: Ctx, data_path: str) -> list[str]:
    spec = {"class_path": "sim.models.TokenGridMLP", "data_path": data_path}
    return ["-p", _write(ctx, "outside/policy_spec.json", json.dumps(spec)).removesuffix("/policy_spec.json")]


class _WrongShape(torch.nn.Module):
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.zeros(tokens.shape[0], 3)


def _torchscript_shape(ctx: Ctx) -> list[str]:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(_WrongShape()), buffer)
    return ["-p", _write(ctx, "wrong.ts", buffer.getvalue())]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wandb_artifact(ctx: Ctx) -> None:
    fake = ctx.fixtures["fake_wandb"]
    model, kwargs = tiny_model(0)
    fake.add_artifact_version("metta-ai", "metta-research", "nav", files={"model.pt": state_dict_bytes(model, kwargs)})


def _wandb_download_fails(status: int) -> Callable[[Ctx], list[str]]:
    """Two versions of wandb://run/nav; the first one's file fails to download (`status`, or DROP)."""

    def prepare(ctx: Ctx) -> list[str]:
        fake = ctx.fixtures["fake_wandb"]
        versions = []
        for seed in (0, 1):
            model, kwargs = tiny_model(seed)
            files = {"model.pt": state_dict_bytes(model, kwargs)}
            versions.append(fake.add_artifact_version("metta-ai", "metta-research", "nav", files=files))
        fake.fail_file(versions[0], "model.pt", status)
        return ["-p", "wandb://run/nav", "--checkpoints", "all", *SMOKE]

    return prepare


def _wandb_down(ctx: Ctx) -> list[str]:
    _wandb_artifact(ctx)
    ctx.fixtures["fake_wandb"].down = True
    return ["-p", "wandb://run/nav", *SMOKE]


def _empty_dir(ctx: Ctx) -> str:
    (ctx.tmp / "void").mkdir()
    return str(ctx.tmp / "void")


def _not_written(name: str) -> Callable[[Ctx], None]:
    def check(ctx: Ctx) -> None:
        assert not list(ctx.tmp.parent.rglob(name)), f"{name} was written"

    return check


def _recorded_run(ctx: Ctx) -> list[str]:
    """--data-dir of a results database holding one run (`results` asks the database only when it has one)."""
    from evaluator.config import EvalConfig, results_db_url
    from evaluator.reduce.report import Timing
    from evaluator.store.runs import RunLog

    url = results_db_url(EvalConfig.model_construct(data_dir=ctx.tmp / "data", results_db=None).storage)
    timing = Timing(wall_s=1, ray_init_s=0, evaluation_s=1, agent_steps=1, agent_steps_per_s=1, episodes=1,
                    policy_loads=1, workers=1)  # fmt: skip
    RunLog(url, "recorded", "smoke", {"suite": "smoke"}).finish([], timing, failed=False)
    return ["--data-dir", str(ctx.tmp / "data")]


MAP = "#####\n#@.n#\n#####\n"
PRICES = "as_of: 2025-05-01\nsource: my own figures\nprices: {}\n"
SMOKE = ["--suite", "smoke"]
CASES = [
    Case("unknown URI scheme", 2, "unknown policy URI scheme 'ftp'", lambda c: ["-p", "ftp://host/x.pt", *SMOKE]),
    Case("malformed wandb URI", 2, "malformed W&B URI", lambda c: ["-p", "wandb://only-entity", *SMOKE]),
    Case("missing file", 2, "does not exist; pass an existing checkpoint", lambda c: ["-p", "/no/such.pt", *SMOKE]),
    Case("empty directory", 2, "is empty; expected files ending in", lambda c: ["-p", _empty_dir(c), *SMOKE]),
    Case(
        "directory with no checkpoint files",
        2,
        "holds no checkpoint files",
        lambda c: ["-p", str(Path(_write(c, "notes/readme.txt", "x")).parent), *SMOKE],
    ),
    Case(
        "unknown suite",
        2,
        "unknown suite 'navigaton' (did you mean 'navigation'?)",
        lambda c: ["-p", "builtin://navigator", "--suite", "navigaton"],
    ),
    Case("suite file syntax error", 2, "is not valid YAML", lambda c: _suite(c, "envs: [ {name: a")),
    Case(
        "suite file unknown field",
        2,
        "envs.0.colour: Extra inputs are not permitted",
        lambda c: _suite(c, "envs:\n  - {name: a, map_file: m.map, max_steps: 5, colour: red}", {"m.map": MAP}),
    ),
    Case(
        "suite file missing map",
        2,
        "m.map does not exist",
        lambda c: _suite(c, "envs:\n  - {name: a, map_file: m.map, max_steps: 5}"),
    ),
    Case(
        "map with no agent",
        2,
        "ASCII map has no agent ('@')",
        lambda c: _suite(c, "envs:\n  - {name: a, map_file: m.map, max_steps: 5}", {"m.map": "####\n#.n#\n####\n"}),
    ),
    Case(
        "episodes 0",
        2,
        "Invalid value for '--episodes' (env var: 'EPISODES'): Input should be greater than or equal to 1",
        lambda c: ["-p", "builtin://random", *SMOKE, "--episodes", "0"],
    ),
    Case(
        "episodes negative",
        2,
        "Invalid value for '--episodes'",
        lambda c: ["-p", "builtin://random", *SMOKE, "--episodes", "-3"],
    ),
    Case(
        "unknown device",
        2,
        "Invalid value for '--device'",
        lambda c: ["-p", "builtin://random", *SMOKE, "--device", "gpu"],
    ),
    Case(
        "cuda with no GPU",
        2,
        "--device cuda but the Ray cluster has no GPU",
        lambda c: ["-p", "builtin://random", *SMOKE, "--device", "cuda"],
    ),
    Case(
        "unreachable RAY_ADDRESS",
        3,
        "cannot reach the Ray cluster at 127.0.0.1:",
        lambda c: ["-p", "builtin://random", *SMOKE, "--ray-address", f"127.0.0.1:{_free_port()}"],
    ),
    Case(
        "unreachable results database (its password in the query string: masked)",
        3,
        "?user=evaluator&password=*** unavailable while migrating",
        lambda c: ["-p", "builtin://random", *SMOKE],
        env={"RESULTS_DB_URL": f"postgresql://127.0.0.1:{_free_port()}/results?user=evaluator&password=hunter2-S3cret"},
    ),
    Case(
        "unwritable DATA_DIR",
        2,
        "is not writable",
        lambda c: ["-p", "builtin://random", *SMOKE, "--data-dir", _write(c, "a_file", "x") + "/data"],
    ),
    Case(
        "bad OUTPUT_URI scheme",
        2,
        "OUTPUT_URI scheme ftp:// is not supported",
        lambda c: ["-p", "builtin://random", *SMOKE, "--output-uri", "ftp://x/y"],
    ),
    Case(
        "env var with an invalid number",
        2,
        "Invalid value for '--episodes' (env var: 'EPISODES')",
        lambda c: ["-p", "builtin://random", *SMOKE],
        env={"EPISODES": "ten"},
    ),
    Case(
        "bad checkpoint selector",
        2,
        "--checkpoints 'newest' is not one of",
        lambda c: ["-p", "builtin://random", *SMOKE, "--checkpoints", "newest"],
    ),
    Case(
        "a run name that would leave DATA_DIR",
        2,
        "run_name '..' may hold only letters, digits",
        lambda c: ["-p", "builtin://random", *SMOKE, "--run-name", ".."],
    ),
    Case(
        "negative price in the price table",
        2,
        "prices.local: Input should be greater than or equal to 0",
        lambda c: ["-p", "builtin://random", *SMOKE, "--prices", _write(c, "p.yaml", PRICES.format("{local: -1}"))],
    ),
    Case(
        "node type missing from the price table",
        2,
        "no price for node type 'local' in the price table",
        lambda c: ["-p", "builtin://random", *SMOKE, "--prices", _write(c, "p.yaml", PRICES.format("{g5.xlarge: 1}"))],
    ),
    Case(
        "unknown builtin policy",
        2,
        "unknown builtin policy 'builtin://navigatr'",
        lambda c: ["-p", "builtin://navigatr", *SMOKE],
    ),
    Case(
        "pickled full-module .pt",
        1,
        "is a pickled Python object, refused (it could run code)",
        lambda c: [*_full_module(c), *SMOKE],
    ),
    Case(
        "malicious pickle",
        1,
        "pickles are never loaded",
        lambda c: [*_malicious(c), *SMOKE],
        check=_not_written("pwned"),
    ),
    Case(
        "zip-slip submission archive",
        1,
        "invalid policy bundle: Submission archive contains path traversal",
        lambda c: [
            "-p",
            _write(c, "slip.zip", _zip({"policy_spec.json": '{"class_path": "x.Y"}', "../../escaped.txt": "x"})),
            *SMOKE,
        ],
        check=_not_written("escaped.txt"),
    ),
    Case("zip bomb", 1, "refusing a possible zip bomb", lambda c: [*_zip_bomb(c), *SMOKE]),
    Case(
        "archive shipping code, untrusted",
        1,
        "runs only with --trust-remote-code",
        lambda c: ["-p", _write(c, "code.zip", submission_zip()), *SMOKE],
    ),
    Case(
        "bundle directory shipping a module beside its spec, untrusted",
        1,
        "ships code (evilmod.py); bundled code runs only with --trust-remote-code",
        lambda c: [*_module_beside_spec(c), *SMOKE],
    ),
    Case(
        "bundle whose data_path leaves the bundle",
        1,
        "data_path '../../etc/passwd' points outside the bundle",
        lambda c: [*_bundle_with_data_path(c, "../../etc/passwd"), *SMOKE],
    ),
    Case(
        "TorchScript with the wrong output shape",
        1,
        "returned logits of shape (1, 3), expected (1, 5)",
        lambda c: [*_torchscript_shape(c), *SMOKE],
    ),
    Case(
        "a version in the URI and another selection",
        2,
        "wandb://run/nav:latest names version latest, which --checkpoints all would override",
        lambda c: ["-p", "wandb://run/nav:latest", "--checkpoints", "all", *SMOKE],
    ),
    Case(
        "wandb missing key",
        2,
        "needs W&B credentials: set WANDB_API_KEY",
        lambda c: ["-p", "wandb://run/nav", *SMOKE],
        env={"WANDB_API_KEY": ""},
    ),
    Case(
        "wandb bad key",
        2,
        "W&B rejected the API key while accessing wandb://run/nav (HTTP 401); check WANDB_API_KEY",
        lambda c: (_wandb_artifact(c), ["-p", "wandb://run/nav", *SMOKE])[1],
        env={"WANDB_API_KEY": "wrong" + "0" * 35},
        fixtures=("fake_wandb",),
    ),
    Case(
        "wandb missing artifact",
        2,
        "W&B request for wandb://run/ghost failed: artifact membership 'ghost:latest' not found",
        lambda c: (_wandb_artifact(c), ["-p", "wandb://run/ghost", *SMOKE])[1],
        fixtures=("fake_wandb",),
    ),
    Case(
        "W&B down: nothing listens at WANDB_BASE_URL",
        3,
        "while accessing wandb://run/nav: connection refused (nothing listens there); check WANDB_BASE_URL",
        lambda c: ["-p", "wandb://run/nav", *SMOKE],
        env={"WANDB_BASE_URL": f"http://127.0.0.1:{_free_port()}"},
        fixtures=("fake_wandb",),
    ),
    Case(
        "W&B failing (HTTP 503)",
        3,
        "is failing (HTTP 503) while accessing wandb://run/nav; retry later",
        _wandb_down,
        fixtures=("fake_wandb",),
    ),
    Case(
        "W&B file gone (one checkpoint)",
        1,
        "W&B storage has no file for wandb://metta-ai/metta-research/nav:v0 (HTTP 404)",
        _wandb_download_fails(404),
        fixtures=("fake_wandb",),
        others_complete=True,
    ),
    Case(
        "W&B download cut off (one checkpoint)",
        1,
        "the connection to W&B failed while accessing wandb://metta-ai/metta-research/nav:v0",
        _wandb_download_fails(DROP),
        fixtures=("fake_wandb",),
        others_complete=True,
    ),
    Case(
        "S3 missing bucket",
        2,
        "S3 bucket of s3://nobucket/run/ does not exist",
        lambda c: ["-p", "s3://nobucket/run/", *SMOKE],
        fixtures=("s3",),
    ),
    Case(
        "S3 missing key",
        2,
        "S3 object s3://policies/run/nope.pt does not exist",
        lambda c: ["-p", "s3://policies/run/nope.pt", *SMOKE],
        fixtures=("s3",),
    ),
    Case(
        "S3 denied",
        2,
        "denied (InvalidAccessKeyId); check the AWS credentials",
        lambda c: ["-p", "s3://policies/run/", *SMOKE],
        fixtures=("s3", "s3_denied"),
    ),
    Case(
        "S3 object denied after listing (each checkpoint)",
        1,
        "access to s3://policies/run/ckpt_10.pt denied (403)",
        lambda c: ["-p", "s3://policies/run/", *SMOKE],
        fixtures=("s3", "s3_denied_after_listing"),
    ),
    Case(
        "S3 endpoint down",
        3,
        "cannot reach the S3 endpoint for s3://policies/run/ (http://127.0.0.1:9); check AWS_ENDPOINT_URL",
        lambda c: ["-p", "s3://policies/run/", *SMOKE],
        env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "x" * 20},
    ),
    Case(
        "run --seed beyond 64 bits",
        2,
        "Invalid value for '--seed': Input should be less than or equal to 9223372036854775807",
        lambda c: ["-p", "builtin://random", *SMOKE, "--seed", "99999999999999999999"],
    ),
    Case(
        "run --unit-timeout inf",
        2,
        "Invalid value for '--unit-timeout' (env var: 'UNIT_TIMEOUT'): Input should be less than or equal to 604800",
        lambda c: ["-p", "builtin://random", *SMOKE, "--unit-timeout", "inf"],
    ),
    Case(
        "run --cpus-per-worker inf",
        2,
        "Invalid value for '--cpus-per-worker': Input should be less than or equal to 1024",
        lambda c: ["-p", "builtin://random", *SMOKE, "--cpus-per-worker", "inf"],
    ),
    Case(
        "run --shard-size beyond the episodes",
        2,
        "Invalid value for '--shard-size': Input should be less than or equal to 100000",
        lambda c: ["-p", "builtin://random", *SMOKE, "--shard-size", "99999999999999999999"],
    ),
    Case(
        "results --limit beyond 64 bits",
        2,
        "Invalid value for '--limit': Input should be less than or equal to 100000",
        lambda c: ["--limit", "99999999999999999999", *_recorded_run(c)],
        command="results",
    ),
    Case(
        "sweep --lease-ttl inf",
        2,
        "Invalid value for '--lease-ttl' (env var: 'SWEEP_LEASE_TTL'): Input should be",
        lambda c: ["-p", "builtin://random", *SMOKE, "--data-dir", str(c.tmp / "data"), "--lease-ttl", "inf"],
        command="sweep",
    ),
]
RUN_CASES = [case for case in CASES if case.command == "run"]
OTHER_CASES = [case for case in CASES if case.command != "run"]


@pytest.fixture
def s3_denied(s3):
    with deny_after(0):
        yield


@pytest.fixture
def s3_denied_after_listing(s3):
    with deny_after(1):  # the listing passes; every download is refused
        yield


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("case", RUN_CASES, ids=[c.name for c in RUN_CASES])
def test_bad_input(case: Case, tmp_path: Path, request: pytest.FixtureRequest):
    ctx = Ctx(tmp_path / "work", {name: request.getfixturevalue(name) for name in case.fixtures})
    ctx.tmp.mkdir()
    data_dir = tmp_path / "data"
    episodes = [] if "EPISODES" in case.env else ["--episodes", "1"]  # a later --episodes in the case wins
    args = ["run", "--no-progress", *episodes, "--data-dir", str(data_dir), *case.prepare(ctx)]
    result = CliRunner().invoke(app, args, env=case.env)
    stderr_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.exit_code == case.exit_code, result.stderr
    assert len(stderr_lines) == 1 and case.message in stderr_lines[0], result.stderr
    assert "Traceback" not in result.stderr
    document = json.loads(result.stdout)
    errors = [document.get("error")] + [c["error"] for p in document.get("policies", []) for c in p["checkpoints"]]
    assert any(e and case.message in e for e in errors), document
    assert not [p for p in tmp_path.rglob("*.tmp")], "a temporary file was left behind"
    if case.exit_code in (2, 3):
        assert document["retryable"] is (case.exit_code == 3), document
        stores = ("cache", "results.db", "results.db-wal", "results.db-shm")  # the stores, not a run's outputs
        assert not (data_dir.exists() and [p for p in data_dir.iterdir() if p.name not in stores]), (
            "a run that should not have started wrote one"
        )
    if case.others_complete:
        checkpoints = [c for p in document["policies"] for c in p["checkpoints"]]
        assert any(c["error"] is None and c["metrics"] for c in checkpoints), "the other checkpoints must complete"
    if case.check:
        case.check(ctx)


@pytest.mark.parametrize("case", OTHER_CASES, ids=[c.name for c in OTHER_CASES])
def test_bad_usage_of_other_commands(case: Case, tmp_path: Path):
    """The cases of `results`, `sweep`, ...: bad usage, caught before anything ran."""
    ctx = Ctx(tmp_path / "work")
    ctx.tmp.mkdir()
    result = CliRunner().invoke(app, [case.command, *case.prepare(ctx)], env=case.env)
    stderr_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.exit_code == case.exit_code, result.stderr or result.stdout
    assert len(stderr_lines) == 1 and case.message in stderr_lines[0], result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    document = json.loads(result.stdout)
    assert case.message in document["error"] and document["traceback"] is None, document
    assert document["retryable"] is (case.exit_code == 3), document


NUMBERS = {int: ["99999999999999999999", "-99999999999999999999"], float: ["nan", "inf", "-inf", "1e999", "-1e308"]}
"""What no int or float option takes: beyond 64 bits, not a finite number."""
REQUIRED = {"run": ["-p", "builtin://random"], "sweep": ["-p", "builtin://random"]}


def test_every_number_option_of_every_command_is_bounded():
    """Every int and float option of every command has a minimum and a maximum (typer checks them while parsing):
    a huge, negative, infinite or nan value is one usage line naming the option and the usage exit code (2;
    `entrypoint` 1), never a traceback from wherever the number would have overflowed."""
    import typer.main

    commands = typer.main.get_command(app).commands
    checked = []
    for name, command in commands.items():
        for param in command.params:
            kind = param.type_descriptor.annotation
            if kind not in NUMBERS or not param.opts[0].startswith("--"):
                continue
            assert param.min is not None and param.max is not None, f"{name} {param.opts[0]} is unbounded"
            usage_exit = getattr(command.callback, "usage_exit", 2)  # `entrypoint`: 1, the seed's contract
            for value in NUMBERS[kind]:
                result = CliRunner().invoke(app, [name, *REQUIRED.get(name, []), param.opts[0], value], env={})
                lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
                assert result.exit_code == usage_exit, (name, param.opts[0], value, result.stderr, result.stdout)
                assert len(lines) == 1 and f"Invalid value for '{param.opts[0]}'" in lines[0], (name, value, lines)
                assert "Traceback" not in result.stderr + result.stdout, (name, param.opts[0], value)
            checked.append(f"{name} {param.opts[0]}")
    assert {"results --limit", "run --unit-timeout", "sweep --lease-ttl", "serve --port", "view --port"} <= set(
        checked
    ), checked


def test_the_message_rules_written_once():
    """sim.errors' helpers: every "did you mean", one-line pydantic error and first line goes through them."""
    from pydantic import BaseModel, ValidationError

    from sim.errors import did_you_mean, first_line, validation_line

    assert did_you_mean("navigaton", ["navigation", "smoke"]) == " (did you mean 'navigation'?)"
    assert did_you_mean("wandbb", ["file", "wandb"], lambda s: f"{s}://") == " (did you mean wandb://?)"
    assert did_you_mean("zzz", ["navigation"]) == ""

    class Env(BaseModel):
        name: str
        max_steps: int

    with pytest.raises(ValidationError) as info:
        Env.model_validate({"max_steps": "x"})
    assert validation_line(info.value) == "name: Field required"
    assert validation_line(info.value, located=False) == "Field required"
    assert validation_line(info.value, every=True) == (
        "name: Field required; max_steps: Input should be a valid integer, unable to parse string as an integer"
    )
    assert first_line(RuntimeError("first\nsecond")) == "first" and first_line(KeyError()) == "KeyError"
    assert len(first_line(ValueError("x" * 1000))) == 300


def render_doc() -> str:
    rows = "\n".join(f"| {c.name} | {c.exit_code} | `{c.message}` |" for c in CASES)
    return (
        "# Errors\n\n"
        "Every case below is a test in `tests/test_errors.py` (this file is generated from it:\n"
        "`python -m tests.test_errors`). Each prints one line `error: ...` on stderr that names the problem and\n"
        "the fix, JSON on stdout, and exits with the code shown; no Python traceback reaches stderr (it is in the\n"
        "JSON's `traceback` when there is one) and nothing is left half-written.\n\n"
        "- exit **3**: a service the run needs (W&B, S3, Ray) could not be reached or kept failing after the\n"
        "  clients' own retries; the input is fine and the same command may succeed later. stdout holds the error\n"
        '  JSON with `"retryable": true`; nothing ran. `policy-evaluator entrypoint` exits 3 too; the RayJob and\n'
        "  the nightly RayCronJob retry once (`backoffLimit: 1`), and the webhook service resubmits such a job once.\n"
        "- exit **2**: bad usage; stdout holds the error JSON `{error, traceback, policy_uri, retryable}`\n"
        "  (`retryable` false) and nothing ran.\n"
        "- exit **1**: a checkpoint failed; stdout holds the report, with that checkpoint's `error` and every\n"
        "  other checkpoint's full results. A checkpoint that cannot be downloaded (its object gone or denied, its\n"
        "  W&B file gone, the connection cut off mid-download, after the clients' own retries) fails alone the\n"
        "  same way. (`policy-evaluator entrypoint` exits 1 for bad usage too: the seed's contract.)\n\n"
        f"{len(CASES)} cases:\n\n| case | exit | message contains |\n|---|---|---|\n{rows}\n"
    )


def test_docs_errors_md_is_current():
    assert DOC.read_text() == render_doc(), "docs/errors.md is stale: run `python -m tests.test_errors`"


if __name__ == "__main__":
    DOC.write_text(render_doc())
    sys.stdout.write(f"wrote {DOC} ({len(CASES)} cases)\n")
