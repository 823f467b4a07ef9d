"""An aiohttp application served on 127.0.0.1 by a thread, and requests sent as raw bytes: aiohttp's client and
`http.client` normalise or refuse what an attacker sends (`..` segments, control and non-UTF-8 bytes, header
values in odd encodings), so the tests of what the servers answer to anything write the bytes themselves."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
from dataclasses import dataclass

from aiohttp import web


class Served:
    """`app` served on a free port of 127.0.0.1 by a thread with its own event loop. With `debug` (the default)
    in asyncio's debug mode: there aiohttp writes the traceback of an unhandled exception into the 500's body,
    so a test that sees none knows no handler let one through. The listen backlog takes 512 connections at
    once (the service's concurrency tests)."""

    def __init__(self, app: web.Application, *, debug: bool = True) -> None:
        self.app = app
        self.debug = debug
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="served-app", daemon=True)
        self._ready = threading.Event()

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        loop.set_debug(self.debug)
        runner = web.AppRunner(self.app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=512)
        loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Served:
        self._thread.start()
        assert self._ready.wait(10), "the app did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def request(self, data: bytes) -> Answer:
        return raw_request(self.port, data)

    def get(self, target: str | bytes, *headers: bytes, method: bytes = b"GET", body: bytes = b"") -> Answer:
        """`METHOD target HTTP/1.1` with `target` as given (str: encoded as UTF-8, nothing escaped)."""
        raw_target = target.encode() if isinstance(target, str) else target
        lines = [method + b" " + raw_target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", *headers]
        if body:
            lines.append(b"Content-Length: %d" % len(body))
        return self.request(b"\r\n".join(lines) + b"\r\n\r\n" + body)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def raw_request(port: int, data: bytes) -> Answer:
    """Send `data` as is and read the answer until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock, method=data.split(b" ", 1)[0].decode("latin-1"))
        response.begin()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
