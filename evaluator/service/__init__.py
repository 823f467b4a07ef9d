"""`policy-evaluator serve`: the webhook service. W&B Automations post "a new artifact version was created /
an alias was added"; the service authenticates the delivery, pins the artifact version, and submits one
evaluation job for it to the Ray cluster with a submission id derived from the version, so a repeated
delivery finds the job the first one created instead of starting another.

- `settings.py`  ServiceSettings: everything the service is configured with (built by the CLI from env vars).
- `webhook.py`   W&B's delivery shapes (pydantic), the shared-secret check (Bearer token or X-Wandb-Signature).
- `jobs.py`      Ray's JobSubmissionClient: submit (idempotent), status, and the report of a finished job.
- `metrics.py`   Prometheus metrics, one registry per app.
- `app.py`       the aiohttp application: routes, status codes, the thread pool for blocking calls.
"""

from evaluator.service.app import create_app, serve
from evaluator.service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app", "serve"]
