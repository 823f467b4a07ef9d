"""What a pip install added to the image's Python, staged for one COPY into the final image (used by the
Dockerfile's build stages; standard library only).

    python stage.py before               # remember every file and folder of the environment (sys.prefix)
    pip install ...
    python stage.py strip                # strip the symbol tables of the shared libraries pip added
    ...                                  # use them (the Dockerfile runs the evaluator once)
    python stage.py collect /tmp/stage   # copy what is new or changed to /tmp/stage/<path under sys.prefix>

Left out of the stage, nothing of it used at run time:
- test suites: every `tests` folder, and torch's `test` folder and the C++ test programs and protoc in
  torch/bin;
- C and C++ headers (`include` folders: torch, pyarrow, numpy), only used to compile extensions.
`strip --strip-unneeded` (binutils, in the build stages only) drops the symbol tables of the new shared
libraries; their dynamic symbols stay, so loading and linking are unchanged. A library that strip would break
(auditwheel's patchelf leaves layouts that binutils rewrites with misaligned segments, which the loader then
refuses) is detected from its program headers and kept as it was. Licence files (`*.dist-info/licenses`) are
kept whole. Bytecode is whatever the build left: the Dockerfile installs with --no-compile and then runs the
evaluator once, so the modules it imports are compiled and the rest compile on first use.

A path of the environment that disappeared means pip replaced a package the base image installed (torch
needs a newer setuptools than some bases have). A COPY cannot delete it, so it is listed in the stage's
REMOVED file and the stage that copies the stage deletes those paths (`xargs rm` in the Dockerfile): never two
versions of one package side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

SNAPSHOT = Path("/tmp/stage-before.json")
REMOVED = ".stage-removed"
"""In the stage, one path a line: what pip removed from the base; the consuming stage deletes it."""
PREFIX = Path(sys.prefix)
TORCH_BIN_KEPT = {"torch_shm_manager"}
"""torch/bin holds C++ test programs and protoc; torch_shm_manager serves torch's shared-memory tensors."""
PT_LOAD = 1


def entries() -> dict[str, list[int]]:
    """path -> [size, mtime] for files and links, [-1, 0] for folders."""
    found = {}
    for path in PREFIX.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            found[str(path)] = [-1, 0]
        else:
            stat = path.lstat()
            found[str(path)] = [stat.st_size, stat.st_mtime_ns]
    return found


def added() -> list[Path]:
    """Files and links that are new or changed since `before`."""
    before = json.loads(SNAPSHOT.read_text())
    return [Path(name) for name, stat in sorted(entries().items()) if stat[0] >= 0 and before.get(name) != stat]


def left_out(path: Path) -> bool:
    parts = path.relative_to(PREFIX).parts
    if "site-packages" not in parts or any(part.endswith(".dist-info") for part in parts):
        return False
    inside = parts[parts.index("site-packages") + 1 :]
    if "tests" in inside[:-1] or "include" in inside[:-1] or inside[:2] == ("torch", "test"):
        return True
    return inside[:2] == ("torch", "bin") and inside[-1] not in TORCH_BIN_KEPT


def shared_library(path: Path) -> bool:
    return path.is_file() and not path.is_symlink() and (path.suffix == ".so" or ".so." in path.name)


def segments_aligned(path: Path) -> bool:
    """Whether every loadable segment of a 64-bit little-endian ELF file satisfies the loader's checks
    (glibc: alignment a multiple of the page, address and offset congruent modulo the alignment)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    entry_size, count = struct.unpack_from("<HH", data, 0x36)
    for index in range(count):
        kind, _, offset, address, _, _, _, align = struct.unpack_from("<IIQQQQQQ", data, phoff + index * entry_size)
        if kind == PT_LOAD and (align % 4096 or (address - offset) % align):
            return False
    return True


def strip() -> None:
    tool = shutil.which("strip")
    if not tool:
        print("stage: no strip (binutils): symbol tables kept")
        return
    saved = kept = 0
    for path in filter(shared_library, added()):
        stripped = path.with_name(path.name + ".stripped")
        subprocess.run([tool, "--strip-unneeded", "-o", str(stripped), str(path)], check=True)
        if not segments_aligned(stripped):
            stripped.unlink()
            kept += 1
            continue
        saved += path.stat().st_size - stripped.stat().st_size
        shutil.copymode(path, stripped)
        os.replace(stripped, path)
    print(f"stage: symbol tables stripped, {saved / 1e6:.0f} MB saved; {kept} libraries kept whole (strip breaks them)")


def collect(destination: Path) -> None:
    before = json.loads(SNAPSHOT.read_text())
    gone = sorted(set(before) - set(entries()))
    destination.mkdir(parents=True, exist_ok=True)
    with (destination / REMOVED).open("a") as removed:
        removed.writelines(f"{name}\n" for name in gone)
    replaced = sorted({Path(name).name for name in gone if name.endswith(".dist-info")})
    if replaced:
        print(f"stage: pip replaced {', '.join(replaced)} of the base: {len(gone)} paths to delete ({REMOVED})")
    staged = dropped = 0
    for source in added():
        if left_out(source):
            dropped += source.lstat().st_size
            continue
        target = destination / source.relative_to(PREFIX)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
        staged += target.lstat().st_size
    print(f"stage: {staged / 1e6:.0f} MB staged in {destination}, {dropped / 1e6:.0f} MB of tests and headers left out")


def main() -> None:
    if sys.argv[1:] == ["before"]:
        SNAPSHOT.write_text(json.dumps(entries()))
    elif sys.argv[1:] == ["strip"]:
        strip()
    elif len(sys.argv) == 3 and sys.argv[1] == "collect":
        collect(Path(sys.argv[2]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
