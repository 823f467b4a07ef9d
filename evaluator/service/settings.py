"""`ServiceSettings`: what the webhook service runs with, validated once (the CLI builds it from options and
their environment variables; nothing in the service reads os.environ)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from evaluator.secrets import SECRET_VARIABLES

DEFAULT_ENTRYPOINT = "policy-evaluator sweep --markers --no-progress --include-cached --wait-for-leases 3600"
"""The job a delivery starts. `sweep` (not `entrypoint`) so that a webhook job and the nightly sweep never
evaluate the same checkpoint twice: it takes the checkpoint's lease in the results database, waits up to an hour for a
sweep that holds it, and reports from the results database when the checkpoint is already evaluated."""

DEFAULT_POLICY_URI = "wandb://{entity}/{project}/{name}:{version}"
"""POLICY_URI of the job, from the pinned artifact version's parts."""


class ServiceSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ray_address: str = Field(pattern=r"^https?://")
    """The Ray cluster's dashboard (job API), e.g. http://policy-evaluator-head-svc:8265."""
    webhook_secret: SecretStr
    """Shared with W&B: the webhook's access token (sent as `Authorization: Bearer`) and/or its secret (the
    key of the `X-Wandb-Signature` HMAC)."""
    ray_auth_token: SecretStr | None = None
    """Ray's token (RAY_AUTH_TOKEN); the job API refuses requests without it when token auth is on."""
    wandb_api_key: SecretStr | None = None
    """Only to pin a delivery that names an alias (`:best`) to the version it points at now."""
    results_db: SecretStr | None = None
    """The results database the jobs record into (RESULTS_DB_URL; jobs get it from the Ray head's Secret, never
    from a runtime_env). The service migrates its schema when it starts, so concurrent jobs never race to, and
    /readyz reports whether it answers."""
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    job_entrypoint: str = DEFAULT_ENTRYPOINT
    policy_uri_template: str = DEFAULT_POLICY_URI
    job_env: dict[str, str] = Field(default_factory=dict)
    """Non-secret variables every job gets in its runtime_env: those of the job options given to `serve`
    (`evaluator.cli.option_sets.JOB_OPTIONS`; SIMULATION_SUITE, DATA_DIR, OUTPUT_URI, ...).
    Secrets never go there: Ray keeps the runtime_env in the job's record, readable through the job API.
    Jobs get WANDB_API_KEY from the Ray head's own environment (a Kubernetes Secret)."""
    output_uri: str | None = None
    """Where jobs deliver their reports (a path, file:// or s3://): GET /jobs/{id} reads the report there
    first, then from the job's logs."""
    blocking_threads: int = Field(default=8, ge=1, le=64)
    """Threads for blocking calls (Ray's job API, W&B): at most this many run at once."""
    call_timeout_s: float = Field(default=30.0, gt=0)
    """A call to Ray or W&B that takes longer is answered 503 (W&B retries; the submission id is the same)."""
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    outage_check_s: float = Field(default=60.0, gt=0)
    """How often the service looks for its jobs that exited 3 (an outage) to resubmit them, once each."""

    @field_validator("webhook_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("the webhook secret must have at least 16 characters (openssl rand -hex 32)")
        return value

    @field_validator("job_env")
    @classmethod
    def _no_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        leaked = sorted(set(value) & set(SECRET_VARIABLES))
        if leaked:
            raise ValueError(f"{', '.join(leaked)} must not go into a job's runtime_env (Ray shows it to anyone)")
        return value

    @field_validator("policy_uri_template")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        try:
            value.format(entity="e", project="p", name="n", version="v0")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"policy URI template {value!r} may use only {{entity}}, {{project}}, {{name}}, {{version}} ({exc})"
            ) from None
        return value
