"""A real Chromium for tests, through Playwright's sync API.

Playwright cannot download its own browsers here, so it drives the system's Chromium (Debian's `chromium`
package; the Makefile installs it) through `executable_path`. Every page is watched: console errors and
uncaught page errors are recorded, and any request that would leave the machine (anything but `file:`,
`data:`, `blob:`, `about:` and the origins a test allows, such as a server of its own on 127.0.0.1) is
recorded and aborted, so a test can assert that a page works offline and silently.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Route

REPO = Path(__file__).resolve().parents[2]
LOCAL_SCHEMES = frozenset({"file", "data", "blob", "about"})


def chromium_path() -> str | None:
    """The system Chromium's executable, or None when none is installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def artifacts_dir() -> Path:
    """Where tests leave screenshots: `TEST_ARTIFACTS_DIR`, by default `<repo>/test-artifacts`."""
    directory = Path(os.environ.get("TEST_ARTIFACTS_DIR") or REPO / "test-artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def launch_chromium(playwright: Playwright, executable: str) -> Browser:
    # --no-sandbox: Chromium's sandbox refuses to start as root (containers, CI).
    return playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class WatchedPage:
    """A Playwright page plus what it did that a test may want to forbid."""

    page: Page
    artifacts: Path
    allowed_origins: set[str] = field(default_factory=set)
    """Origins (`http://127.0.0.1:8000`) that requests may reach; everything else non-local is aborted."""
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    blocked_requests: list[str] = field(default_factory=list)
    """URLs of requests that tried to leave the page (not local, not to an allowed origin)."""

    def allow_origin(self, url: str) -> None:
        self.allowed_origins.add(origin(url))

    def screenshot(self, name: str, selector: str | None = None) -> Path:
        """Save a PNG of the page (or of the element at `selector`) into the artefacts directory."""
        path = self.artifacts / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
        target = self.page.locator(selector) if selector else self.page
        target.screenshot(path=str(path))
        return path

    def problems(self) -> list[str]:
        return (
            [f"console error: {m}" for m in self.console_errors]
            + [f"page error: {m}" for m in self.page_errors]
            + [f"request left the page: {u}" for u in self.blocked_requests]
        )

    def assert_clean(self) -> None:
        """No console error, no uncaught error, no request that left the page."""
        assert not self.problems(), "\n".join(self.problems())

    def _is_allowed(self, url: str) -> bool:
        scheme = urlsplit(url).scheme
        return scheme in LOCAL_SCHEMES or origin(url) in self.allowed_origins

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.text} ({message.location.get('url', '')})")

    def _record(self, url: str) -> None:
        if not self._is_allowed(url):
            self.blocked_requests.append(url)

    def _route(self, route: Route) -> None:
        if self._is_allowed(route.request.url):
            route.continue_()
        else:
            route.abort()


@contextlib.contextmanager
def browser_page(
    browser: Browser, artifacts: Path | None = None, allowed_origins: tuple[str, ...] = ()
) -> Iterator[WatchedPage]:
    """A fresh context and page on `browser`, watched (see `WatchedPage`), closed afterwards."""
    context = browser.new_context(viewport={"width": 1000, "height": 900}, device_scale_factor=2)
    watched = WatchedPage(context.new_page(), artifacts or artifacts_dir(), {origin(u) for u in allowed_origins})
    watched.page.on("console", watched._on_console)
    watched.page.on("pageerror", lambda error: watched.page_errors.append(str(error)))
    watched.page.on("request", lambda request: watched._record(request.url))
    watched.page.on("websocket", lambda socket: watched._record(socket.url))  # sockets are not routed
    context.route("**/*", watched._route)
    try:
        yield watched
    finally:
        context.close()
