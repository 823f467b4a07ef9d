"""(d) and (e) of bench/throughput.py: the CLI in a fresh process with its own Ray instance, and how busy
the (shared) machine was around each measure."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CKPT_DIR = REPO / "examples" / "policies" / "navigator_bc"
CKPT = CKPT_DIR / "ckpt_0004"
"""A policy bundle directory (policy_spec.json + weights.safetensors); `checkpoint_bytes` gives its zip."""
SUITE = "navigation"


def checkpoint_bytes(path: Path) -> bytes:
    """What a source hands the loader for `path`: a bundle directory zipped deterministically, a file as is."""
    from evaluator.sources.files import zip_directory

    return zip_directory(path) if path.is_dir() else path.read_bytes()


def _busy_cpu_s() -> float:
    """CPU-seconds all CPUs have spent busy since boot (/proc/stat, everything but idle and iowait)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class ForeignLoad:
    """Share of the machine's CPUs that other processes used while the `with` block ran (0 = we had the
    machine to ourselves, 0.5 = one of two cores was busy with someone else's work). Exact for in-process
    measures; around a CLI run, Ray workers that outlive their raylet are not ours by this count, so there
    the ambient load sampled just before (`ambient_load`) is the better figure."""

    def __enter__(self) -> ForeignLoad:
        self._busy, self._own, self._wall = _busy_cpu_s(), _own_cpu_s(), time.perf_counter()
        self.share = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        foreign = (_busy_cpu_s() - self._busy) - (_own_cpu_s() - self._own)
        self.share = max(0.0, foreign) / ((time.perf_counter() - self._wall) * (os.cpu_count() or 1))


def ambient_load(seconds: float = 1.0) -> float:
    """Busy share of all CPUs over `seconds` while this process sleeps: other people's load right now.
    Around a CLI run the bench records the larger of the samples taken just before and just after."""
    with ForeignLoad() as load:
        time.sleep(seconds)
    return load.share


def wait_for_quiet(threshold: float = 0.25, patience_s: float = 120.0) -> float:
    """Wait (up to `patience_s`) until other processes use less than `threshold` of the CPUs, so a CLI run,
    which cannot separate its CPU time from other people's, starts on an idle machine. Returns the last
    ambient load sampled (above `threshold` when patience ran out: the run is then flagged as noisy)."""
    deadline = time.monotonic() + patience_s
    load = ambient_load()
    while load >= threshold and time.monotonic() < deadline:
        load = ambient_load()
    return load


def cli(args: list[str], workdir: Path) -> tuple[dict | None, float, str]:
    """Run `python -m evaluator run ...` in a fresh process and private Ray; (report, wall s, stderr tail).

    RAY_TMPDIR is private and RAY_ADDRESS unset, so `ray.init()` starts its own instance instead of joining
    whatever cluster this machine started last (it would, through /tmp/ray/ray_current_cluster)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rb", dir="/tmp")
    command = [
        sys.executable,
        "-m",
        "evaluator",
        "run",
        "--data-dir",
        str(workdir),
        "--no-reuse-results",
        "--no-progress",
    ]
    started = time.perf_counter()
    done = subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=REPO, check=False)
    wall = time.perf_counter() - started
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        report = None
    return report, wall, done.stderr[-2000:]


def measure_ray(workers: int, extra_args: list[str], workdir: Path) -> dict:
    """All example checkpoints on the suite with `workers` actors; rate = the report's agent-steps over its
    evaluation_s (ray start is apart, in ray_init_s)."""
    args = ["-p", str(CKPT_DIR), "--checkpoints", "all", "--suite", SUITE, "--num-workers", str(workers)]
    before = wait_for_quiet()
    report, wall, stderr = cli([*args, "--run-name", f"bench_w{workers}", *extra_args], workdir)
    if report is None or "timing" not in report:
        raise RuntimeError(f"evaluator run with {workers} workers failed:\n{stderr}")
    ambient = max(before, ambient_load())
    timing = report["timing"]
    loaded = [w["loaded_checkpoints"] for w in report["workers"]]
    return {
        "rate": timing["agent_steps"] / timing["evaluation_s"],
        "timing": timing,
        "wall_s": wall,
        "ambient_load": ambient,
        "repeated_loads": sum(len(digests) - len(set(digests)) for digests in loaded),
        "loads_per_worker": [len(digests) for digests in loaded],
    }


def measure_tiny(workdir: Path) -> dict:
    """`--suite smoke` on one checkpoint: the fixed cost of an evaluation, process start to exit."""
    args = ["-p", str(CKPT), "--suite", "smoke", "--num-workers", "1", "--run-name", "bench_tiny"]
    before = wait_for_quiet()
    report, wall, stderr = cli(args, workdir)
    if report is None:
        raise RuntimeError(f"tiny evaluator run failed:\n{stderr}")
    ambient = max(before, ambient_load())
    return {"wall_s": wall, "timing": report["timing"], "ambient_load": ambient}


def run_ray_rounds(
    rounds: int, extra_args: list[str], also_defaults: bool, log: Callable[[str], None]
) -> dict[str, list[dict]]:
    """(d,1), (d,2) and (e) per round, alternating which of (d,1) and (d,2) goes first."""
    runs: dict[str, list[dict]] = {"d1": [], "d2": [], "d1_defaults": [], "tiny": []}
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        for round_index in range(rounds):
            for workers in (1, 2) if round_index % 2 == 0 else (2, 1):
                run = measure_ray(workers, extra_args, workdir)
                runs[f"d{workers}"].append(run)
                log(f"ray round {round_index + 1}: {workers} worker(s) {run['rate']:,.0f} agent-steps/s, "
                    f"ambient load {run['ambient_load']:.0%}")  # fmt: skip
            if also_defaults and round_index == 0:
                runs["d1_defaults"].append(measure_ray(1, [], workdir))
                log(f"ray 1 worker, CLI defaults: {runs['d1_defaults'][-1]['rate']:,.0f} agent-steps/s")
            runs["tiny"].append(measure_tiny(workdir))
            log(f"tiny end-to-end: {runs['tiny'][-1]['wall_s']:.1f} s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return runs
