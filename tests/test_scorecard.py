"""The scorecard page (report.html) and `policy-evaluator view`: pure parts without a browser, then a real
evaluation opened in a real Chromium (Debian's, through Playwright) from `file://` and through the server.

Screenshots go to the artefacts directory (tests/support/browser.py).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from aiohttp import web

from evaluator.config import EvalConfig
from evaluator.reduce.report import CheckpointReport, Report
from evaluator.run.driver import evaluate
from evaluator.scorecard.page import local_replay, replay_refs
from evaluator.scorecard.rows import RowCollector, row_of, rows_of
from evaluator.scorecard.server import run_directory, served_file
from evaluator.store.queries import leaderboard
from tests.support.view import running_view

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "policies"
VENV_BIN = Path(sys.executable).parent


def checkpoint(name: str, version: str, replays: dict[str, str] | None = None) -> CheckpointReport:
    return CheckpointReport(name=name, uri=f"file:///{name}", version=version, digest="sha256:0", replays=replays or {})


def test_rows_get_unique_labels_in_report_order():
    collector = RowCollector("smoke")
    listed = [checkpoint("a", "v1"), checkpoint("a", "v1"), checkpoint("b", "v2")]
    passed = list(collector.collecting("p", listed))
    assert passed == listed  # the streamed report sees the same checkpoints
    assert [r.label for r in collector.finished()] == ["a:v1 #1", "a:v1 #2", "b:v2"]
    assert [r.position for r in collector.rows] == [1, 2, 3]


def test_replays_are_embedded_within_the_budget_then_linked(tmp_path: Path):
    run_dir = tmp_path / "run"
    replays = run_dir / "replays" / "000_a"
    replays.mkdir(parents=True)
    for env in ("e1", "e2"):
        (replays / f"{env}_ep0.json.z").write_bytes(b"x" * 100)
    urls = {env: (replays / f"{env}_ep0.json.z").as_uri() for env in ("e1", "e2")}
    row = row_of("p", 1, checkpoint("a", "v1", urls), "smoke")
    [[first, second, missing]] = replay_refs([row], ["e1", "e2", "e3"], run_dir, budget=150)
    assert first is not None and first["src"].startswith("base64:")
    assert second == {"url": "replays/000_a/e2_ep0.json.z"}, "over budget: linked relative to the page"
    assert missing is None
    delivered = "s3://bucket/evals/run/replays/000_a/e1_ep0.json.z"
    assert local_replay(delivered, run_dir) == replays / "e1_ep0.json.z", "a delivered URL maps to the local copy"
    [[http_ref]] = replay_refs(
        [row_of("p", 1, checkpoint("a", "v1", {"e1": "https://h/x/replays/000_a/e1_ep0.json.z"}), "smoke")],
        ["e1"],
        run_dir,
        budget=0,
    )
    mettascope = "https://h/x/replays/000_a/e1_ep0.json.z"
    assert http_ref == {"url": "replays/000_a/e1_ep0.json.z", "mettascope": mettascope}, "the local copy, linked"


def test_paths_outside_the_data_directory_are_refused(tmp_path: Path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "report.json").write_text("{}")
    (tmp_path / "run" / "escape").symlink_to("/etc")
    (tmp_path / "out").symlink_to("/etc")
    run = run_directory(tmp_path, "run")
    assert served_file(run, "report.json") == (tmp_path / "run" / "report.json").resolve()
    for bad in ("..", ".", "/etc", "run\\..\\x", "a\x00b", "out"):
        with pytest.raises(web.HTTPForbidden):
            run_directory(tmp_path, bad)
    for bad in ("../x", "../../x", "escape/../report.json", "report.json\x00"):
        with pytest.raises(web.HTTPForbidden):
            served_file(run, bad)
    for absent in ("escape/passwd", "escape", "notes.txt", "/etc/passwd", "replays/"):  # not written by a run
        with pytest.raises(web.HTTPNotFound):
            served_file(run, absent)


# -- a real evaluation, in a real browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Report]:
    """Four MLP checkpoints and a random baseline on the smoke suite, in process, with replays; run twice
    (two runs for the leaderboard)."""
    data_dir = tmp_path_factory.mktemp("data")
    for run_name, episodes in (("first", 3), ("page", 4)):
        config = EvalConfig(
            policy_uris=(str(EXAMPLES / "navigator_bc"), "builtin://random"),
            checkpoints="all",
            suite="smoke",
            episodes=episodes,
            data_dir=data_dir,
            run_name=run_name,
        )
        outcome = evaluate(config)
        assert not outcome.failed, outcome.failures
    return data_dir, outcome.report


def test_every_run_writes_its_page_and_the_report_links_each_replay(evaluated):
    data_dir, report = evaluated
    assert (data_dir / "page" / "report.html").is_file()
    for policy in report.policies:
        for ckpt in policy.checkpoints:
            assert set(ckpt.replays) == {"tiny_room", "tiny_random"}
            assert ckpt.replay_url == ckpt.replays["tiny_room"]


def test_leaderboard_ranks_each_suite_and_environment_across_runs(evaluated):
    data_dir, report = evaluated
    board = leaderboard(f"sqlite:///{(data_dir / 'results.db').resolve()}", limit=3)
    best = board.suites["smoke"]
    assert [r.rank for r in best] == [1, 2, 3]
    scores = {c.digest: c.metrics.suite_scores["smoke/score"] for p in report.policies for c in p.checkpoints}
    assert best[0].score == pytest.approx(max(scores.values()))
    assert best[0].run == "page", "a digest is worth its latest run"
    assert {leaders.env for leaders in board.environments} == {"tiny_room", "tiny_random"}


def cell_centre(page, row: int, column: int) -> tuple[float, float]:
    """Viewport coordinates of a heatmap cell's centre, from plotly's own axes (category axes: index)."""
    return page.evaluate(
        """([row, column]) => {
            const gd = document.getElementById('heatmap'), layout = gd._fullLayout;
            const box = gd.getBoundingClientRect(), size = layout._size;
            return [box.left + size.l + layout.xaxis.l2p(column), box.top + size.t + layout.yaxis.l2p(row)];
        }""",
        [row, column],
    )


def episode_reward(data_dir: Path, checkpoint_name: str, version: str, env: str) -> float:
    table = pq.read_table(data_dir / "page" / "episodes.parquet").to_pylist()
    [row] = [
        r
        for r in table
        if (r["checkpoint"], r["version"], r["env"], r["episode"]) == (checkpoint_name, version, env, 0)
    ]
    return float(sum(row["rewards"]))


@pytest.mark.slow
@pytest.mark.browser
def test_page_opens_offline_and_plays_the_clicked_cells_replay(evaluated, browser_page):
    data_dir, report = evaluated
    page = browser_page.page
    started = time.perf_counter()
    page.goto((data_dir / "page" / "report.html").as_uri(), wait_until="load")
    page.wait_for_function("() => document.getElementById('heatmap')?.data !== undefined")
    print(
        f"report.html: {(data_dir / 'page' / 'report.html').stat().st_size / 1e6:.2f} MB, "
        f"loaded and drawn in {time.perf_counter() - started:.2f} s"
    )

    heat = page.evaluate("() => { const t = document.getElementById('heatmap').data[0]; return [t.y, t.x, t.z]; }")
    labels, envs, z = heat
    checkpoints = [c for p in report.policies for c in p.checkpoints]
    assert labels == [f"{c.name}:{c.version}" for c in checkpoints]
    assert envs == ["tiny_room", "tiny_random"]
    assert z == [[c.metrics.environments[env].score for env in envs] for c in checkpoints]
    browser_page.screenshot("scorecard_page_full")

    row, column = 3, 0  # ckpt_0004 on tiny_room
    x, y = cell_centre(page, row, column)
    page.mouse.click(x, y)
    page.wait_for_function("() => window.scorecard.player.state().ready")
    assert page.get_attribute("#player", "data-cell") == f"{row},{column}"
    canvas = "() => document.querySelector('[data-testid=replay-canvas]').toDataURL()"
    before = page.evaluate(canvas)
    page.evaluate("() => window.scorecard.player.seek(5)")
    assert page.evaluate(canvas) != before, "the canvas must change as the player advances"
    browser_page.screenshot("scorecard_replay_step5", "#player")

    last = page.evaluate("() => window.scorecard.player.state().maxStep")
    page.evaluate(f"() => window.scorecard.player.seek({last})")
    state = page.evaluate("() => window.scorecard.player.state()")
    expected = episode_reward(data_dir, checkpoints[row].name, checkpoints[row].version, envs[column])
    assert state["totalReward"] == pytest.approx(expected, abs=1e-6)
    assert f"{expected:.2f}" in page.inner_text("[data-testid=replay-reward]")
    browser_page.screenshot("scorecard_replay_end", "#player")
    browser_page.assert_clean()


@pytest.fixture
def view_server(evaluated) -> tuple[str, Path]:
    data_dir, _ = evaluated
    with running_view(data_dir) as view:
        yield view.url, data_dir


def raw_get(base: str, path: str) -> tuple[int, bytes]:
    """A GET with the path sent as is (no client-side normalisation of `..`)."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read()


