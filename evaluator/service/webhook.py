"""W&B Automations webhook deliveries: who sent them, and which artifact version they name.

W&B sends the payload the automation's author wrote, with its template variables filled in (docs.wandb.ai,
"Create a webhook automation", payload variables): `${event_type}` (`CREATE_ARTIFACT`, `ADD_ARTIFACT_ALIAS`,
`LINK_ARTIFACT`, ...), `${event_author}`, `${artifact_version}` (`wandb-artifact://_id/<id>`),
`${artifact_version_string}` (`<entity>/<project>/<name>:<version or alias>`), `${artifact_collection_name}`,
`${project_name}`, `${entity_name}`, `${alias}` (blank unless an alias was added). Accepted shapes: those
variables as top-level keys, or inside `client_payload` (the GitHub repository-dispatch example of W&B's
docs, whose top-level `event_type` is a literal). `artifact_version_string` is required, or else
`entity_name`, `project_name`, `artifact_collection_name` and `alias` to build it from.

Authentication (the same docs, "Troubleshoot your webhook"): W&B sends the webhook's access token as
`Authorization: Bearer <token>` and, when the webhook has a secret, `X-Wandb-Signature: base64(HMAC-SHA256(
secret, body))`. A delivery is authentic when either proves knowledge of our shared secret; both are compared
in constant time (`hmac.compare_digest`). A header value that is not UTF-8 (aiohttp hands its bytes over as
surrogates) proves nothing: 401, like any wrong one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

_NAME = r"[A-Za-z0-9_.\-]+"
_VERSION_STRING = re.compile(rf"^(?P<entity>{_NAME})/(?P<project>{_NAME})/(?P<name>{_NAME}):(?P<version>{_NAME})$")
_PINNED = re.compile(r"^v\d+$")

RUN_EVENTS = frozenset({"RUN_METRIC", "RUN_METRIC_CHANGE", "RUN_METRIC_ZSCORE", "RUN_STATE"})
"""Event types about runs: they name no artifact version, so there is nothing to evaluate."""


class ArtifactVersion(BaseModel):
    """`entity/project/name:version`; `version` is `vN` (pinned) or an alias until pinned."""

    model_config = ConfigDict(frozen=True)

    entity: str
    project: str
    name: str
    version: str

    @classmethod
    def parse(cls, text: str) -> ArtifactVersion:
        match = _VERSION_STRING.match(text.strip())
        if not match:
            raise ValueError(f"{text!r} is not an artifact version <entity>/<project>/<name>:<version or alias>")
        return cls(**match.groupdict())

    @property
    def pinned(self) -> bool:
        return bool(_PINNED.match(self.version))

    def __str__(self) -> str:
        return f"{self.entity}/{self.project}/{self.name}:{self.version}"


class Delivery(BaseModel):
    """One webhook delivery, flattened; blank template variables are None."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    artifact: ArtifactVersion
    event_type: str | None = None
    event_author: str | None = None
    artifact_id: str | None = None
    """`${artifact_version}`: W&B's id of the version (`wandb-artifact://_id/...`), kept as job metadata."""
    alias: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("the payload must be a JSON object")
        nested = data.get("client_payload")
        fields = {**data, **nested} if isinstance(nested, dict) else dict(data)
        fields = {k: v.strip() if isinstance(v, str) else v for k, v in fields.items()}
        fields = {k: v for k, v in fields.items() if v not in ("", None)}
        if "artifact_version_string" in fields:
            text = fields["artifact_version_string"]
            if not isinstance(text, str):
                raise ValueError("artifact_version_string must be a string")
            fields["artifact"] = ArtifactVersion.parse(text)
        elif {"entity_name", "project_name", "artifact_collection_name", "alias"} <= set(fields):
            fields["artifact"] = ArtifactVersion.parse(
                f"{fields['entity_name']}/{fields['project_name']}/{fields['artifact_collection_name']}:{fields['alias']}"
            )
        else:
            raise ValueError("the payload names no artifact version: put artifact_version_string in it")
        if "artifact_version" in fields:
            fields["artifact_id"] = fields["artifact_version"]
        return fields

    @field_validator("event_type")
    @classmethod
    def _about_an_artifact(cls, value: str | None) -> str | None:
        if value in RUN_EVENTS:
            raise ValueError(f"event {value} is about a run, not an artifact version; there is nothing to evaluate")
        return value


def parse_delivery(body: bytes) -> Delivery:
    """The delivery in `body`; raises ValueError (bad JSON, JSON nested deeper than the parser's recursion
    allows, a number of over 4,300 digits) or pydantic's ValidationError."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the body is not JSON ({exc})") from None
    except RecursionError:
        raise ValueError("the body nests JSON too deeply to be a delivery") from None
    return Delivery.model_validate(data)


def authentic(headers: Mapping[str, str], body: bytes, secret: str) -> bool:
    """Either `Authorization: Bearer <secret>` or `X-Wandb-Signature: base64(HMAC-SHA256(secret, body))`."""
    if bearer(headers, secret):
        return True
    signature = _utf8(headers.get("X-Wandb-Signature", "").strip())
    if signature:
        return hmac.compare_digest(signature, sign(body, secret).encode())
    return False


def bearer(headers: Mapping[str, str], secret: str) -> bool:
    """`Authorization: Bearer <secret>` (the scheme in any case), compared in constant time."""
    scheme, _, token = headers.get("Authorization", "").strip().partition(" ")
    given = _utf8(token.strip())
    return scheme.lower() == "bearer" and given is not None and hmac.compare_digest(given, secret.encode())


def _utf8(value: str) -> bytes | None:
    """A header's value as the bytes it was sent as, None when those were not UTF-8 (surrogates)."""
    try:
        return value.encode()
    except UnicodeEncodeError:
        return None


def sign(body: bytes, secret: str) -> str:
    """The X-Wandb-Signature W&B sends for `body`: what `authentic` compares with (and docs/webhooks.md's curl
    example computes)."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def submission_id(artifact: ArtifactVersion) -> str:
    """The job id of an artifact version's evaluation: the same version always gives the same id, so Ray
    refuses a second job for it."""
    if not artifact.pinned:
        raise ValueError(f"{artifact} names an alias; pin it to a version first")
    return "eval-" + hashlib.sha256(str(artifact).encode()).hexdigest()[:32]
