"""The scorecard page (report.html) in headless Chromium: its size, and the time from navigation until the
charts are drawn, against a baseline measured in the same run: a page with only plotly.js inlined (the floor
any offline plotly page pays) drawing one small chart.

    python -m bench.page [RUN_DIR]          # default data/demo (run `make demo` first)
    python -m bench.page --synthetic 10000  # a page of 10,000 checkpoints x 20 environments, drawn here

Needs Debian's chromium (`apt-get install chromium`) and Playwright (the test extra).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright
from plotly.offline import get_plotlyjs

ROUNDS = 5
BASELINE = """<!DOCTYPE html><html><head><meta charset="utf-8"><script>{plotly}</script></head><body>
<div id="heatmap"></div><script>Plotly.newPlot('heatmap', [{{type: 'heatmap', z: [[1, 2], [3, 4]]}}]);</script>
</body></html>"""
DRAWN = "() => document.getElementById('heatmap')?.data !== undefined"


def load_seconds(page, url: str) -> float:
    started = time.perf_counter()
    page.goto(url, wait_until="load")
    page.wait_for_function(DRAWN)
    return time.perf_counter() - started


def synthetic_page(directory: Path, checkpoints: int, environments: int = 20) -> float:
    """Draw a page of `checkpoints` x `environments` random scores into `directory`; seconds it took."""
    import random

    from evaluator.reduce.report import Report, Timing
    from evaluator.scorecard.page import render_page
    from evaluator.scorecard.rows import Cell, Row

    envs = [f"env_{i}" for i in range(environments)]
    rows = [
        Row(
            f"ckpt:v{i}",
            "policy",
            i + 1,
            "uri",
            None,
            random.random(),
            (0.1, 0.9),
            {e: Cell(random.random(), (0.0, 1.0), 8, 0.5) for e in envs},
            [],
            {},
        )
        for i in range(checkpoints)
    ]
    timing = Timing(
        wall_s=1,
        ray_init_s=0,
        evaluation_s=1,
        agent_steps=1,
        agent_steps_per_s=1,
        episodes=1,
        policy_loads=1,
        workers=1,
    )
    report = Report(
        simulation_suite="synthetic", run_name="synthetic", evaluator_version="-", seed=0, policies=[], timing=timing
    )
    started = time.perf_counter()
    (directory / "report.html").write_text(render_page(report, rows, envs, directory))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", type=Path, default=Path("data/demo"))
    parser.add_argument("--synthetic", type=int, metavar="N", help="draw a page of N checkpoints x 20 environments")
    args = parser.parse_args()
    if args.synthetic:
        args.run_dir = Path(tempfile.mkdtemp(prefix="bench_page_"))
        drawn_s = synthetic_page(args.run_dir, args.synthetic)
        print(f"drew {args.synthetic:,} checkpoints x 20 environments in {drawn_s:.1f} s")
    page_path = (args.run_dir / "report.html").resolve()
    if not page_path.is_file():
        print(f"no {page_path}: run `make demo` first", file=sys.stderr)
        return 2
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        print("no chromium on PATH: apt-get install chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as temp:
        baseline_path = Path(temp) / "baseline.html"
        baseline_path.write_text(BASELINE.format(plotly=get_plotlyjs()))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            load_seconds(page, baseline_path.as_uri())  # warm the browser's caches of its own
            baseline = [load_seconds(page, baseline_path.as_uri()) for _ in range(ROUNDS)]
            scorecard = [load_seconds(page, page_path.as_uri()) for _ in range(ROUNDS)]
            browser.close()
    base, ours = statistics.median(baseline), statistics.median(scorecard)
    size_mb, plotly_mb = page_path.stat().st_size / 1e6, len(get_plotlyjs()) / 1e6
    print(f"page {page_path}: {size_mb:.2f} MB (plotly.js alone {plotly_mb:.2f} MB)")
    print(f"plotly.js-only page: median {base:.2f} s over {ROUNDS} loads")
    print(f"report.html drawn:   median {ours:.2f} s over {ROUNDS} loads = {ours / base:.2f}x the plotly.js-only page")
    return 0


if __name__ == "__main__":
    sys.exit(main())
