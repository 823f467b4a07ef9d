"""The replay player (evaluator/scorecard/assets/player.js) alone, in a real Chromium: a harness page opened
from file:// inlines the player and a replay just played by our runner, and every test checks that the page
logged no error and sent no request off the machine."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from sim.envs import episode_seed
from sim.policies import load_policy
from sim.runner import EpisodeJob, run_episodes
from sim.suites import get_suite
from tests.support.replays import read_replay

pytestmark = pytest.mark.browser

PLAYER_JS = Path(__file__).resolve().parents[1] / "evaluator" / "scorecard" / "assets" / "player.js"
READY = "() => window.player.state().ready"
FAILED = "() => window.player.state().error !== null"
CANVAS = "() => document.querySelector('[data-testid=replay-canvas]').toDataURL()"


@dataclass(frozen=True)
class Episode:
    replay: bytes
    rewards: tuple[float, ...]
    steps: int


@pytest.fixture(scope="module")
def episode() -> Episode:
    """`walls_4agents` of the navigation suite played by the scripted navigator: 4 agents, 200 steps, hearts
    collected from generators that disappear once emptied."""
    suite = get_suite("navigation")
    env = next(env for env in suite.envs if env.name == "walls_4agents")
    job = EpisodeJob(env, 0, episode_seed(suite.seed, env.name, 0), record_replay=True)
    result = run_episodes(load_policy("builtin://navigator", b""), [job])[0]
    assert result.replay is not None and sum(result.rewards) > 0
    return Episode(result.replay, result.rewards, read_replay(result.replay)["max_steps"])


def harness(directory: Path, source: str | None = None) -> str:
    """A page inlining the player (and `source`, loaded at once when given); its file:// URL."""
    load = f"window.player.load({json.dumps(source)}, {{title: 'walls_4agents'}});" if source else ""
    page = directory / "player.html"
    page.write_text(
        '<!doctype html><html><head><meta charset="utf-8"><title>player harness</title></head><body>\n'
        f'<div id="host"></div>\n<script>{PLAYER_JS.read_text()}</script>\n'
        f'<script>window.player = ReplayPlayer.mount(document.getElementById("host"));\n{load}</script>\n'
        "</body></html>\n"
    )
    return page.as_uri()


def embedded(replay: bytes) -> str:
    return "base64:" + base64.b64encode(replay).decode("ascii")


@pytest.fixture
def loaded(browser_page, episode: Episode, tmp_path: Path):
    """The harness with the episode's replay embedded, loaded and ready."""
    browser_page.page.goto(harness(tmp_path, embedded(episode.replay)))
    browser_page.page.wait_for_function(READY)
    return browser_page


def state(page) -> dict:
    return page.page.evaluate("() => window.player.state()")


def test_player_draws_and_plays_a_real_replay(loaded, episode: Episode):
    page = loaded.page
    assert state(loaded)["maxStep"] == episode.steps - 1
    assert page.get_by_test_id("replay-step").inner_text() == f"step 0 / {episode.steps - 1}"
    size = page.evaluate("() => { const c = document.querySelector('canvas'); return [c.width, c.style.width]; }")
    assert size[0] == 2 * int(size[1].removesuffix("px"))  # backing store at devicePixelRatio 2: crisp
    first = page.evaluate(CANVAS)
    page.evaluate("() => window.player.seek(20)")
    assert page.evaluate(CANVAS) != first

    page.evaluate("() => window.player.seek(0)")
    page.get_by_test_id("replay-play").click()
    page.wait_for_timeout(400)
    playing = state(loaded)
    assert playing["playing"] and playing["step"] > 0
    assert page.evaluate(CANVAS) != first
    page.get_by_test_id("replay-play").click()
    assert not state(loaded)["playing"]
    assert page.get_by_test_id("replay-mettascope").is_hidden()  # not an http(s) source
    loaded.assert_clean()


def test_slider_and_keys_move_the_step(loaded, episode: Episode):
    page, last = loaded.page, episode.steps - 1
    page.get_by_test_id("replay-player").focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    assert state(loaded)["step"] == 3
    page.keyboard.press("ArrowLeft")
    assert state(loaded)["step"] == 2
    page.keyboard.press("End")
    assert state(loaded)["step"] == last
    page.keyboard.press("Home")
    assert state(loaded)["step"] == 0
    page.keyboard.press("Space")
    assert state(loaded)["playing"]
    page.keyboard.press("Space")
    assert not state(loaded)["playing"]

    page.locator("input[type=range]").fill("57")
    assert state(loaded)["step"] == 57
    assert page.get_by_test_id("replay-step").inner_text() == f"step 57 / {last}"
    page.locator("input[type=range]").press("ArrowRight")  # the slider's own keys, not counted twice
    assert state(loaded)["step"] == 58
    loaded.assert_clean()


