"""Build the image (`make image`) or the stand-in Ray base (`make image-base`), with Docker or with buildah.

    python3 image/build.py image [--target production] [--variant cpu] [--tag TAG]
    python3 image/build.py base                 # the stand-in for rayproject/ray:<ray>-py311-cpu (image/README.md)

Engine: `docker build` where a Docker daemon answers, else `buildah build --isolation chroot` (Debian's buildah
1.28: rootless-free, no daemon). Standard library only: it runs before any virtual environment exists.

Build arguments (environment variables of the same names override them):
- VARIANT is always passed: buildah 1.28 ignores the Dockerfile's default in `FROM base-${VARIANT}` (#4312).
- PIP_INDEX_URL: the index of every pip install but torch's; default this machine's pip `index-url`, if any.
- TORCH_INDEX_URL: where torch comes from; default PyTorch's index of the variant (the Dockerfile's). When that
  index cannot be reached and this machine's pip `find-links` holds the CPU wheel of the pinned torch, the CPU
  build takes it from there (through this machine's index) instead of waiting on a host it cannot reach.

With buildah, the build's RUN steps see this machine's pip configuration (its CA bundle, `find-links` and
file:// indexes, constraints), mounted read-only: none of it ends up in the image. The GPU variant is never
given `find-links`, so a CPU torch wheel there cannot slip into a CUDA image.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "image"
CONTAINERS_CONF = ROOT / "image" / "containers.conf"
BASE_CONTAINERFILE = ROOT / "image" / "ray-base.Containerfile"
DEBIAN_PACKAGES = "python3.11,python3.11-venv,sudo,passwd,ca-certificates,procps"
"""The stand-in base's Debian packages: Python 3.11 (the py311 tag), the `ray` user's sudo, ps for Ray."""
PIP_KEYS = ("index-url", "extra-index-url", "find-links", "cert", "client-cert", "constraint", "trusted-host")


def dockerfile_arg(name: str) -> str:
    """A global ARG default of the Dockerfile (before its first FROM)."""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            break
        match = re.fullmatch(rf"ARG {name}=(\S*)", line.strip())
        if match:
            return match.group(1)
    raise SystemExit(f"Dockerfile: no global ARG {name}=")


def package_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def default_tag(target: str, variant: str) -> str:
    """<package version>-ray<RAY_VERSION>-<VARIANT>, as the Dockerfile's header, docker-compose.yml and cluster/."""
    tag = f"policy-evaluator:{package_version()}-ray{dockerfile_arg('RAY_VERSION')}-{variant}"
    return tag if target == "production" else f"{tag}-dev"


def base_image(variant: str) -> str:
    platform = "cpu" if variant == "cpu" else dockerfile_arg("CUDA_TAG")
    return f"rayproject/ray:{dockerfile_arg('RAY_VERSION')}-{dockerfile_arg('PYTHON_TAG')}-{platform}"


def log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def run(command: list[str]) -> None:
    log("$ " + shlex.join(command))
    subprocess.run(command, check=True, env=engine_env())


def engine_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}


def docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def engine() -> str:
    chosen = os.environ.get("IMAGE_ENGINE", "auto")
    if chosen == "auto":
        chosen = "docker" if docker_answers() else "buildah"
    if not shutil.which(chosen):
        raise SystemExit(f"{chosen} not found: `make image-tools` installs buildah and podman (Debian)")
    return chosen


# -- this machine's pip configuration, for the build's RUN steps ---------------------------------------------


def pip_config() -> dict[str, list[str]]:
    """This machine's effective pip settings (files and PIP_* variables), key -> values."""
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found: dict[str, tuple[int, list[str]]] = {}
    rank = {"global": 0, "download": 1, "wheel": 1, "install": 1, ":env:": 2}
    for line in listed.splitlines():
        match = re.fullmatch(r"([^.]+)\.([\w-]+)='(.*)'", line.strip())
        if not match or match.group(2) not in PIP_KEYS or match.group(1) not in rank:
            continue
        level = rank[match.group(1)]
        if match.group(2) not in found or found[match.group(2)][0] <= level:
            found[match.group(2)] = (level, match.group(3).split())
    return {key: values for key, (_, values) in found.items()}


def local_path(value: str) -> Path | None:
    path = Path(value.removeprefix("file://")) if value.startswith(("file://", "/")) else None
    return path if path is not None and path.exists() else None


def mounted_path(path: Path) -> Path:
    """What to mount for a local path: a file index's whole folder (`.../simple` pages link to `../files`)."""
    return path.parent if path.name == "simple" else path


def pip_mounts(config: dict[str, list[str]], variant: str) -> tuple[list[str], Path]:
    """buildah `-v` specs: every local path the configuration names, and the configuration itself at
    /etc/pip.conf (pip's global file). Local paths keep their names, so the file is valid inside as outside."""
    kept = {key: values for key, values in config.items() if key != "find-links" or variant == "cpu"}
    kept = {
        key: [v for v in values if not v.startswith(("file:", "/")) or local_path(v)] for key, values in kept.items()
    }
    paths = sorted({str(mounted_path(local_path(v))) for values in kept.values() for v in values if local_path(v)})
    WORK.mkdir(parents=True, exist_ok=True)
    conf = WORK / f"pip-{variant}.conf"
    lines = ["# this machine's pip settings, mounted at /etc/pip.conf during the build (image/build.py)", "[global]"]
    lines += [f"{key} = {' '.join(values)}" for key, values in kept.items() if values and key != "index-url"]
    conf.write_text("\n".join(lines) + "\n")
    return [f"{path}:{path}:ro" for path in paths] + [f"{conf}:/etc/pip.conf:ro"], conf


