"""No name can change how report.html parses (issue 21): a checkpoint named `<!--<script>` swallowed the rest
of the page on main (page.js never ran: no heatmap, no charts, no player).

One real run whose every name that reaches the page is hostile: the checkpoint (a Metta-named bundle
directory), a broken checkpoint (its name and its error text), and the policy URIs (suite, environment and
run names admit no markup). The page is read back by Python's HTML parser (no element, comment or script the
page did not write) and opened in a real Chromium (the heatmap draws with the hostile labels, no dialog
opens, no console error)."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from evaluator.config import EvalConfig, Execution
from evaluator.run.driver import evaluate

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "policies" / "navigator_bc" / "ckpt_0004"
HOSTILE = "<!--<script>alert('ckpt')<script x=\"&amp;\">"
"""A checkpoint name (no `/`: it is a directory name): opens a comment, a script, an entity."""
HOSTILE_BROKEN = "<img src=x onerror=alert('broken')>&lt;<!--"
ENV = "room"
"""Suite, environment and run names may hold only letters, digits, `_`, `.` and `-`: no markup."""
HOSTILE_DIR = "<!--policies--><b onmouseover=alert('uri')>"
"""The policy URI's directory."""


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    policies = root / HOSTILE_DIR
    policies.mkdir()
    shutil.copytree(EXAMPLE, policies / f"{HOSTILE}:v1")
    (root / "broken").mkdir()
    (root / "broken" / f"{HOSTILE_BROKEN}.pt").write_bytes(b"not a checkpoint")
    suite = root / "suite.yaml"
    (root / "room.map").write_text("#####\n#@.n#\n#####\n")
    suite.write_text(
        json.dumps(
            {
                "name": "hostile",
                "seed": 0,
                "envs": [{"name": ENV, "map_file": "room.map", "max_steps": 10, "episodes": 1}],
            }
        )
    )
    config = EvalConfig(
        policy_uris=(str(policies), str(root / "broken")),
        checkpoints="all",
        suite=str(suite),
        episodes=1,
        reuse_results=False,
        data_dir=root / "data",
        run_name="hostile",
        execution=Execution.IN_PROCESS,
    )
    outcome = evaluate(config)
    assert len(outcome.failures) == 1, outcome.failures
    return root / "data" / "hostile"


class _Elements(HTMLParser):
    """Every start tag, comment and script body of a page, as the HTML parser reads them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.comments: list[str] = []
        self.scripts: dict[str, str] = {}
        self._script_id: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "script":
            self._script_id = dict(attrs).get("id") or f"script-{len(self.scripts)}"

    def handle_data(self, data: str) -> None:
        if self._script_id is not None:
            self.scripts[self._script_id] = self.scripts.get(self._script_id, "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script_id = None

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)


def test_hostile_names_cannot_change_how_the_page_parses(hostile_run: Path):
    page = (hostile_run / "report.html").read_text()
    parsed = _Elements()
    parsed.feed(page)
    assert parsed.comments == [], "no name may open a comment"
    assert "img" not in parsed.tags and "b" not in parsed.tags
    assert parsed.tags.count("script") == 5, "plotly, player, the two JSON blocks and page.js"
    data = json.loads(parsed.scripts["scorecard-data"])
    assert data["rows"] == [f"{HOSTILE}:v1", f"{HOSTILE_BROKEN}:v1"]
    assert data["envs"] == [ENV]
    figures = json.loads(parsed.scripts["scorecard-figures"])
    assert figures["heatmap"]["data"][0]["x"] == [ENV]
    for block in ("scorecard-data", "scorecard-figures"):
        assert not {"<", ">", "&"} & set(parsed.scripts[block]), f"{block} holds raw markup characters"


@pytest.mark.browser
def test_a_page_of_hostile_names_draws_and_runs_no_script_of_theirs(hostile_run: Path, browser_page):
    page = browser_page.page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto((hostile_run / "report.html").as_uri(), wait_until="load")
    page.wait_for_function("() => document.getElementById('heatmap')?.data !== undefined")
    labels, envs = page.evaluate("() => { const t = document.getElementById('heatmap').data[0]; return [t.y, t.x]; }")
    assert labels == [f"{HOSTILE}:v1", f"{HOSTILE_BROKEN}:v1"]
    assert envs == [ENV]
    assert page.evaluate("() => document.getElementById('environment-multiples')?.data !== undefined")
    assert HOSTILE_BROKEN in page.inner_text("#errors")
    page.mouse.move(10, 10)
    page.hover("h1")
    browser_page.screenshot("scorecard_hostile_names")
    assert dialogs == [], "a name ran as script"
    assert page.evaluate("() => document.querySelectorAll('img, b').length") == 0
    browser_page.assert_clean()