def test_total_reward_at_the_last_step_is_the_episodes(loaded, episode: Episode):
    page = loaded.page
    page.evaluate("() => window.player.seek(0)")
    assert state(loaded)["totalReward"] < sum(episode.rewards)  # step 0 is after the first action: maybe 1
    page.evaluate(f"() => window.player.seek({episode.steps - 1})")
    final = state(loaded)
    total = sum(episode.rewards)
    assert final["totalReward"] == pytest.approx(total, abs=1e-6)
    assert final["agentRewards"] == pytest.approx(list(episode.rewards), abs=1e-6)
    text = page.get_by_test_id("replay-reward").inner_text()
    assert text.startswith(f"reward {total:.2f} (agent 0: {episode.rewards[0]:.2f}, agent 1:")
    loaded.assert_clean()


def test_removed_objects_are_not_drawn(loaded, episode: Episode):
    """A generator emptied at step k (its `alive` series turns false) is red at k-1 and gone at k."""
    data = read_replay(episode.replay)
    generator = next(o for o in data["objects"] if o["type_name"] == "generator_red" and isinstance(o["alive"], list))
    gone = next(step for step, alive in generator["alive"] if alive is False)
    x, y = generator["location"]
    width = data["map_size"][0]
    pixel = f"""() => {{
        const c = document.querySelector('canvas'), cell = c.width / {width};
        return Array.from(c.getContext('2d').getImageData(({x} + 0.2) * cell, ({y} + 0.8) * cell, 1, 1).data);
    }}"""
    loaded.page.evaluate(f"() => window.player.seek({gone - 1})")
    before = loaded.page.evaluate(pixel)
    loaded.page.evaluate(f"() => window.player.seek({gone})")
    after = loaded.page.evaluate(pixel)
    assert before[0] > 180 and before[1] < 100, before  # generator_red's colour
    assert not (after[0] > 180 and after[1] < 100), after
    loaded.assert_clean()


def test_screenshots(loaded, episode: Episode):
    """For a person to look at: mid-episode, and early on (generators not yet emptied)."""
    for name, step in (("replay_player_mid_episode", episode.steps // 2), ("replay_player_early", 8)):
        loaded.page.evaluate(f"() => window.player.seek({step})")
        assert loaded.screenshot(name, "[data-testid=replay-player]").stat().st_size > 10_000
    loaded.assert_clean()


@pytest.mark.parametrize(
    ("replay", "message"),
    [
        (b"this is not a replay", "not a compressed replay"),
        (zlib.compress(b"{not json"), "not valid JSON"),
        (zlib.compress(json.dumps({"version": 3}).encode()), "unsupported replay format version 3"),
    ],
)
def test_a_broken_replay_shows_an_error(browser_page, tmp_path: Path, replay: bytes, message: str):
    browser_page.page.goto(harness(tmp_path, embedded(replay)))
    browser_page.page.wait_for_function(FAILED)
    error = browser_page.page.get_by_test_id("replay-error")
    assert error.is_visible() and message in error.inner_text()
    assert not state(browser_page)["ready"]
    browser_page.assert_clean()


def test_a_replay_sent_by_a_server_links_to_mettascope(browser_page, episode: Episode, tmp_path: Path):
    with serving({"/replays/000_navigator/walls_4agents_ep0.json.z": episode.replay}) as base:
        url = f"{base}/replays/000_navigator/walls_4agents_ep0.json.z"
        browser_page.allow_origin(base)
        browser_page.page.goto(harness(tmp_path))
        browser_page.page.evaluate("url => window.player.load(url)", url)
        browser_page.page.wait_for_function(READY)
    link = browser_page.page.get_by_test_id("replay-mettascope")
    assert link.is_visible() and link.inner_text() == "Open in MettaScope"
    expected = "https://metta-ai.github.io/metta/mettascope/mettascope.html?replay=" + _quote(url)
    assert link.get_attribute("href") == expected
    assert browser_page.page.get_by_test_id("replay-title").inner_text() == "walls_4agents_ep0.json.z"
    browser_page.assert_clean()


def test_requests_off_the_machine_are_blocked_and_reported(browser_page, tmp_path: Path):
    """The guard itself: a source on another host is aborted, recorded, and the player says it cannot fetch."""
    browser_page.page.goto(harness(tmp_path))
    browser_page.page.evaluate("() => window.player.load('https://replays.example.com/a.json.z')")
    browser_page.page.wait_for_function(FAILED)
    assert browser_page.blocked_requests == ["https://replays.example.com/a.json.z"]
    assert "could not fetch" in browser_page.page.get_by_test_id("replay-error").inner_text()


def test_close_removes_the_player(loaded):
    loaded.page.evaluate("() => { window.player.play(); window.player.close(); }")
    loaded.page.wait_for_timeout(200)
    assert loaded.page.evaluate("() => document.getElementById('host').children.length") == 0
    loaded.assert_clean()


def _quote(url: str) -> str:
    return quote(url, safe="-_.!~*'()")  # what JavaScript's encodeURIComponent leaves alone


@contextlib.contextmanager
def serving(files: dict[str, bytes]) -> Iterator[str]:
    """A tiny HTTP server on 127.0.0.1 answering `files` (with CORS, as the page is on file://); its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