def reachable(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5).close()
        return True
    except OSError:
        return False


def torch_index(config: dict[str, list[str]], variant: str) -> str | None:
    """TORCH_INDEX_URL to pass, or None for the Dockerfile's default (PyTorch's index of the variant)."""
    if os.environ.get("TORCH_INDEX_URL"):
        return os.environ["TORCH_INDEX_URL"]
    default = "https://download.pytorch.org/whl/" + ("cpu" if variant == "cpu" else dockerfile_arg("CUDA_TAG"))
    if variant != "cpu" or reachable(default + "/"):
        return None
    version = dockerfile_arg("TORCH_VERSION")
    wheels = [
        wheel
        for link in config.get("find-links", [])
        if (folder := local_path(link)) and folder.is_dir()
        for wheel in folder.glob(f"torch-{version}+cpu-*.whl")
    ]
    if not wheels:
        raise SystemExit(
            f"{default} cannot be reached and no pip find-links folder holds torch-{version}+cpu: "
            "pass TORCH_INDEX_URL=<a mirror of it> (without it pip would take PyPI's multi-GB CUDA build)"
        )
    index = (config.get("index-url") or ["https://pypi.org/simple"])[0]
    log(f"{default} cannot be reached: torch {version} CPU from {wheels[0].parent} (find-links), index {index}")
    return index


def build_args(config: dict[str, list[str]], variant: str) -> list[str]:
    args = {"VARIANT": variant}
    pip_index = os.environ.get("PIP_INDEX_URL") or (config.get("index-url") or [None])[0]
    if pip_index:
        args["PIP_INDEX_URL"] = pip_index
    torch = torch_index(config, variant)
    if torch:
        args["TORCH_INDEX_URL"] = torch
    return [part for key, value in args.items() for part in ("--build-arg", f"{key}={value}")]


def has_image(tool: str, name: str) -> bool:
    command = [tool, "image", "inspect", name] if tool == "docker" else ["buildah", "inspect", "--type", "image", name]
    return subprocess.run(command, capture_output=True, env=engine_env()).returncode == 0


# -- the commands ---------------------------------------------------------------------------------------------


def build_image(target: str, variant: str, tag: str) -> None:
    tool = engine()
    base = base_image(variant)
    config = pip_config() if tool == "buildah" else {}
    args = build_args(config, variant)
    common = ["--file", str(ROOT / "Dockerfile"), "--target", target, "--tag", tag, *args]
    if tool == "docker":
        run(["docker", "build", *common, str(ROOT)])
    else:
        if not has_image("buildah", base):
            raise SystemExit(f"{base} is not in local storage: pull it, or `make image-base` builds a stand-in")
        mounts, _ = pip_mounts(config, variant)
        volumes = [part for mount in mounts for part in ("--volume", mount)]
        run(["buildah", "build", "--isolation", "chroot", "--layers", "--pull=never", *common, *volumes, str(ROOT)])


def build_base() -> None:
    """The stand-in for rayproject/ray:<ray>-py311-cpu: Debian bookworm's Python 3.11 from mmdebstrap, then
    image/ray-base.Containerfile (the `ray` user, its venv at /home/ray/anaconda3 with ray[default])."""
    tool = engine()
    base = base_image("cpu")
    if has_image(tool, base) and not os.environ.get("IMAGE_BASE_REBUILD"):
        log(f"{base} is already in local storage (IMAGE_BASE_REBUILD=1 rebuilds the stand-in)")
        return
    if tool == "docker":
        run(["docker", "pull", base])
        return
    context = WORK / "base"
    context.mkdir(parents=True, exist_ok=True)
    rootfs = context / "rootfs.tar"
    if not rootfs.exists():
        mirror = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
        partial = context / "rootfs.tar.partial"
        run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--format=tar",
                f"--include={DEBIAN_PACKAGES}",
                *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "info", "locale")),
                "bookworm",
                str(partial),
                mirror,
            ]
        )
        partial.rename(rootfs)
    config = pip_config()
    mounts, _ = pip_mounts(config, "cpu")
    volumes = [part for mount in mounts for part in ("--volume", mount)]
    pip_index = os.environ.get("PIP_INDEX_URL") or (config.get("index-url") or [None])[0]
    args = ["--build-arg", f"RAY_VERSION={dockerfile_arg('RAY_VERSION')}"]
    args += ["--build-arg", f"PIP_INDEX_URL={pip_index}"] if pip_index else []
    run(
        ["buildah", "build", "--isolation", "chroot", "--layers", "--file", str(BASE_CONTAINERFILE), "--tag", base]
        + args
        + volumes
        + [str(context)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    image = commands.add_parser("image", help="build a Dockerfile target")
    image.add_argument("--target", default="production", choices=["production", "development"])
    image.add_argument("--variant", default=os.environ.get("VARIANT") or dockerfile_arg("VARIANT"))
    image.add_argument("--tag", help="default: the tag scheme of the Dockerfile's header")
    commands.add_parser("base", help="build the stand-in Ray base image (no registry needed)")
    options = parser.parse_args()
    started = time.monotonic()
    if options.command == "base":
        build_base()
    else:
        build_image(options.target, options.variant, options.tag or default_tag(options.target, options.variant))
    log(f"{options.command}: {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
