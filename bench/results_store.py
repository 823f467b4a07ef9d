"""Reading back stored episodes (issue 13): the results database against the per-episode file cache it
replaced, on the same machine, for 1,000 checkpoints x the navigation suite's 444 episodes.

    python -m bench.results_store                      # SQLite and the file cache (~5 min on 2 cores)
    python -m bench.results_store --postgres URL       # also a PostgreSQL you started (an empty database)
    python -m bench.results_store --checkpoints 100    # quicker

Both stores get the same synthetic episodes (2 agents, a few stats, no replays), written the way a run
writes them (the file cache: one file per episode; the database: one transaction per 32-episode unit), then
read back the way a run reads them: one lookup per checkpoint for the whole suite. Figures: seconds to write,
seconds to read back, files created, bytes on disk. Read-back ratio = file cache / database (higher is
better for the database). Every read-back is checked to return all 444 episodes of every checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.file_cache import ResultsCache
from evaluator.store.episodes import EpisodeStore, PlayedEpisode
from sim.envs import episode_seed
from sim.metrics import EpisodeResult
from sim.suites import get_suite

SUITE = get_suite("navigation")
UNIT = 32


def episodes_of(checkpoint: int) -> list[PlayedEpisode]:
    played = []
    for env in SUITE.envs:
        for episode in range(env.episodes):
            seed = episode_seed(SUITE.seed, env.name, episode)
            rewards = tuple(float((seed + checkpoint + agent) % 5) for agent in range(2))
            stats = {"game/steps": 100.0, "agent/heart.gained": rewards[0], "agent/action.move.success": 37.0}
            result = EpisodeResult(env.name, episode, seed, rewards, steps=100, stats=stats, wall_s=0.05)
            played.append(PlayedEpisode(env, result))
    return played


def digest(checkpoint: int) -> str:
    return f"sha256:{checkpoint:064x}"


def disk_usage(root: Path) -> tuple[int, int]:
    files = size = 0
    for directory, _, names in os.walk(root):
        files += len(names)
        size += sum((Path(directory) / name).stat().st_size for name in names)
    return files, size


def measure_files(root: Path, checkpoints: int) -> dict:
    cache = ResultsCache(root)
    started = time.perf_counter()
    for checkpoint in range(checkpoints):
        for played in episodes_of(checkpoint):
            cache.put(digest(checkpoint), played.env, played.result)
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    for checkpoint in range(checkpoints):
        found = cache.lookup(digest(checkpoint), SUITE, replays=False)
        assert len(found.found) == 444 and not found.missing
    read_s = time.perf_counter() - started
    files, size = disk_usage(root / "cache")
    return {"store": "file cache", "write_s": write_s, "read_s": read_s, "files": files, "bytes": size}


def measure_database(name: str, url: str, checkpoints: int, files_under: Path | None) -> dict:
    store = EpisodeStore(url)
    started = time.perf_counter()
    for checkpoint in range(checkpoints):
        played = episodes_of(checkpoint)
        for start in range(0, len(played), UNIT):
            store.put(digest(checkpoint), played[start : start + UNIT])
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    for checkpoint in range(checkpoints):
        found = store.lookup(digest(checkpoint), SUITE, replays=False)
        assert len(found.found) == 444 and not found.missing
    read_s = time.perf_counter() - started
    files, size = disk_usage(files_under) if files_under else (None, None)
    return {"store": name, "write_s": write_s, "read_s": read_s, "files": files, "bytes": size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=int, default=1000)
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also measure this PostgreSQL database (empty; e.g. postgresql://user:pw@127.0.0.1:5432/bench)",
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_store_") as tmp:
        root = Path(tmp)
        rows.append(measure_files(root / "files", args.checkpoints))
        sqlite_dir = root / "sqlite"
        sqlite_dir.mkdir()
        rows.append(measure_database("SQLite", f"sqlite:///{sqlite_dir / 'results.db'}", args.checkpoints, sqlite_dir))
        if args.postgres:
            rows.append(measure_database("PostgreSQL", args.postgres, args.checkpoints, None))
    base = rows[0]
    print(f"{args.checkpoints} checkpoints x 444 episodes = {args.checkpoints * 444:,} episodes")
    print(f"{'store':<14} {'write s':>8} {'read s':>8} {'read x':>7} {'files':>9} {'MB':>8}")
    for row in rows:
        files = "-" if row["files"] is None else f"{row['files']:,}"
        size = "-" if row["bytes"] is None else f"{row['bytes'] / 2**20:.0f}"
        print(
            f"{row['store']:<14} {row['write_s']:>8.1f} {row['read_s']:>8.2f} {base['read_s'] / row['read_s']:>7.1f} "
            f"{files:>9} {size:>8}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
