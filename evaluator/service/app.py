"""The aiohttp application of `policy-evaluator serve`.

Why aiohttp rather than FastAPI + uvicorn: ray[default] already installs it, at versions Ray's own dashboard
runs on, so the image gains no web stack; and this webhook must take the raw body before any parsing anyway
(the signature is an HMAC over the exact bytes, and an unauthenticated sender gets 401, never a validation
report), which removes FastAPI's main convenience, declarative body validation. Pydantic validates the body
once the sender is authenticated.

Routes:
- POST /webhooks/wandb  202 {job_id, ...} | 401 unauthenticated | 422 malformed or unknown version |
                        503 cluster (or W&B) unreachable, with Retry-After | 502 Ray refused the job
- GET /jobs/{job_id}    (Bearer secret) Ray's status; once ended, the report (OUTPUT_URI, else the job's logs)
- GET /healthz          the process answers
- GET /readyz           the Ray cluster's job API and the results database (when set) answer (503 otherwise)
- GET /metrics          Prometheus
Whatever is sent, the answer is one of these or aiohttp's own 400/404/405/413 (a request it cannot parse, a
body over max_body_bytes): header values that are not UTF-8 authenticate nobody (401), JSON nested past the
parser's recursion is malformed (422), a job id other than `JOB_ID` names no job (404); an exception that no
handler expected is a 500 `{"error": "internal error ..."}`, its traceback only in the log (evaluator.web_errors).
Blocking calls (Ray's job API goes through `requests`, W&B) run in a bounded thread pool, each under a timeout.
Every `outage_check_s` the app resubmits, once, the jobs of the service that exited 3 (an outage: jobs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from evaluator.secrets import redact_text, redact_url
from evaluator.service.jobs import (
    ArtifactNotFound,
    ClusterUnavailable,
    JobNotFound,
    RayJobs,
    SubmitRefused,
    WandbUnavailable,
    pin,
)
from evaluator.service.metrics import ServiceMetrics
from evaluator.service.settings import ServiceSettings
from evaluator.service.webhook import authentic, bearer, parse_delivery
from evaluator.web_errors import no_tracebacks
from sim.errors import ServiceUnavailable, validation_line

logger = logging.getLogger(__name__)

RETRY_AFTER_S = "30"
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
"""A job id GET /jobs/{job_id} asks Ray about (ours are `eval-<hex>[-retry]`, Ray's own `raysubmit_<...>`):
the id goes into a URL of Ray's job API and a path of OUTPUT_URI, so nothing else is ever passed on."""


@dataclass
class Service:
    settings: ServiceSettings
    jobs: RayJobs
    metrics: ServiceMetrics
    executor: ThreadPoolExecutor

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """`function(*args)` in the thread pool; TimeoutError after call_timeout_s."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, function, *args)
        return await asyncio.wait_for(future, self.settings.call_timeout_s)


SERVICE = web.AppKey("service", Service)


def create_app(settings: ServiceSettings, *, jobs: RayJobs | None = None) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes, middlewares=[no_tracebacks(_internal_error), _observe]
    )
    executor = ThreadPoolExecutor(max_workers=settings.blocking_threads, thread_name_prefix="blocking")
    app[SERVICE] = Service(settings, jobs or RayJobs(settings), ServiceMetrics(), executor)
    app.router.add_post("/webhooks/wandb", receive_wandb)
    app.router.add_get("/jobs/{job_id}", job_status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)

    async def stop_threads(app: web.Application) -> None:
        app[SERVICE].executor.shutdown(wait=False, cancel_futures=True)

    app.cleanup_ctx.append(_watch_outages)
    app.on_cleanup.append(stop_threads)
    return app


async def _watch_outages(app: web.Application) -> AsyncIterator[None]:
    """The app's background task, for as long as it serves: `resubmit_outages` every `outage_check_s`."""
    task = asyncio.create_task(_resubmit_outages(app[SERVICE]), name="resubmit-outages")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _resubmit_outages(service: Service) -> None:
    """Resubmit (once each) the jobs that exited 3; a cluster that cannot be asked is asked again next time."""
    while True:
        await asyncio.sleep(service.settings.outage_check_s)
        try:
            retried = await service.call(service.jobs.resubmit_outages)
        except (ClusterUnavailable, SubmitRefused, TimeoutError) as exc:
            logger.warning("could not look for jobs to resubmit: %s", str(exc) or "the Ray job API timed out")
            continue
        service.metrics.jobs_resubmitted.inc(len(retried))


def serve(settings: ServiceSettings) -> None:
    """Run until SIGINT/SIGTERM (aiohttp's graceful shutdown). The results database's schema is migrated
    first (an outage there stops the start with exit 3, like any other)."""
    logger.info("serving on %s:%d, Ray job API at %s", settings.host, settings.port, redact_url(settings.ray_address))
    if settings.results_db is not None:
        from evaluator.store.database import open_database

        open_database(settings.results_db.get_secret_value())
    web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None)


