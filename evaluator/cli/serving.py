"""`serve`: the webhook service, its own options, and the job options it forwards into every job's runtime_env
(the evaluation options' declarations: `JOB_OPTIONS`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from evaluator.cli.command import command
from evaluator.cli.option_sets import JOB_OPTIONS, job_environment, with_options
from evaluator.options import RayAddress, ResultsDb, WandbApiKey
from sim.errors import UsageError

WebhookSecret = Annotated[
    str | None,
    typer.Option(
        envvar="WEBHOOK_SECRET",
        show_default=False,
        help="Shared with W&B: the webhook's access token and/or signing secret (16+ characters).",
    ),
]
RayAuthToken = Annotated[
    str | None, typer.Option(envvar="RAY_AUTH_TOKEN", show_default=False, help="Ray's auth token for the job API.")
]
ServiceHost = Annotated[str, typer.Option(envvar="SERVICE_HOST", help="Address to listen on.")]
ServicePort = Annotated[int, typer.Option(envvar="SERVICE_PORT", min=0, max=65535, help="Port to listen on.")]
JobEntrypoint = Annotated[
    str | None, typer.Option(envvar="JOB_ENTRYPOINT", help="The command of each job (default: a lease-aware sweep).")
]
PolicyUriTemplate = Annotated[
    str | None,
    typer.Option(
        envvar="POLICY_URI_TEMPLATE",
        help="POLICY_URI of each job from {entity} {project} {name} {version} (default: wandb://...).",
    ),
]


@command()
@with_options(JOB_OPTIONS)
def serve(
    ray_address: RayAddress = None,
    webhook_secret: WebhookSecret = None,
    ray_auth_token: RayAuthToken = None,
    wandb_api_key: WandbApiKey = None,
    host: ServiceHost = "0.0.0.0",
    port: ServicePort = 8080,
    job_entrypoint: JobEntrypoint = None,
    policy_uri_template: PolicyUriTemplate = None,
    results_db: ResultsDb = None,
    **job: Any,
) -> None:
    """The webhook service: W&B Automations deliveries -> one evaluation job per artifact version on the Ray
    cluster (RAY_ADDRESS: its dashboard). Job options given here (or in their variables) go into every job's
    runtime_env; unset ones come from the Ray head's own environment; GET /jobs/{id} reads reports back from
    OUTPUT_URI. Secrets never go into a job's runtime_env."""
    from evaluator.service import ServiceSettings
    from evaluator.service import serve as run_service

    options: dict[str, object] = {
        "ray_address": ray_address,
        "webhook_secret": webhook_secret,
        "ray_auth_token": ray_auth_token,
        "wandb_api_key": wandb_api_key,
        "results_db": results_db,
        "host": host,
        "port": port,
        "job_env": job_environment(job),
        "output_uri": job["output_uri"],
        "job_entrypoint": job_entrypoint,
        "policy_uri_template": policy_uri_template,
    }
    if not ray_address or not webhook_secret:
        raise UsageError("serve needs RAY_ADDRESS (the dashboard URL) and WEBHOOK_SECRET")
    run_service(ServiceSettings.model_validate({k: v for k, v in options.items() if v is not None}))
