"""`policy-evaluator view [DATA_DIR]`: a read-only web server over a data directory, on 127.0.0.1 by default.

It serves the list of runs, each run's page (its report.html, drawn from report.json for runs older than the
page), each run's files (replays the page links instead of embedding, report.json, episodes.parquet) and a
leaderboard across runs from the results store. Only GET and HEAD.

What it serves is an allow-list, never DATA_DIR's own files (the results database and its -wal/-shm, the
download cache): a run is one path segment naming a directory directly inside DATA_DIR (no `.`, `..` or other
leading-dot name); a symlinked run directory is served only when its target, resolved, is itself a directory
directly inside DATA_DIR (another name for a run of it), never one elsewhere or DATA_DIR itself. Of a run it
serves only the files a run writes (`RUN_FILES`, and `replays/<checkpoint>/<file>.json.z`), each resolved and
inside that run's directory. The index lists only such runs. Anything else is answered 403 (a name that tries
to leave: `..`, a hidden name, a symlink out) or 404 (no such run or file), 414 for a name longer than the
system's, always with a short plain-text body; an error no handler expected is a plain 500 without its
traceback (logged; `evaluator.web_errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from evaluator.scorecard.listing import RunEntry, leaderboard_page, runs_page
from evaluator.scorecard.page import PAGE_NAME, asset, page_of_run
from evaluator.secrets import redact_text, redact_url
from evaluator.store import queries
from evaluator.store.database import close_database
from evaluator.web_errors import no_tracebacks
from sim.errors import EvaluatorError, first_line
from sim.replays import REPLAY_SUFFIX

_SUITE = re.compile(rb'"simulation_suite":\s*"([^"]*)"')
_DATA_DIR = web.AppKey("data_dir", Path)
_RESULTS_DB = web.AppKey("results_db", str)
HTML = "text/html; charset=utf-8"

RUN_FILES = frozenset({"report.json", PAGE_NAME, "episodes.parquet", "sweep.json"})
"""The files a run writes at the top of its directory: report.json and episodes.parquet
(evaluator.reduce.run_directory), report.html (evaluator.scorecard.page), sweep.json (evaluator.run.sweep). With the
replays, the only files served."""
REPLAYS = "replays"
"""A run's replays: `replays/<NNN_checkpoint>/<env>_ep<N>.json.z` (evaluator.reduce.run_directory.replay_path)."""
NAME_MAX = 255
"""Bytes in one file name (Linux's NAME_MAX): a longer segment names nothing (414)."""


def _refused(what: str, why: str = "is outside the data directory") -> web.HTTPForbidden:
    return web.HTTPForbidden(text=f"refused: {_shown(what)} {why}\n")


def _shown(name: str) -> str:
    """A name for an answer's one line: quoted, and cut short (an attacker's path may be kilobytes)."""
    return repr(name) if len(name) <= 80 else repr(name[:80]) + "..."


def _segment(name: str, what: str) -> None:
    """403 unless `name` is empty (names nothing: 404 later) or one plain path segment (no leading dot: not `.`,
    `..` or hidden; no separator, NUL or control character); 414 when it is longer than any file name can be."""
    if name and (name.startswith(".") or "/" in name or "\\" in name or not name.isprintable()):
        raise _refused(name, f"is not a {what} of the data directory")
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        raise web.HTTPRequestURITooLong(text=f"a {what} name of over {NAME_MAX} bytes names nothing\n")


def _resolved(path: Path, missing: str) -> Path:
    """`path` resolved (symlinks followed); 404 `missing` when it does not exist (or loops), 414 when the
    system finds a name too long."""
    try:
        return path.resolve(strict=True)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise web.HTTPRequestURITooLong(text="the path is longer than the system allows\n") from None
        raise web.HTTPNotFound(text=missing) from None
    except RuntimeError:  # Python 3.11's symlink loop
        raise web.HTTPNotFound(text=missing) from None


def run_directory(data_dir: Path, name: str) -> Path:
    """The run `name` of DATA_DIR, resolved: a directory directly inside DATA_DIR, or a symlink to one (another
    name for a run of it). 403 for a name that is not one plain segment or a directory that resolves anywhere
    else (outside DATA_DIR, DATA_DIR itself, deeper inside it, a hidden one); 404 when there is none."""
    _segment(name, "run")
    root = data_dir.resolve()
    missing = f"no run {_shown(name)}\n"
    if not name:
        raise web.HTTPNotFound(text=missing)
    resolved = _resolved(root / name, missing)
    if resolved.parent != root or resolved.name.startswith("."):
        raise _refused(name)
    if not resolved.is_dir():
        raise web.HTTPNotFound(text=missing)
    return resolved


def served_file(run_dir: Path, relative: str) -> Path:
    """The file `relative` of the (resolved) run directory, if a run writes such a file (`RUN_FILES`, or a
    replay) and it resolves to a regular file inside that directory. 403 for a segment that tries to leave
    or a file that resolves out of the run; 404 for anything a run does not write, or that is not there."""
    parts = relative.split("/")
    for part in parts:
        _segment(part, "file")
    missing = f"no file {_shown(relative)} in run {_shown(run_dir.name)}\n"
    written = (len(parts) == 1 and parts[0] in RUN_FILES) or (
        len(parts) == 3 and parts[0] == REPLAYS and all(parts) and parts[2].endswith(REPLAY_SUFFIX)
    )
    if not written:
        raise web.HTTPNotFound(text=missing)
    resolved = _resolved(run_dir.joinpath(*parts), missing)
    if not resolved.is_relative_to(run_dir):
        raise _refused(relative, "leaves its run directory")
    if not resolved.is_file():
        raise web.HTTPNotFound(text=missing)
    return resolved