async def receive_wandb(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        body = await request.read()
    except web.RequestPayloadError:  # a Content-Encoding (gzip, deflate) its bytes are not
        return _error(400, "the body cannot be decoded as its Content-Encoding says")
    if not authentic(request.headers, body, service.settings.webhook_secret.get_secret_value()):
        return _refuse(
            service, 401, "unauthenticated", "missing or wrong bearer token / X-Wandb-Signature",
            {"WWW-Authenticate": 'Bearer realm="policy-evaluator"'},
        )  # fmt: skip
    try:
        delivery = parse_delivery(body)
    except ValidationError as exc:
        return _refuse(service, 422, "malformed", validation_line(exc, every=True, root="payload"))
    except ValueError as exc:
        return _refuse(service, 422, "malformed", str(exc))
    key = service.settings.wandb_api_key
    try:
        artifact = await service.call(pin, delivery.artifact, key.get_secret_value() if key else None)
    except ArtifactNotFound as exc:
        return _refuse(service, 422, "unknown_artifact", str(exc))
    except (WandbUnavailable, TimeoutError) as exc:
        return _refuse(service, 503, "wandb_unavailable", str(exc) or "W&B timed out", {"Retry-After": RETRY_AFTER_S})
    try:
        submission = await service.call(service.jobs.submit, artifact, delivery)
    except (ClusterUnavailable, TimeoutError) as exc:
        message = str(exc) or "the Ray job API timed out"
        return _refuse(service, 503, "cluster_unavailable", message, {"Retry-After": RETRY_AFTER_S})
    except SubmitRefused as exc:
        return _refuse(service, 502, "refused", str(exc))
    if submission.created:
        service.metrics.jobs_submitted.inc()
        logger.info("%s (%s by %s): job %s", artifact, delivery.event_type, delivery.event_author, submission.job_id)
    else:
        service.metrics.duplicates.inc()
    answer = {
        "job_id": submission.job_id,
        "artifact": str(artifact),
        "policy_uri": submission.policy_uri,
        "created": submission.created,
        "status_url": f"/jobs/{submission.job_id}",
    }
    return web.json_response(answer, status=202)


async def job_status(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    if not bearer(request.headers, service.settings.webhook_secret.get_secret_value()):
        return _error(401, "reports need the bearer token", {"WWW-Authenticate": 'Bearer realm="policy-evaluator"'})
    if not JOB_ID.fullmatch(request.match_info["job_id"]):
        return _error(404, "no such job: a job id is up to 128 letters, digits, '_', '.' and '-'")
    try:
        view = await service.call(service.jobs.view, request.match_info["job_id"])
    except JobNotFound:
        return _error(404, f"no job {request.match_info['job_id']} on the cluster")
    except (ClusterUnavailable, TimeoutError) as exc:
        return _error(503, str(exc) or "the Ray job API timed out", {"Retry-After": RETRY_AFTER_S})
    # Ray's message and the job's own output, relayed: every URL's secrets masked on the way out.
    return web.Response(text=redact_text(view.model_dump_json()), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        version = await service.call(service.jobs.check)
    except (ClusterUnavailable, TimeoutError) as exc:
        error = redact_text(str(exc)) or "the Ray job API timed out"
        return web.json_response({"ready": False, "error": error}, status=503)
    if service.settings.results_db is not None:
        try:
            await service.call(_database_answers, service.settings.results_db.get_secret_value())
        except (ServiceUnavailable, TimeoutError) as exc:
            error = redact_text(str(exc)) or "the results database timed out"
            return web.json_response({"ready": False, "error": error}, status=503)
    address = redact_url(service.settings.ray_address)
    return web.json_response({"ready": True, "ray_address": address, "jobs_api": version})


def _database_answers(url: str) -> None:
    from sqlalchemy import literal, select

    from evaluator.store.database import errors_of, open_database

    with errors_of(url, "checking readiness"), open_database(url).connect() as connection:
        connection.execute(select(literal(1)))


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[SERVICE].metrics.exposition(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


@web.middleware
async def _observe(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    """Count and time every request by its route template (never the raw path: job ids would explode the
    label set)."""
    service = request.app[SERVICE]
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # 404/405/413 raised by aiohttp itself
        status = exc.status
        raise
    finally:
        service.metrics.requests.labels(route, request.method, str(status)).inc()
        service.metrics.latency.labels(route).observe(time.perf_counter() - started)


def _refuse(
    service: Service, status: int, reason: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    service.metrics.failures.labels(reason).inc()
    logger.warning("delivery refused (%d %s): %s", status, reason, redact_text(message))
    return _error(status, message, headers, reason=reason)


def _internal_error() -> web.Response:
    """What `no_tracebacks` answers for an exception no handler expected (its traceback is logged)."""
    return web.json_response({"error": "internal error (logged by the service)"}, status=500)


def _error(status: int, message: str, headers: dict[str, str] | None = None, **extra: str) -> web.Response:
    return web.json_response({"error": redact_text(message), **extra}, status=status, headers=headers)