@pytest.mark.slow
@pytest.mark.browser
def test_view_serves_runs_pages_replays_and_leaderboard_and_refuses_escapes(view_server, browser_page):
    base, data_dir = view_server
    browser_page.allow_origin(base)
    page = browser_page.page
    page.goto(base + "/")
    assert page.locator("a", has_text="page").count() >= 1 and page.locator("a", has_text="first").count() >= 1
    page.click("text=page")
    page.wait_for_url(base + "/runs/page/")
    page.wait_for_function("() => document.getElementById('heatmap')?.data !== undefined")
    assert page.url == base + "/runs/page/"
    page.evaluate("() => window.scorecard.openReplay(0, 1)")
    page.wait_for_function("() => window.scorecard.player.state().ready")
    page.goto(base + "/leaderboard")
    assert "tiny_random" in page.inner_text("body") and "ckpt_000" in page.inner_text("body")
    browser_page.screenshot("view_leaderboard")
    browser_page.assert_clean()

    # The second run reused the first one's stored episodes: its replays are linked where they are, in `first`.
    replay = next((data_dir / "first" / "replays").rglob("*.json.z"))
    status, body = raw_get(base, "/runs/" + replay.relative_to(data_dir).as_posix())
    assert status == 200 and body == replay.read_bytes()
    assert raw_get(base, "/runs/first/replays/")[0] == 404, "a directory is not listed"

    # A page whose replays are linked, not embedded (over the budget): the player fetches them from the server,
    # here from the first run's directory (`../first/replays/...`), since the second reused its episodes.
    from evaluator.scorecard.page import render_page

    linked = data_dir / "linked"
    linked.mkdir()
    (linked / "report.json").write_bytes((data_dir / "page" / "report.json").read_bytes())
    report = Report.model_validate_json((linked / "report.json").read_bytes())
    rows, envs = rows_of(report)
    (linked / "report.html").write_text(render_page(report, rows, envs, linked, embed_budget_bytes=0))
    assert '"src":"base64:' not in (linked / "report.html").read_text()
    page.goto(base + "/runs/linked/")
    page.wait_for_function("() => document.getElementById('heatmap')?.data !== undefined")
    page.evaluate("() => window.scorecard.openReplay(2, 1)")
    page.wait_for_function("() => window.scorecard.player.state().ready")
    assert page.evaluate("() => window.scorecard.player.state().error") is None
    assert page.evaluate("() => window.scorecard.data.replays[2][1].url").startswith("../first/replays/")
    browser_page.assert_clean()
    assert json.loads(raw_get(base, "/runs/page/report.json")[1])["run_name"] == "page"
    for escape in ("/runs/page/../../../etc/passwd", "/runs/..%2F..%2Fetc/passwd", "/runs/%2Fetc/passwd"):
        status, body = raw_get(base, escape)
        assert status == 403 and b"refused" in body, escape
    connection = http.client.HTTPConnection(*base.removeprefix("http://").split(":"), timeout=10)
    connection.request("POST", "/runs/page/")
    assert connection.getresponse().status == 405, "read-only"