def run_entries(data_dir: Path, results_db: str) -> tuple[list[RunEntry], str]:
    """The run directories with a report.json, newest first, and a note when the store cannot be read."""
    recorded: dict[str, queries.RunSummary] = {}
    note = ""
    if _store_exists(results_db):
        try:
            recorded = {run.name: run for run in queries.recent_runs(results_db, limit=100_000).runs}
        except (EvaluatorError, RuntimeError) as exc:  # RuntimeError: a file that is not a database
            note = f"results database unavailable: {redact_text(first_line(exc))}"
    entries = []
    for name in _names_in(data_dir):
        try:
            report = served_file(run_directory(data_dir, name), "report.json")
            with report.open("rb") as handle:
                found = _SUITE.search(handle.read(4096))
            written = report.stat().st_mtime
        except (web.HTTPException, OSError):  # not a run of DATA_DIR (run_directory), or gone since
            continue
        modified = datetime.fromtimestamp(written, UTC).strftime("%Y-%m-%d %H:%M:%S")
        suite = found.group(1).decode("utf-8", "replace") if found else "?"
        entries.append(RunEntry(name, suite, modified, recorded.get(name)))
    entries.sort(key=lambda e: e.modified, reverse=True)
    return entries, note


def _names_in(data_dir: Path) -> list[str]:
    """The names directly inside DATA_DIR (none when it cannot be listed)."""
    try:
        return [path.name for path in data_dir.iterdir()]
    except OSError:
        return []


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
        raise web.HTTPNotFound(text=f"no results database at {redact_url(url)}\n")
    asked = request.query.get("limit", "5")
    limit = int(asked) if re.fullmatch(r"[0-9]{1,3}", asked) else 5  # not "²", nor 5,000 digits
    try:
        board = queries.leaderboard(url, limit=max(1, min(limit, 100)))
    except (EvaluatorError, RuntimeError) as exc:  # RuntimeError: a file that is not a database
        raise web.HTTPServiceUnavailable(
            text=f"results database unavailable: {redact_text(first_line(exc))}\n"
        ) from None
    return web.Response(text=leaderboard_page(board, asset("page.css")), content_type="text/html")


async def run_page(request: web.Request) -> web.StreamResponse:
    run = request.match_info["run"]
    run_dir = run_directory(request.app[_DATA_DIR], run)
    try:
        served_file(run_dir, "report.json")
    except web.HTTPNotFound:
        raise web.HTTPNotFound(text=f"no run {_shown(run)} (no report.json)\n") from None
    try:
        return web.FileResponse(served_file(run_dir, PAGE_NAME), headers={"Content-Type": HTML})
    except web.HTTPNotFound:  # a run older than the page: drawn from its report.json
        pass
    try:
        page = page_of_run(run_dir)
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        message = f"cannot draw the page of run {_shown(run)}: its report.json is not a report ({first_line(exc)})"
        raise web.HTTPInternalServerError(text=message + "\n") from None
    return web.Response(text=page, content_type="text/html")


async def run_without_slash(request: web.Request) -> web.Response:
    """`/runs/<name>` -> `/runs/<name>/`, so the page's relative replay URLs resolve inside the run."""
    run = request.match_info["run"]
    run_directory(request.app[_DATA_DIR], run)
    raise web.HTTPFound(f"/runs/{quote(run, safe='')}/")


async def run_file(request: web.Request) -> web.StreamResponse:
    run_dir = run_directory(request.app[_DATA_DIR], request.match_info["run"])
    return web.FileResponse(served_file(run_dir, request.match_info["tail"]))


def application(data_dir: Path, results_db: str) -> web.Application:
    app = web.Application(middlewares=[no_tracebacks(_internal_error)])
    app[_DATA_DIR] = data_dir
    app[_RESULTS_DB] = results_db
    app.router.add_get("/", index)
    app.router.add_get("/leaderboard", leaderboard)
    app.router.add_get("/runs/{run}", run_without_slash)
    app.router.add_get("/runs/{run}/", run_page)
    app.router.add_get("/runs/{run}/{tail:.+}", run_file)
    return app


def _internal_error() -> web.Response:
    return web.Response(status=500, text="internal error (logged by the server)\n")


def serve(data_dir: Path, results_db: str, host: str, port: int, on_listening: Callable[[str], None]) -> None:
    """Serve until interrupted; `on_listening(url)` once listening (the real port when 0 was asked for: the CLI
    prints it)."""

    async def main() -> None:
        runner = web.AppRunner(application(data_dir, results_db), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        on_listening(f"http://{bound[0]}:{bound[1]}/")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it is meant to stop
            asyncio.run(main())
    finally:
        close_database(results_db)  # the pool's connections, not left to the process's exit
