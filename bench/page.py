"""The scorecard page (report.html) in headless Chromium: its size, and the time from navigation until the
charts are drawn, against a baseline measured in the same run: a page with only plotly.js inlined (the floor
any offline plotly page pays) drawing one small chart.

    python -m bench.page [RUN_DIR]          # default data/demo (run `make demo` first)

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", type=Path, default=Path("data/demo"))
    args = parser.parse_args()
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
