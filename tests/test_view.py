"""`policy-evaluator view` against what an attacker sends (issue 21), over raw HTTP (tests/support/raw_http.py):
DATA_DIR's own files (the results database) are never served, a run directory serves only what a run writes,
nothing outside DATA_DIR is listed or served, and no request gets a 500 with a traceback (the server runs in
asyncio's debug mode, where aiohttp would write one into the body). The pages themselves, in a browser, are
tested in tests/test_scorecard.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from evaluator.scorecard import server as view_server
from evaluator.scorecard.server import application
from tests.support.raw_http import Answer, Served

DATABASE = b"SQLite format 3\x00 the results database of DATA_DIR"
OUTSIDE = b"a secret outside DATA_DIR"
RUN_FILES = {
    "report.json": b'{"simulation_suite": "smoke"}',
    "report.html": b"<html>the page of run1</html>",
    "episodes.parquet": b"PAR1 episodes PAR1",
    "sweep.json": b'{"run_name": "run1"}',
    "replays/000_ckpt/tiny_room_ep0.json.z": b"x\x9c a replay",
}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """run1 with every file a run writes and a few it never writes; the results database and its WAL files at
    the top; symlinks out of DATA_DIR, to DATA_DIR itself and to run1; a hidden run."""
    data, outside = tmp_path / "data", tmp_path / "outside"
    outside.mkdir()
    (outside / "report.json").write_text('{"simulation_suite": "outside-secret"}')
    (outside / "secret.json.z").write_bytes(OUTSIDE)
    (outside / "report.html").write_bytes(OUTSIDE)
    run = data / "run1"
    for relative, content in {
        **RUN_FILES,
        "notes.txt": b"not written by a run",
        ".report.json.x1y2.tmp": b"a temporary file",
        "replays/000_ckpt/notes.txt": b"not a replay",
    }.items():
        (run / relative).parent.mkdir(parents=True, exist_ok=True)
        (run / relative).write_bytes(content)
    (run / "replays" / "000_ckpt" / "leak_ep0.json.z").symlink_to(outside / "secret.json.z")
    for name in ("results.db", "results.db-wal", "results.db-shm"):
        (data / name).write_bytes(DATABASE)
    (data / "escape").symlink_to(outside)
    (data / "self").symlink_to(data)
    (data / "alias").symlink_to(run)
    (data / ".hidden").mkdir()
    (data / ".hidden" / "report.json").write_text('{"simulation_suite": "hidden-secret"}')
    page_out = data / "page_out"
    page_out.mkdir()
    (page_out / "report.json").write_text('{"simulation_suite": "smoke"}')
    (page_out / "report.html").symlink_to(outside / "report.html")
    return data


@pytest.fixture
def view(data_dir: Path) -> Iterator[Served]:
    """The server over data_dir, with no results database (the leaderboard's own tests are elsewhere)."""
    with Served(application(data_dir, f"sqlite:///{data_dir.parent / 'none' / 'results.db'}")) as served:
        yield served


def assert_refused(answer: Answer, target: object) -> None:
    """A 403 or 404 with a short plain-text body that leaks nothing."""
    assert answer.status in (403, 404), (target, answer.status, answer.body[:200])
    assert answer.headers["content-type"].startswith("text/plain"), (target, answer.headers)
    assert len(answer.body) < 400 and DATABASE not in answer.body and OUTSIDE not in answer.body, target


def assert_no_traceback(answer: Answer, target: object) -> None:
    """No 500, no traceback; an error's body is one short line."""
    assert answer.status != 500 and b"Traceback" not in answer.body, (target, answer.status, answer.body[:300])
    assert answer.status < 400 or len(answer.body) < 400, (target, answer.body[:300])


def test_the_data_directorys_own_files_are_never_served(view: Served):
    targets = [
        "/runs/./results.db",
        "/runs/./results.db-wal",
        "/runs/./results.db-shm",
        "/runs/%2E/results.db",
        "/runs/%2e/results.db-wal",
        "/runs/self/results.db",
        "/runs/self/run1/report.json",
        "/runs/run1/../results.db",
        "/runs/run1/..%2Fresults.db",
        "/runs/./run1/report.json",
        "/runs/../data/results.db",
    ]
    for target in targets:
        for method in (b"GET", b"HEAD"):
            answer = view.get(target, method=method)
            assert answer.status in (403, 404), (method, target, answer.status)
            if method == b"GET":
                assert_refused(answer, target)


def test_a_run_directory_serves_only_what_a_run_writes(view: Served):
    for relative, content in RUN_FILES.items():
        answer = view.get(f"/runs/run1/{relative}")
        assert (answer.status, answer.body) == (200, content), relative
    assert view.get("/runs/run1/").body == RUN_FILES["report.html"]
    assert view.get("/runs/alias/report.json").body == RUN_FILES["report.json"], "a symlink to a run inside DATA_DIR"
    for relative in (
        "notes.txt",
        ".report.json.x1y2.tmp",
        "replays/000_ckpt/notes.txt",
        "replays/000_ckpt/leak_ep0.json.z",
        "replays/000_ckpt",
        "replays/000_ckpt/",
        "replays/",
        "replays/000_ckpt/./tiny_room_ep0.json.z",
        "replays/000_ckpt//tiny_room_ep0.json.z",
        "./report.json",
        "report.json/",
    ):
        assert_refused(view.get(f"/runs/run1/{relative}"), relative)


def test_runs_outside_the_data_directory_are_neither_listed_nor_served(view: Served):
    index = view.get("/")
    assert index.status == 200
    assert "/runs/run1/" in index.text and "/runs/alias/" in index.text
    for hidden in ("outside-secret", "hidden-secret", "/runs/escape/", "/runs/.hidden/", "/runs/self/"):
        assert hidden not in index.text, hidden
    for target in (
        "/runs/escape/",
        "/runs/escape/report.json",
        "/runs/escape/report.html",
        "/runs/escape",
        "/runs/.hidden/",
        "/runs/.hidden/report.json",
        "/runs/self/",
        "/runs/self/report.json",
        "/runs/page_out/",
        "/runs/page_out/report.html",
        "/runs/..%2F..%2Fetc/passwd",
        "/runs/%2Fetc/passwd",
    ):
        assert_refused(view.get(target), target)


def test_over_long_and_odd_requests_get_a_short_4xx(view: Served):
    targets: list[str | bytes] = [
        "/runs/" + "a/" * 3000,  # 6,000 characters of short segments
        "/runs/" + "a" * 300 + "/",
        "/runs/" + "a" * 300 + "/report.json",
        "/runs/run1/replays/" + "c" * 300 + "/x_ep0.json.z",
        "/runs/run1/replays/000_ckpt/" + "d" * 300 + ".json.z",
        "/runs/" + "b" * 300,
        "/runs/%FF%FE/",
        "/runs/%FF%FE/report.json",
        "/runs/a%00b/report.json",
        "/runs/run1/report.json%00",
        "/runs/run1%5C..%5C/report.json",
        "/runs/%0D%0ASet-Cookie:%20x",
        "/runs/run1/%0D%0A",
        b"/runs/\xff\xfe/",
        b"/runs/run1/\xc3\x28",
        "/" + "x" * 7000,
    ]
    for target in targets:
        answer = view.get(target)
        assert_no_traceback(answer, target)
        assert "set-cookie" not in answer.headers, target
    for request in (
        b"GARBAGE\r\n\r\n",
        b"GET /runs/run1/ HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Odd: \xff\xfe\x80\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nX-Long: " + b"y" * 20_000 + b"\r\n\r\n",
    ):
        assert_no_traceback(view.request(request), request[:40])


def test_a_corrupt_results_database_is_a_note_and_a_503(data_dir: Path):
    with Served(application(data_dir, f"sqlite:///{data_dir / 'results.db'}")) as served:
        index = served.get("/")
        assert index.status == 200 and "run1" in index.text
        for target in ("/leaderboard", "/leaderboard?limit=%C2%B2", "/leaderboard?limit=" + "9" * 5000):
            answer = served.get(target)
            assert answer.status == 503 and answer.headers["content-type"].startswith("text/plain"), target
            assert_no_traceback(answer, target)


def test_runs_whose_files_are_odd_are_listed_without_error(data_dir: Path, view: Served):
    (data_dir / "odd").mkdir()
    (data_dir / "odd" / "report.json").write_bytes(b'{"simulation_suite": "\xff\xfe"}')
    (data_dir / "dir_report" / "report.json").mkdir(parents=True)
    index = view.get("/")
    assert index.status == 200 and "/runs/odd/" in index.text and "/runs/dir_report/" not in index.text
    assert_refused(view.get("/runs/dir_report/"), "dir_report")
    assert_refused(view.get("/runs/dir_report/report.json"), "dir_report/report.json")


def test_an_unexpected_error_is_a_plain_500_and_logged(
    view: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    def broken(*args: object) -> str:
        raise RuntimeError("a detail the client must not see")

    monkeypatch.setattr(view_server, "runs_page", broken)
    with caplog.at_level(logging.ERROR):
        answer = view.get("/", b"Accept: text/html")
    assert answer.status == 500 and answer.headers["content-type"].startswith("text/plain")
    assert b"Traceback" not in answer.body and b"detail" not in answer.body and len(answer.body) < 200
    logged = [r for r in caplog.records if r.exc_info and "a detail the client must not see" in str(r.exc_info[1])]
    assert logged, caplog.text
