"""`policy-evaluator view [DATA_DIR]`: a read-only web server over a data directory, on 127.0.0.1 by default.

It serves the list of runs, each run's page (its report.html, drawn from report.json for runs older than the
page), each run's files (replays the page links instead of embedding, report.json, episodes.parquet) and a
leaderboard across runs from the results store. Only GET and HEAD; every path is resolved and must stay inside
DATA_DIR (a `..` segment, an absolute path, or a symlink out of it is refused with 403).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from aiohttp import web

from evaluator.scorecard.listing import RunEntry, leaderboard_page, runs_page
from evaluator.scorecard.page import PAGE_NAME, asset, page_of_run
from evaluator.store import queries
from sim.errors import EvaluatorError, first_line

_SUITE = re.compile(rb'"simulation_suite":\s*"([^"]*)"')
_DATA_DIR = web.AppKey("data_dir", Path)
_RESULTS_DB = web.AppKey("results_db", str)
HTML = "text/html; charset=utf-8"


def confined(root: Path, relative: str) -> Path | None:
    """`root/relative` if it stays inside `root` once resolved (symlinks followed); None otherwise."""
    if not relative or "\x00" in relative or "\\" in relative:
        return None
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        return None
    resolved_root = root.resolve()
    candidate = (resolved_root / path).resolve()
    return candidate if candidate.is_relative_to(resolved_root) else None


def _refused(what: str) -> web.HTTPForbidden:
    return web.HTTPForbidden(text=f"refused: {what} is outside the data directory\n")


def run_entries(data_dir: Path, results_db: str) -> tuple[list[RunEntry], str]:
    """The run directories with a report.json, newest first, and a note when the store cannot be read."""
    recorded: dict[str, queries.RunSummary] = {}
    note = ""
    if _store_exists(results_db):
        try:
            recorded = {run.name: run for run in queries.recent_runs(results_db, limit=100_000).runs}
        except EvaluatorError as exc:
            note = f"results database unavailable: {first_line(exc)}"
    entries = []
    for report in data_dir.glob("*/report.json"):
        with report.open("rb") as handle:
            found = _SUITE.search(handle.read(4096))
        modified = datetime.fromtimestamp(report.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M:%S")
        name = report.parent.name
        suite = found.group(1).decode() if found else "?"
        entries.append(RunEntry(name, suite, modified, recorded.get(name)))
    entries.sort(key=lambda e: e.modified, reverse=True)
    return entries, note


def _store_exists(url: str) -> bool:
    """A SQLite store that does not exist is not created (the server writes nothing)."""
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).is_file()
    return True


async def index(request: web.Request) -> web.Response:
    data_dir = request.app[_DATA_DIR]
    entries, note = run_entries(data_dir, request.app[_RESULTS_DB])
    return web.Response(text=runs_page(str(data_dir), entries, asset("page.css"), note), content_type="text/html")


async def leaderboard(request: web.Request) -> web.Response:
    url = request.app[_RESULTS_DB]
    if not _store_exists(url):
        raise web.HTTPNotFound(text=f"no results database at {url}\n")
    limit = int(request.query.get("limit", "5")) if request.query.get("limit", "5").isdigit() else 5
    try:
        board = queries.leaderboard(url, limit=max(1, min(limit, 100)))
    except EvaluatorError as exc:
        raise web.HTTPServiceUnavailable(text=f"results database unavailable: {first_line(exc)}\n") from None
    return web.Response(text=leaderboard_page(board, asset("page.css")), content_type="text/html")


async def run_page(request: web.Request) -> web.StreamResponse:
    run = request.match_info["run"]
    run_dir = confined(request.app[_DATA_DIR], run)
    if run_dir is None:
        raise _refused(repr(run))
    if not (run_dir / "report.json").is_file():
        raise web.HTTPNotFound(text=f"no run {run!r} (no report.json)\n")
    if (run_dir / PAGE_NAME).is_file():
        return web.FileResponse(run_dir / PAGE_NAME, headers={"Content-Type": HTML})
    return web.Response(text=page_of_run(run_dir), content_type="text/html")


async def run_without_slash(request: web.Request) -> web.Response:
    """`/runs/<name>` -> `/runs/<name>/`, so the page's relative replay URLs resolve inside the run."""
    raise web.HTTPFound(f"/runs/{request.match_info['run']}/")


async def run_file(request: web.Request) -> web.StreamResponse:
    relative = f"{request.match_info['run']}/{request.match_info['tail']}"
    path = confined(request.app[_DATA_DIR], relative)
    if path is None:
        raise _refused(repr(relative))
    if not path.is_file():
        raise web.HTTPNotFound(text=f"no file {relative!r}\n")
    return web.FileResponse(path)


def application(data_dir: Path, results_db: str) -> web.Application:
    app = web.Application()
    app[_DATA_DIR] = data_dir
    app[_RESULTS_DB] = results_db
    app.router.add_get("/", index)
    app.router.add_get("/leaderboard", leaderboard)
    app.router.add_get("/runs/{run}", run_without_slash)
    app.router.add_get("/runs/{run}/", run_page)
    app.router.add_get("/runs/{run}/{tail:.+}", run_file)
    return app


def serve(data_dir: Path, results_db: str, host: str, port: int) -> None:
    """Serve until interrupted; prints the address once listening (the real port when 0 was asked for)."""

    async def main() -> None:
        runner = web.AppRunner(application(data_dir, results_db), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        print(f"serving {data_dir} at http://{bound[0]}:{bound[1]}/ (read-only; Ctrl-C stops)", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it is meant to stop
        asyncio.run(main())
