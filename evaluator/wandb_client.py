"""W&B access shared by the wandb:// source and output: the API object and error translation.

The base URL comes from the wandb client's own configuration (WANDB_BASE_URL), read by wandb itself.
The API key is passed explicitly and never formatted into a message.
"""

from __future__ import annotations

from contextlib import contextmanager

from sim.errors import UsageError

API_TIMEOUT_S = 30


def require_key(api_key: str | None, uri: str) -> str:
    if not api_key:
        raise UsageError(f"{uri} needs W&B credentials: set WANDB_API_KEY (or pass --wandb-api-key)")
    return api_key


def api(api_key: str):
    import wandb

    with wandb_errors("W&B"):
        return wandb.Api(api_key=api_key, timeout=API_TIMEOUT_S)


@contextmanager
def wandb_errors(what: str):
    """Turn the client's exceptions into one-line UsageErrors naming `what`."""
    import requests
    import wandb.errors

    try:
        yield
    except wandb.errors.AuthenticationError:
        raise UsageError(f"W&B rejected the API key while accessing {what}; check WANDB_API_KEY") from None
    except wandb.errors.CommError as exc:
        raise UsageError(f"W&B request for {what} failed: {_first_line(exc)}") from None
    except requests.exceptions.RequestException as exc:
        raise UsageError(f"cannot reach W&B for {what}: {_first_line(exc)}; check WANDB_BASE_URL") from None
    except wandb.errors.Error as exc:
        raise UsageError(f"W&B error for {what}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
