"""Scale (issue 12): the driver's cost per work unit and its peak memory at 100, 1,000 and 10,000 checkpoints,
through the real CLI and Ray, so that a cost or a memory that grows with the number of checkpoints shows.

    python -m bench.scale                       # 100, 1,000, 10,000 checkpoints (~10 min on 2 cores)
    python -m bench.scale --sizes 100,1000      # quicker
    python -m bench.scale --shard-size 1        # 20 units per checkpoint (200,000 at 10,000; ~40 min)

Each checkpoint is a tiny TokenGridMLP state dict (`ckpt_00001.pt`, ...; one directory, `--checkpoints last:N`
picks N); the suite is 20 tiny one-agent rooms, one episode each, `--shard-size 4` so every checkpoint is 5
units (50,000 at 10,000 checkpoints; the driver's cost is per unit, and packing all 20 would make it 1).
`--no-replays` (a replay file per unit is a constant cost that would only blur the driver's) and
`--no-reuse-results` (every episode is played; each is still recorded in the results database, one
transaction per unit, as in any run). Two workers (`--num-workers 2`), `--execution ray`.

Figures per size, from the report: evaluation_s / units (per-unit time on the clock), driver_cpu_s / units
(the driver process's CPU per unit, Ray start and imports included: they are amortised as N grows),
driver_peak_rss_mb, and the wall time of the whole command. Targets, against the 100-checkpoint run measured
in the same invocation: per-unit time at the largest size <= 1.5x, driver peak RSS <= 1.3x. Exit 1 if missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.cli_runs import ambient_load, cli, wait_for_quiet

ENVS = 20
TIME_TARGET = 1.5
RSS_TARGET = 1.3


def suite_file(directory: Path) -> Path:
    """20 tiny rooms (one agent, a goal a few cells away, 12 steps), each a different map."""
    envs = []
    for index in range(ENVS):
        row = ["."] * 5
        row[index % 5] = "n"
        envs.append(
            {
                "name": f"room_{index:02d}",
                "map": {"kind": "ascii", "rows": ["#######", "#@....#", "#" + "".join(row) + "#", "#######"]},
                "max_steps": 12,
                "num_agents": 1,
                "episodes": 1,
            }
        )
    path = directory / "scale_suite.json"
    path.write_text(json.dumps({"name": "scale", "seed": 0, "description": "20 tiny rooms", "envs": envs}))
    return path


def checkpoints(directory: Path, count: int) -> Path:
    """`count` tiny state-dict checkpoints, each with its own weights (so each has its own digest)."""
    import io

    import torch

    from sim.models import TokenGridMLP

    run = directory / "run"
    run.mkdir(exist_ok=True)
    kwargs = {"num_tags": 5, "num_actions": 5, "tag_feature_id": 6, "obs_height": 13, "obs_width": 13, "hidden": 8}
    torch.manual_seed(0)
    model = TokenGridMLP(**kwargs)
    for index in range(1, count + 1):
        with torch.no_grad():
            model.net[-1].bias.fill_(index * 1e-4)
        buffer = io.BytesIO()
        state = {"format_version": 1, "class_path": "sim.models.TokenGridMLP", "init_kwargs": kwargs}
        torch.save({**state, "state_dict": model.state_dict()}, buffer)
        (run / f"ckpt_{index:05d}.pt").write_bytes(buffer.getvalue())
    return run


def measure(run: Path, suite: Path, count: int, workdir: Path, shard_size: int) -> dict:
    args = ["-p", str(run), "--checkpoints", f"last:{count}", "--suite", str(suite), "--shard-size", str(shard_size)]
    args += ["--num-workers", "2", "--execution", "ray", "--no-replays", "--run-name", f"scale_{count}"]
    before = wait_for_quiet()
    report, wall, stderr = cli(args, workdir)
    if report is None or "timing" not in report:
        raise RuntimeError(f"evaluation of {count} checkpoints failed:\n{stderr}")
    timing = report["timing"]
    evaluated = report["policies"][0]["checkpoints"]
    failed = [c["name"] for c in evaluated if c.get("error")]
    if len(evaluated) != count or failed:
        raise RuntimeError(f"{count} checkpoints: {len(evaluated)} in the report, failed: {failed[:3]}")
    units = timing["units"]
    return {
        "checkpoints": count,
        "units": units,
        "unit_ms": 1000 * timing["evaluation_s"] / units,
        "driver_cpu_ms_per_unit": 1000 * timing["driver_cpu_s"] / units,
        "driver_peak_rss_mb": timing["driver_peak_rss_mb"],
        "evaluation_s": timing["evaluation_s"],
        "wall_s": wall,
        "policy_loads": timing["policy_loads"],
        "ambient_load": max(before, ambient_load()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="checkpoint counts, the first is the baseline")
    parser.add_argument("--shard-size", type=int, default=4, help="episodes per unit (the suite has 20)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here as JSON")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    out = args.out
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        directory = Path(tmp)
        started = time.perf_counter()
        run = checkpoints(directory, max(sizes))
        print(f"{max(sizes)} checkpoints written in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        suite = suite_file(directory)
        rows = []
        for count in sizes:
            rows.append(measure(run, suite, count, directory / "data", args.shard_size))
            print(json.dumps(rows[-1]), file=sys.stderr)
    base = rows[0]
    print(
        f"{'checkpoints':>11} {'units':>7} {'ms/unit':>8} {'x':>5} {'drv cpu ms/unit':>15} {'peak RSS MB':>11} "
        f"{'x':>5} {'wall s':>7} {'loads':>6} {'ambient':>7}"
    )
    for row in rows:
        time_ratio, rss_ratio = row["unit_ms"] / base["unit_ms"], row["driver_peak_rss_mb"] / base["driver_peak_rss_mb"]
        row.update(unit_ms_ratio=time_ratio, rss_ratio=rss_ratio)
        print(
            f"{row['checkpoints']:>11} {row['units']:>7} {row['unit_ms']:>8.2f} {time_ratio:>5.2f} "
            f"{row['driver_cpu_ms_per_unit']:>15.3f} {row['driver_peak_rss_mb']:>11.0f} {rss_ratio:>5.2f} "
            f"{row['wall_s']:>7.1f} {row['policy_loads']:>6} {row['ambient_load']:>7.2f}"
        )
    if out:
        out.write_text(json.dumps(rows, indent=2))
    last = rows[-1]
    met = last["unit_ms_ratio"] <= TIME_TARGET and last["rss_ratio"] <= RSS_TARGET
    print(
        f"targets at {last['checkpoints']}: per-unit time <= {TIME_TARGET}x ({last['unit_ms_ratio']:.2f}), "
        f"driver RSS <= {RSS_TARGET}x ({last['rss_ratio']:.2f}): {'met' if met else 'MISSED'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