def test_rows_of_a_report_in_memory_match_the_streamed_ones(evaluated):
    _, report = evaluated
    rows, envs = rows_of(report)
    assert envs == ["tiny_room", "tiny_random"]
    assert [r.suite_score for r in rows] == [
        c.metrics.suite_scores["smoke/score"] for p in report.policies for c in p.checkpoints
    ]


def test_view_refuses_a_missing_data_directory(tmp_path: Path):
    done = subprocess.run(
        [str(VENV_BIN / "policy-evaluator"), "view", str(tmp_path / "nowhere")], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "no data directory" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_long_policies_are_drawn_as_plain_lines():
    """Markers and error bars are one SVG element each: beyond MAX_MARKED_POINTS checkpoints a policy's curves
    are lines only (10,000 checkpoints x 20 environments did not load in 30 s with them, 3.2 s without)."""
    from evaluator.scorecard.figures import MAX_MARKED_POINTS, environment_multiples, suite_curve
    from evaluator.scorecard.rows import Cell, Row

    def rows(count: int, policy: str) -> list[Row]:
        cell = Cell(1.0, (0.5, 1.5), 8, 0.5)
        return [
            Row(f"{policy}:v{i}", policy, i + 1, "u", None, 1.0, (0.5, 1.5), {"e": cell}, [], {}) for i in range(count)
        ]

    both = rows(4, "short") + rows(MAX_MARKED_POINTS + 1, "long")
    modes = {t.name: t.mode for t in suite_curve("s", both).data if t.name}
    assert modes == {"short": "lines+markers", "long": "lines"}
    by_policy = {t.name: t for t in environment_multiples(both, ["e"]).data}
    assert by_policy["short"].error_y.visible is not False and by_policy["long"].error_y.visible is False
