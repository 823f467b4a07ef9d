"""W&B access shared by the wandb:// source, the wandb:// output and the webhook service: the API object and
the translation of the client's exceptions into errors that say what to do.

The base URL comes from the wandb client's own configuration (WANDB_BASE_URL), read by wandb itself. The
API key is passed explicitly and never formatted into a message. Retries are the client's own (wandb-core
retries GraphQL requests, its download session retries 5xx answers); what still fails is classified here:
- the server answered that the key is wrong (HTTP 401/403): `KeyRejected`, a UsageError (exit 2);
- the server answered about the request (not found, denied): a UsageError naming it;
- the server could not be reached or kept failing: `ServiceUnavailable` (exit 3, retryable).
The client reports every failure of its login check as an authentication error, an unreachable server too
(wandb 0.31), so an authentication error without the server's 401 is diagnosed by asking the server
directly (`probe`): connection refused, host not found, timed out, a server error, or the key after all.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sim.errors import ServiceUnavailable, UsageError, first_line

if TYPE_CHECKING:
    from collections.abc import Iterator

API_TIMEOUT_S = 30
PROBE_TIMEOUT_S = 10
GAVE_UP = "giving up after"
"""How wandb-core (0.31) words a request it stopped retrying. Such a failure carries HTTP status 0, as does a
GraphQL error the server answered, so these words are the only tell; tests/test_wandb.py pins them against
the real client."""


class KeyRejected(UsageError):
    """W&B answered that the API key is not valid (HTTP 401/403)."""


def require_key(api_key: str | None, uri: str) -> str:
    if not api_key:
        raise UsageError(f"{uri} needs W&B credentials: set WANDB_API_KEY (or pass --wandb-api-key)")
    return api_key


def api(api_key: str, what: str = "W&B"):
    """A logged-in `wandb.Api`; its login check's failure says which of key, network or server is wrong."""
    import wandb

    with wandb_errors(what, api_key=api_key):
        return wandb.Api(api_key=api_key, timeout=API_TIMEOUT_S)


def base_url() -> str:
    """The server the client talks to, resolved as `wandb.Api` resolves it."""
    from wandb import env
    from wandb.sdk import wandb_setup

    return str(env.get_base_url(wandb_setup.singleton().settings.base_url)).rstrip("/")


@contextmanager
def wandb_errors(what: str, api_key: str | None = None) -> Iterator[None]:
    """Turn the client's exceptions while accessing `what` into one-line UsageErrors or ServiceUnavailable
    (see the module docstring); `api_key` lets an authentication failure be diagnosed by `probe`."""
    import requests
    import wandb.errors
    from wandb.sdk.lib.service.service_connection import WandbApiFailedError

    try:
        yield
    except wandb.errors.AuthenticationError as exc:
        raise _authentication_failure(exc, what, api_key) from None
    except wandb.errors.CommError as exc:
        raise _request_failure(exc.exc if isinstance(exc.exc, WandbApiFailedError) else exc, what) from None
    except WandbApiFailedError as exc:
        raise _request_failure(exc, what) from None
    except requests.HTTPError as exc:
        raise _http_failure(exc, what) from None
    except requests.RequestException as exc:  # refused, reset, cut off mid-download, timed out
        raise ServiceUnavailable(f"the connection to W&B failed while accessing {what}: {first_line(exc)}") from None
    except wandb.errors.Error as exc:
        raise UsageError(f"W&B error for {what}: {first_line(exc)}") from None


def _status(exc: BaseException) -> int:
    """The HTTP status wandb-core recorded for a failed request (0: none, or it gave up)."""
    response = getattr(exc, "response", None)
    return int(getattr(response, "http_status", 0) or 0)


def _cause(exc: BaseException) -> BaseException:
    """The client's own failure under a wrapper (`raise ... from`), where it says more."""
    return exc.__cause__ or exc.__context__ or exc


def _authentication_failure(exc: BaseException, what: str, api_key: str | None) -> Exception:
    if exc.__cause__ is None and exc.__context__ is None:  # the client refused the key itself (its format)
        return KeyRejected(f"W&B rejected the API key while accessing {what} ({first_line(exc)}); check WANDB_API_KEY")
    status = _status(_cause(exc))
    if status in (401, 403):
        return KeyRejected(f"W&B rejected the API key while accessing {what} (HTTP {status}); check WANDB_API_KEY")
    url = base_url()
    answer = probe(url, api_key)
    if answer in (401, 403):
        return KeyRejected(f"W&B at {url} rejected the API key while accessing {what}; check WANDB_API_KEY")
    return _outage(url, what, answer) or ServiceUnavailable(
        f"W&B at {url} could not check the API key while accessing {what} ({first_line(exc)}) but answers now; retry"
    )


def _request_failure(exc: BaseException, what: str) -> Exception:
    status = _status(exc)
    if status >= 500 or status == 429 or (status == 0 and GAVE_UP in str(exc)):
        url = base_url()
        return _outage(url, what, probe(url, None)) or ServiceUnavailable(
            f"W&B at {url} kept failing while accessing {what}: {first_line(exc)}; retry later"
        )
    return UsageError(f"W&B request for {what} failed: {first_line(exc)}")


def _outage(url: str, what: str, answer: int | str) -> ServiceUnavailable | None:
    """The outage a probe's answer shows (no connection, or a server error), or None: the server answers."""
    if isinstance(answer, str):
        return ServiceUnavailable(f"cannot reach W&B at {url} while accessing {what}: {answer}")
    if answer >= 500 or answer == 429:
        return ServiceUnavailable(f"W&B at {url} is failing (HTTP {answer}) while accessing {what}; retry later")
    return None


def _http_failure(exc, what: str) -> Exception:
    """A file download answered with an error status (after the client's retries of 5xx answers)."""
    status = exc.response.status_code if exc.response is not None else 0
    if status >= 500 or status == 429:
        return ServiceUnavailable(f"W&B storage failed while serving {what} (HTTP {status}); retry later")
    if status in (401, 403):
        return UsageError(f"W&B storage denied {what} (HTTP {status}); check the API key's access to it")
    return UsageError(f"W&B storage has no file for {what} (HTTP {status}); the artifact's files are gone")


def probe(url: str, api_key: str | None) -> int | str:
    """Ask the W&B server at `url` directly (one GraphQL `viewer` query, with the key when given): its HTTP
    status, or why no answer came: connection refused, host not found, timed out."""
    import requests

    auth = ("api", api_key) if api_key else None
    query = {"query": "query Viewer { viewer { id } }"}
    try:
        return requests.post(f"{url}/graphql", json=query, auth=auth, timeout=PROBE_TIMEOUT_S).status_code
    except requests.Timeout:
        return "timed out; check the network, or retry later"
    except requests.RequestException as exc:
        return _unreachable(exc)


def _unreachable(exc: BaseException) -> str:
    """What a failed connection met, from the first telling exception in its chain."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return "connection refused (nothing listens there); check WANDB_BASE_URL, or retry when W&B is up"
        if isinstance(current, socket.gaierror):
            return "host not found; check WANDB_BASE_URL"
        stack += [current.__cause__, current.__context__, getattr(current, "reason", None)]
        stack += [arg for arg in current.args if isinstance(arg, BaseException)]
    return f"{first_line(exc)}; check WANDB_BASE_URL, or retry later"
