"""The last line of defence of the two aiohttp servers (`view`, `serve`): an exception that no handler expected
becomes a plain 500 that says nothing about it, and its traceback goes to the log. aiohttp's own 500 would
carry the traceback in its body whenever the event loop runs in debug mode (PYTHONASYNCIODEBUG, `-X dev`).

Requests aiohttp cannot parse (a bad request line, an invalid header, a body over `client_max_size`) never
reach a handler: aiohttp answers them itself, 400/413 with a one-line reason and never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def no_tracebacks(
    answer: Callable[[], web.StreamResponse],
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """A middleware answering `answer()` (a 500) for any exception but aiohttp's HTTP ones, after logging it.
    List it first (outermost), so that it also catches what the other middlewares raise."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:  # an answer (404, 413, ...), raised by a handler or by aiohttp
            raise
        except Exception:  # noqa: BLE001 - the point: nothing unexpected reaches the client
            logger.exception("%s %.200r failed", request.method, request.raw_path)
            return answer()

    return middleware
