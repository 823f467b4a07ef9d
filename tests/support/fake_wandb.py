"""A fake W&B backend on 127.0.0.1 that the real ``wandb`` client (0.31) works against.

It implements only the GraphQL operations and HTTP endpoints that the client sends for the flows we use
(artifact download and listing, runs with summary / tables / artifacts) and fails loudly on anything
else: an unknown GraphQL operation or URL is recorded in ``fake.unknown`` and answered with HTTP 400
(which neither wandb-core nor the Python client retries); a known request with content the fake rejects,
or one that crashes it, goes to ``fake.errors`` (also 400). The ``fake_wandb`` fixture's teardown asserts
both lists are empty.

Usage (tests/conftest.py registers this module as a pytest plugin, so the fixture needs no import)::


    def test_x(fake_wandb: FakeWandb):  # WANDB_BASE_URL, WANDB_API_KEY, dirs... are set by the fixture
        fake_wandb.add_artifact_version("ent", "proj", "policy", files={"model.pt": b"..."}, aliases=["latest"])
        ...  # code under test: wandb.Api().artifact("ent/proj/policy:latest").download(), wandb.init(...)
        run = fake_wandb.runs[("ent", "proj", run_id)]
        assert run.summary["reward_avg"] == 1.0 and run.job_type == "policy_evaluation"
        assert run.table("results")["data"] == [...]          # media/table/results_*.table.json
        (art,) = [a for a in fake_wandb.artifacts if a.type == "evaluation_results"]
        assert json.loads(art.files["report.json"]) == {...}

Inspection: ``fake.runs[(entity, project, run_id)]`` -> ``FakeRun`` (``summary``, ``config``, ``job_type``,
``display_name``, ``history``, ``files``, ``table(key)``, ``complete``, ``exitcode``, ``logged_artifacts``,
``used_artifacts``); ``fake.artifacts`` -> ``FakeArtifact``s logged by clients (``type``, ``name``,
``version``, ``aliases``, ``files``, ``run_id``); ``fake.collections[(entity, project, name)]`` -> all
versions; ``fake.requests`` -> every request in order. Seeding: ``add_artifact_version``, ``corrupt_file``.
Failure injection: ``fake.down = True`` (503 for everything), a wrong API key (401), ``fake.fail_file(art, name,
status)`` (that file's download answers 404, 403, ... or, with ``DROP``, is cut off halfway),
``fake.fail_graphql(operation, message, status)`` (a GraphQL operation answered with an error).

Wire protocol (wandb 0.31): all GraphQL, including the public ``wandb.Api``'s, goes through the Go
``wandb-core`` process (``POST /graphql`` with HTTP basic auth ``api:<key>``); artifact manifests and files
are downloaded by Python ``requests`` from the ``directUrl`` the GraphQL answers hand out; run metrics go to
``POST /files/<entity>/<project>/<run>/file_stream``; uploads are ``PUT`` to the ``uploadUrl`` handed out
by ``CreateRunFiles`` / ``CreateArtifactFiles`` / ``CreateArtifactManifest``. To see every request with
its body, set ``FAKE_WANDB_DEBUG_LOG=/some/file.jsonl``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest

DEFAULT_API_KEY = "fake" + "0" * 36
"""40 characters, like a real W&B key."""

DROP = 0
"""``fail_file(..., status=DROP)``: the server announces the whole body, sends half, and closes the connection."""

DEFAULT_ENTITY = "ent"
DEFAULT_USER = "fake-user"


def b64_md5(data: bytes) -> str:
    """The digest W&B manifests use for a file: base64 of the MD5."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


_FALLBACK_URL = re.compile(r"/artifactsV2/[^/]+/([^/]+)/([^/]+)/([^/]+)/(?:[^/]*/)?[^/]*/([0-9a-f]{32})/([^/]+)")
"""`{base}/artifactsV2/<region>/<entity>/<project>/<collection>/[<artifact id>/]<birth id>/<md5 hex>/<file>`:
where wandb's storage policy downloads a file when its directUrl failed (wandb_storage_policy._file_url)."""

_IDS = itertools.count(1)
"""Process-wide, so ids never repeat across fakes (the client caches artifacts by id)."""


def _gql_id(kind: str, n: int | None = None) -> str:
    return base64.b64encode(f"{kind}:{next(_IDS) if n is None else n}".encode()).decode()


class GraphQLError(Exception):
    """Answered as ``{"errors": [{"message": ...}]}`` with the given HTTP status."""

    def __init__(self, message: str, status: int = 200) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class FakeArtifact:
    """One artifact version: seeded with ``add_artifact_version`` or logged by a client."""

    id: str
    entity: str
    project: str
    name: str
    """Collection (sequence) name, without ``:vN``."""
    type: str
    version_index: int | None
    files: dict[str, bytes]
    aliases: list[str] = field(default_factory=list)
    """Aliases other than ``vN`` (e.g. ``latest``, ``best``)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    state: str = "COMMITTED"
    digest: str = ""
    created_at: str = field(default_factory=_now)
    run_id: str | None = None
    """The run that logged it (``runName`` of ``CreateArtifact``), for client-logged artifacts."""
    served: dict[str, bytes] = field(default_factory=dict)
    """File bodies served instead of ``files`` (``corrupt_file``); the manifest keeps the true digests."""
    failing: dict[str, int] = field(default_factory=dict)
    """File name -> how its download fails (``fail_file``): an HTTP status, or ``DROP`` (connection cut)."""
    manifest: dict[str, Any] | None = None
    """The manifest JSON (built for seeded artifacts, uploaded by the client for logged ones)."""
    used_by: list[str] = field(default_factory=list)

    @property
    def version(self) -> str:
        return f"v{self.version_index}"

    @property
    def qualified_name(self) -> str:
        return f"{self.entity}/{self.project}/{self.name}:{self.version}"

    @property
    def all_aliases(self) -> list[str]:
        return [*self.aliases, self.version] if self.version_index is not None else list(self.aliases)

    @property
    def size(self) -> int:
        return sum(len(body) for body in self.files.values())


@dataclass
class FakeRun:
    """What the fake knows about one run, assembled from UpsertBucket, file_stream and file uploads."""

    entity: str
    project: str
    run_id: str
    storage_id: str
    raw_config: dict[str, Any] = field(default_factory=dict)
    """The config as sent: ``{key: {"value": ..., "desc": ...}, "_wandb": {...}}``."""
    job_type: str | None = None
    host: str | None = None
    display_name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    notes: str | None = None
    state: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    """Files uploaded for the run (``wandb-metadata.json``, ``media/table/results_*.table.json``, ...)."""
    exitcode: int | None = None
    complete: bool = False
    """The file stream's final request (``complete: true``, sent by ``run.finish()``) arrived."""
    preempting: bool = False
    uploaded: list[str] = field(default_factory=list)
    """Run files the file stream reported uploaded."""
    upserts: int = 0
    logged_artifacts: list[FakeArtifact] = field(default_factory=list)
    used_artifacts: list[FakeArtifact] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.entity, self.project, self.run_id)

    @property
    def config(self) -> dict[str, Any]:
        """The run config as the user set it (values only, without wandb's ``_wandb`` entry)."""
        return {k: v.get("value") for k, v in self.raw_config.items() if k != "_wandb" and isinstance(v, dict)}

    def table(self, key: str) -> dict[str, Any]:
        """The uploaded ``wandb.Table`` logged under ``key``: ``{"columns": [...], "data": [[...], ...]}``."""
        names = [name for name in self.files if re.fullmatch(rf"media/table/{re.escape(key)}_.*\.table\.json", name)]
        if not names:
            raise KeyError(f"no table {key!r} uploaded for run {self.run_id}; files: {sorted(self.files)}")
        return json.loads(self.files[sorted(names)[-1]])


@dataclass
class _Upload:
    """A pending upload slot, filled by a PUT to ``/_fake/upload/<token>``."""

    on_put: Callable[[bytes], None]
    description: str
    done: bool = False


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-response (the download cases cut connections on purpose, and the wandb
    client gives up on a 404) is not a server error: socketserver would print a traceback to stderr, which
    the CLI tests read as the command's own output."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeWandb:
    """The fake backend: state, HTTP server, inspection and seeding API."""

    def __init__(self, api_key: str = DEFAULT_API_KEY, entity: str = DEFAULT_ENTITY, username: str = DEFAULT_USER):
        self.api_key = api_key
        self.entity = entity
        self.username = username
        self.unknown: list[str] = []
        """Requests the fake does not implement (``graphql:<op>`` or ``<METHOD> <path>``): must stay empty."""
        self.unknown_bodies: list[str] = []
        """The bodies of the ``unknown`` requests (GraphQL query text and variables), to implement them."""
        self.requests: list[str] = []
        """Every request as ``graphql:<op>`` or ``<METHOD> <path>``, in arrival order."""
        self.errors: list[str] = []
        """Known requests with content the fake rejected (answered 400): must stay empty unless a test expects it."""
        self.auth_failures: list[str] = []
        """Requests refused for a wrong API key (answered 401)."""
        self.runs: dict[tuple[str, str, str], FakeRun] = {}
        self.collections: dict[tuple[str, str, str], list[FakeArtifact]] = {}
        self._by_id: dict[str, FakeArtifact] = {}
        self._blobs: dict[str, Callable[[], bytes]] = {}
        self._blob_failures: dict[str, Callable[[], int | None]] = {}
        self._uploads: dict[str, _Upload] = {}
        self._pending: dict[str, FakeArtifact] = {}
        self._manifest_ids: dict[str, str] = {}
        self._lock = threading.RLock()
        self.graphql_failures: dict[str, tuple[str, int]] = {}
        """GraphQL operation -> (message, HTTP status) it is answered with (``fail_graphql``)."""
        self.down = False
        """When True, every request is answered 503 (which the clients retry) and recorded as ``... (down)``."""
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._debug_log = os.environ.get("FAKE_WANDB_DEBUG_LOG")

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeWandb:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-wandb", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeWandb:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self, root: Path | str | None = None) -> dict[str, str]:
        """Environment for a fast, offline-safe real client pointed at this fake.

        ``root`` (a temporary directory) receives wandb's run, cache, config and data directories, so no
        test reads or writes ``~/.config/wandb``, ``~/.cache/wandb`` or ``./wandb``.
        """
        env = {
            "WANDB_BASE_URL": self.base_url,
            "WANDB_API_KEY": self.api_key,
            "WANDB_MODE": "online",
            "WANDB_SILENT": "true",
            "WANDB_CONSOLE": "off",
            "WANDB_DISABLE_GIT": "true",
            "WANDB_DISABLE_CODE": "true",
            "WANDB_SAVE_CODE": "false",
            "WANDB_DISABLE_JOB_CREATION": "true",
            "WANDB_ERROR_REPORTING": "false",
            "WANDB_X_DISABLE_STATS": "true",
            "WANDB_X_DISABLE_MACHINE_INFO": "true",
            "WANDB_X_DISABLE_META": "true",
            "WANDB_X_SAVE_REQUIREMENTS": "false",
            "WANDB_INIT_TIMEOUT": "30",
            # Per-request HTTP timeout of wandb-core's GraphQL client (also the default wandb.Api(timeout=)
            # if set before wandb.apis.public is first imported).
            "WANDB_HTTP_TIMEOUT": "10",
            # Give up on an unreachable server after one retry, ~1.5 s, instead of minutes (wandb-core reads
            # these as whole seconds: a value below 1 means "default"; retry_max 0 also means "default").
            "WANDB_X_GRAPHQL_RETRY_MAX": "1",
            "WANDB_X_GRAPHQL_RETRY_WAIT_MIN_SECONDS": "1",
            "WANDB_X_GRAPHQL_RETRY_WAIT_MAX_SECONDS": "1",
            "WANDB_X_FILE_STREAM_RETRY_MAX": "1",
            "WANDB_X_FILE_STREAM_RETRY_WAIT_MIN_SECONDS": "1",
            "WANDB_X_FILE_STREAM_RETRY_WAIT_MAX_SECONDS": "1",
            "WANDB_X_FILE_TRANSFER_RETRY_MAX": "1",
            "WANDB_X_FILE_TRANSFER_RETRY_WAIT_MIN_SECONDS": "1",
            "WANDB_X_FILE_TRANSFER_RETRY_WAIT_MAX_SECONDS": "1",
        }
        if root is not None:
            root = Path(root)
            for var, sub in (
                ("WANDB_DIR", "dir"),
                ("WANDB_CACHE_DIR", "cache"),
                ("WANDB_CONFIG_DIR", "config"),
                ("WANDB_DATA_DIR", "data"),
                ("WANDB_ARTIFACT_DIR", "artifacts"),
            ):
                (root / sub).mkdir(parents=True, exist_ok=True)
                env[var] = str(root / sub)
        return env

    # ------------------------------------------------------------------ seeding
    def add_artifact_version(
        self,
        entity: str,
        project: str,
        name: str,
        type: str = "model",
        files: dict[str, bytes] | None = None,
        aliases: list[str] | tuple[str, ...] = ("latest",),
        metadata: dict[str, Any] | None = None,
        description: str | None = None,
    ) -> FakeArtifact:
        """Add the next version (``v0``, ``v1``, ...) of ``entity/project/name``.

        An alias such as ``latest`` moves to the new version (an alias names one version per collection).
        """
        with self._lock:
            art = FakeArtifact(
                id=_gql_id("Artifact"),
                entity=entity,
                project=project,
                name=name,
                type=type,
                version_index=None,
                files=dict(files or {}),
                metadata=dict(metadata or {}),
                description=description,
            )
            art.manifest = self._build_manifest(art.files)
            art.digest = self._manifest_digest(art.manifest)
            self._register_version(art, list(aliases))
            return art

    def corrupt_file(self, artifact: FakeArtifact, name: str, body: bytes | None = None) -> None:
        """Serve ``body`` (default: the true bytes with the first byte flipped) for ``name``, keeping the
        manifest's digest of the true bytes, so ``download()`` + ``verify()`` must notice."""
        true = artifact.files[name]
        if body is None:
            body = bytes([true[0] ^ 0xFF]) + true[1:] if true else b"x"
        artifact.served[name] = body

    def fail_file(self, artifact: FakeArtifact, name: str, status: int = 404) -> None:
        """Make every download of ``name`` fail: answered with HTTP ``status`` (404: the object vanished from
        storage; 403: denied), or with ``status=DROP`` the connection is cut halfway through the body."""
        with self._lock:
            artifact.failing[name] = status

    def fail_graphql(self, operation: str, message: str, status: int = 200) -> None:
        """Answer every ``operation`` (e.g. ``ArtifactMembershipByName``) with a GraphQL error: ``message`` with
        HTTP ``status`` (200: the server's answer to a request it refuses, as for a permission error; 500: a
        server failure, which the client retries)."""
        with self._lock:
            self.graphql_failures[operation] = (message, status)

    @property
    def artifacts(self) -> list[FakeArtifact]:
        """Artifacts logged by clients (``run.log_artifact``), in creation order."""
        with self._lock:
            return [a for a in self._by_id.values() if a.run_id is not None]

    def artifact(self, path: str) -> FakeArtifact:
        """``entity/project/name:alias`` (alias ``vN`` or any alias) -> the version."""
        entity, project, rest = path.split("/", 2)
        name, _, alias = rest.partition(":")
        found = self._find_version(entity, project, name, alias or "latest")
        if found is None:
            raise KeyError(path)
        return found

    # ------------------------------------------------------------------ internals: artifacts
    @staticmethod
    def _build_manifest(files: dict[str, bytes]) -> dict[str, Any]:
        return {
            "version": 1,
            "storagePolicy": "wandb-storage-policy-v1",
            "storagePolicyConfig": {"storageLayout": "V2"},
            "contents": {path: {"digest": b64_md5(body), "size": len(body)} for path, body in sorted(files.items())},
        }

    @staticmethod
    def _manifest_digest(manifest: dict[str, Any]) -> str:
        hasher = hashlib.md5(b"wandb-artifact-manifest-v1\n")
        for path, entry in sorted(manifest["contents"].items()):
            hasher.update(f"{path}:{entry['digest']}\n".encode())
        return hasher.hexdigest()

    def _register_version(self, art: FakeArtifact, aliases: list[str]) -> None:
        versions = self.collections.setdefault((art.entity, art.project, art.name), [])
        if versions and versions[0].type != art.type:
            raise ValueError(f"collection {art.name!r} has type {versions[0].type!r}, not {art.type!r}")
        art.version_index = len(versions)
        aliases = [a for a in aliases if not re.fullmatch(r"v\d+", a)]
        for other in versions:
            other.aliases = [a for a in other.aliases if a not in aliases]
        art.aliases = aliases
        versions.append(art)
        self._by_id[art.id] = art

    def _project_exists(self, entity: str, project: str) -> bool:
        return any(key[:2] == (entity, project) for key in [*self.collections, *self.runs])

    def _find_version(self, entity: str, project: str, name: str, alias: str) -> FakeArtifact | None:
        with self._lock:
            for art in self.collections.get((entity, project, name), []):
                if art.state == "COMMITTED" and alias in art.all_aliases:
                    return art
        return None

    def _blob_url(self, key: str, name: str, body: Callable[[], bytes]) -> str:
        """A "presigned" download URL (no auth needed) whose body is computed when fetched; ``name`` only
        makes ``fake.requests`` readable."""
        self._blobs[key] = body
        return f"{self.base_url}/_fake/blob/{key}/{quote(name)}"

    def _upload_slot(self, description: str, on_put: Callable[[bytes], None]) -> str:
        token = f"u{next(_IDS)}"
        self._uploads[token] = _Upload(on_put=on_put, description=description)
        return f"{self.base_url}/_fake/upload/{token}"

    def _file_url(self, art: FakeArtifact, name: str) -> str:
        key = hashlib.md5(f"{art.id}/{name}".encode()).hexdigest()
        self._blob_failures[key] = lambda: art.failing.get(name)
        return self._blob_url(key, name, lambda: art.served.get(name, art.files[name]))

    def _manifest_url(self, art: FakeArtifact) -> str:
        key = hashlib.md5(f"{art.id}/manifest".encode()).hexdigest()
        return self._blob_url(key, "wandb_manifest.json", lambda: json.dumps(art.manifest).encode())

    def _failing_fallback(self, entity: str, project: str, name: str, hexhash: str, filename: str) -> int | None:
        """The injected failure of the file a fallback download URL names (by content hash), if any."""
        with self._lock:
            for art in self.collections.get((entity, project, name), []):
                body = art.files.get(filename)
                if body is not None and filename in art.failing and hashlib.md5(body).hexdigest() == hexhash:
                    return art.failing[filename]
        return None

    # ------------------------------------------------------------------ internals: runs
    def _run(self, entity: str, project: str, run_id: str) -> FakeRun:
        key = (entity, project, run_id)
        if key not in self.runs:
            self.runs[key] = FakeRun(entity, project, run_id, storage_id=_gql_id("Run"))
        return self.runs[key]


# ---------------------------------------------------------------------- GraphQL fragments (response shapes)
def _project_info(entity: str, project: str) -> dict[str, Any]:
    return {
        "id": _gql_id("Project", abs(hash((entity, project))) % 10**6),
        "internalId": str(abs(hash((entity, project))) % 10**6),
        "name": project,
        "entity": {"name": entity},
    }


def _artifact_fragment(art: FakeArtifact) -> dict[str, Any]:
    project = _project_info(art.entity, art.project)
    return {
        "__typename": "Artifact",
        "id": art.id,
        "artifactSequence": {"__typename": "ArtifactSequence", "name": art.name, "project": project},
        "versionIndex": art.version_index,
        "artifactType": {"name": art.type},
        "description": art.description,
        "metadata": json.dumps(art.metadata),
        "ttlDurationSeconds": -1,
        "ttlIsInherited": True,
        "tags": [],
        "historyStep": None,
        "state": art.state,
        "size": art.size,
        "digest": art.digest,
        "digestAlgorithm": "MANIFEST_MD5",
        "commitHash": hashlib.sha1(art.id.encode()).hexdigest()[:12],
        "fileCount": len(art.files),
        "createdAt": art.created_at,
        "updatedAt": art.created_at,
        "aliases": [
            {
                "__typename": "ArtifactAlias",
                "id": _gql_id("ArtifactAlias", abs(hash((art.id, alias))) % 10**6),
                "alias": alias,
                "artifactCollection": {"__typename": "ArtifactSequence", "name": art.name, "project": project},
            }
            for alias in art.all_aliases
        ],
    }


def _membership_fragment(art: FakeArtifact) -> dict[str, Any]:
    project = _project_info(art.entity, art.project)
    return {
        "__typename": "ArtifactCollectionMembership",
        "id": _gql_id("ArtifactCollectionMembership", abs(hash(art.id)) % 10**6),
        "versionIndex": art.version_index,
        "createdAt": art.created_at,
        "aliases": [
            {"__typename": "ArtifactAlias", "id": _gql_id("ArtifactAlias", i), "alias": alias}
            for i, alias in enumerate(art.all_aliases)
        ],
        "artifactCollection": {"__typename": "ArtifactSequence", "name": art.name, "project": project},
        "artifact": _artifact_fragment(art),
    }


def _page(items: list[Any], after: str | None, first: int | None) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """Cursor pagination over ``items``: cursors are the stringified index."""
    start = int(after) + 1 if after else 0
    first = first if first is not None else 50
    chunk = list(enumerate(items))[start : start + first]
    end = chunk[-1][0] if chunk else start - 1
    page_info = {
        "__typename": "PageInfo",
        "endCursor": str(end) if chunk else after,
        "hasNextPage": end + 1 < len(items),
    }
    return [(str(i), item) for i, item in chunk], page_info


# ---------------------------------------------------------------------- GraphQL operations
_FILE_STREAM_FILES = ("wandb-summary.json", "wandb-history.jsonl", "wandb-events.jsonl", "output.log")


class _Ops:
    """``operationName`` -> handler(fake, variables, query) -> ``data``."""

    @staticmethod
    def Viewer(fake: FakeWandb, v: dict, q: str) -> dict:  # noqa: N802
        return {
            "viewer": {
                "id": _gql_id("User", 1),
                "entity": fake.entity,
                "username": fake.username,
                "email": f"{fake.username}@example.com",
                "flags": "{}",
                "teams": {"edges": []},
            }
        }

    @staticmethod
    def GetDefaultEntity(fake: FakeWandb, v: dict, q: str) -> dict:  # noqa: N802
        # Sent with an empty operationName by wandb.Api().default_entity (a path without an entity).
        return {"viewer": {"id": _gql_id("User", 1), "entity": fake.entity}}

    @staticmethod
    def ServerFeaturesQuery(fake: FakeWandb, v: dict, q: str) -> dict:  # noqa: N802
        return {"serverInfo": {"features": []}}

    @staticmethod
    def ArtifactMembershipByName(fake: FakeWandb, v: dict, q: str) -> dict:  # noqa: N802
        if not fake._project_exists(v["entity"], v["project"]):
            return {"project": None}
        name, _, alias = v["name"].partition(":")
        art = fake._find_version(v["entity"], v["project"], name, alias or "latest")
        return {"project": {"artifactCollectionMembership": _membership_fragment(art) if art else None}}

    @staticmethod
    def FetchArtifactManifest(fake: FakeWandb, v: dict, q: str) -> dict:  # noqa: N802
        art = fake._by_id.get(v["id"])
        if art is None:
            return {"artifact": None}
        return {"artifact": {"currentManifest": {"file": {"directUrl": fake._manifest_url(art)}}}}

    @staticmethod
    def GetArtifactMembershipFileUrls(fake: FakeWandb, v: dict, q: str) -> dict:  # noqa: N802
        art = fake._find_version(v["entity"], v["project"], v["collection"], v["alias"])
        if art is None:
            return {"project": {"artifactCollection": None}}
        edges, page_info = _page(sorted(art.files), v.get("cursor"), v.get("perPage"))
        files = {
            "pageInfo": page_info,
            "edges": [
                {"node": {"__typename": "File", "name": name, "directUrl": fake._file_url(art, name)}}
                for _, name in edges
            ],
        }
        return {
            "project": {
                "artifactCollection": {"__typename": "ArtifactSequence", "artifactMembership": {"files": files}}
            }
        }

    @staticmethod
    def ProjectArtifacts(fake: FakeWandb, v: dict, q: str) -> dict:  # noqa: N802
        versions = fake.collections.get((v["entity"], v["project"], v["collection"]), [])
        if not versions or versions[0].type != v["type"]:
            # The real server answers null for an unknown project, type or collection.
            return {"project": None}
        filters = json.loads(v.get("filters") or "{}")
        unsupported = set(filters) - {"state"}
        if unsupported:
            raise GraphQLError(f"fake_wandb: unsupported ProjectArtifacts filters {sorted(unsupported)}", 400)
        selected = [a for a in versions if "state" not in filters or a.state == filters["state"]]
        order = v.get("order") or "-createdAt"  # the server lists newest first unless told otherwise
        selected.sort(key=lambda a: a.version_index or 0, reverse=order.startswith("-"))
        edges, page_info = _page(selected, v.get("cursor"), v.get("perPage"))
        connection = {
            "totalCount": len(selected),
            "pageInfo": page_info,
            "edges": [{"version": a.version, "cursor": c, "node": _artifact_fragment(a)} for c, a in edges],
        }
        collection = {"__typename": "ArtifactSequence", "artifacts": connection}
        return {"project": {"artifactType": {"artifactCollection": collection}}}

    @staticmethod
    def ArtifactByID(fake: FakeWandb, v: dict, q: str) -> dict:  # noqa: N802
        art = fake._by_id.get(v["id"])
        return {"artifact": _artifact_fragment(art) if art else None}

    @staticmethod
    def ArtifactType(fake: FakeWandb, v: dict, q: str) -> dict:  # noqa: N802
        # Sent by run.log_artifact() to check the type of an existing collection ("name:latest").
        name, _, alias = v["name"].partition(":")
        art = fake._find_version(v.get("entity") or fake.entity, v.get("project") or "", name, alias or "latest")
        return {"project": {"artifact": {"artifactType": {"name": art.type}} if art else None}}

    # ------------------------------------------------------------- runs (wandb-core)
    @staticmethod
    def RunResumeStatus(fake: FakeWandb, v: dict, q: str) -> dict:  # noqa: N802
        entity = v.get("entity") or fake.entity
        project = v.get("project") or "uncategorized"
        run = fake.runs.get((entity, project, v["name"]))
        model = {
            "id": _project_info(entity, project)["id"],
            "name": project,
            "entity": {"id": _gql_id("Entity", 1), "name": entity},
            "bucket": None,
        }
        if run is not None:
            wandb_config = run.raw_config.get("_wandb", {}).get("value", {})
            model["bucket"] = {
                "id": run.storage_id,
                "name": run.run_id,
                "summaryMetrics": json.dumps(run.summary),
                "displayName": run.display_name,
                "logLineCount": len(run.output),
                "historyLineCount": len(run.history),
                "eventsLineCount": len(run.events),
                "historyTail": json.dumps([json.dumps(row) for row in run.history[-10:]]),
                "eventsTail": json.dumps([json.dumps(row) for row in run.events[-10:]]),
                "config": json.dumps(run.raw_config),
                "tags": run.tags,
                "notes": run.notes,
                "wandbConfig": json.dumps({"t": wandb_config["t"]} if "t" in wandb_config else {}),
            }
        return {"model": model}

    @staticmethod
    def UpsertBucket(fake: FakeWandb, v: dict, q: str) -> dict:  # noqa: N802
        entity = v.get("entity") or fake.entity
        project = v.get("project") or "uncategorized"
        if not v.get("name"):
            raise GraphQLError("fake_wandb: UpsertBucket without a run name", 400)
        inserted = (entity, project, v["name"]) not in fake.runs
        run = fake._run(entity, project, v["name"])
        if v.get("id") and v["id"] != run.storage_id:
            raise GraphQLError(f"fake_wandb: UpsertBucket id {v['id']!r} is not run {run.run_id}'s", 400)
        run.upserts += 1
        if v.get("config") is not None:
            run.raw_config = json.loads(v["config"])
        if v.get("summaryMetrics") is not None:
            run.summary.update(json.loads(v["summaryMetrics"]))
        for var, attr in (
            ("jobType", "job_type"),
            ("displayName", "display_name"),
            ("groupName", "group"),
            ("notes", "notes"),
            ("tags", "tags"),
            ("state", "state"),
            ("host", "host"),
        ):
            if v.get(var) is not None:
                setattr(run, attr, v[var])
        project_info = {"id": _project_info(entity, project)["id"], "name": project}
        project_info["entity"] = {"id": _gql_id("Entity", 1), "name": entity}
        bucket = {
            "id": run.storage_id,
            "name": run.run_id,
            "displayName": run.display_name,
            "description": run.notes,
            "config": json.dumps(run.raw_config),
            "sweepName": None,
            "project": project_info,
            "historyLineCount": len(run.history),
        }
        return {"upsertBucket": {"bucket": bucket, "inserted": inserted}}

    @staticmethod
    def CreateRunFiles(fake: FakeWandb, v: dict, q: str) -> dict:  # noqa: N802
        run = fake.runs.get((v["entity"], v["project"], v["run"]))
        if run is None:
            raise GraphQLError(f"fake_wandb: CreateRunFiles for unknown run {v['run']!r}", 400)

        def slot(name: str) -> str:
            def on_put(body: bytes) -> None:
                run.files[name] = body

            return fake._upload_slot(f"run file {run.run_id}/{name}", on_put)

        files = [{"name": name, "uploadUrl": slot(name)} for name in v["files"]]
        return {"createRunFiles": {"runID": run.storage_id, "uploadHeaders": [], "files": files}}

    # ------------------------------------------------------------- logging artifacts (wandb-core)
    @staticmethod
    def CreateArtifact(fake: FakeWandb, v: dict, q: str) -> dict:  # noqa: N802
        inp = v["input"]
        entity, project = inp["entityName"], inp["projectName"]
        name, type_ = inp["artifactCollectionName"], inp["artifactTypeName"]
        aliases = [a["alias"] for a in inp.get("aliases") or []]
        run_id = inp.get("runName")
        versions = fake.collections.get((entity, project, name), [])
        if versions and versions[0].type != type_:
            raise GraphQLError(f"artifact collection {name!r} has type {versions[0].type!r}, not {type_!r}", 409)
        latest = versions[-1] if versions else None
        same = next((a for a in versions if a.digest == inp["digest"] and a.state == "COMMITTED"), None)
        if same is not None:
            # The server deduplicates by digest: the existing version gets the aliases, nothing is uploaded.
            for other in versions:
                other.aliases = [a for a in other.aliases if a not in aliases or other is same]
            same.aliases += [a for a in aliases if a not in same.aliases and not re.fullmatch(r"v\d+", a)]
            art = same
        else:
            art = FakeArtifact(
                id=_gql_id("Artifact"),
                entity=entity,
                project=project,
                name=name,
                type=type_,
                version_index=None,
                files={},
                aliases=aliases,
                metadata=json.loads(inp.get("metadata") or "{}"),
                description=inp.get("description"),
                state="PENDING",
                digest=inp["digest"],
                run_id=run_id or "",
            )
            fake._by_id[art.id] = art
            fake._pending[art.id] = art
            if run_id and (run := fake.runs.get((entity, project, run_id))) is not None:
                run.logged_artifacts.append(art)
        latest_id = {"id": latest.id} if latest else None
        payload = {"artifact": {"id": art.id, "state": art.state, "artifactSequence": {"latestArtifact": latest_id}}}
        return {"createArtifact": payload}

    @staticmethod
    def CreateArtifactManifest(fake: FakeWandb, v: dict, q: str) -> dict:  # noqa: N802
        art = fake._pending.get(v["artifactID"])
        if art is None:
            raise GraphQLError(f"fake_wandb: CreateArtifactManifest for unknown artifact {v['artifactID']!r}", 400)
        file: dict[str, Any] = {"id": _gql_id("File")}
        if v.get("includeUpload"):

            def on_put(body: bytes) -> None:
                art.manifest = json.loads(body)

            file["uploadUrl"] = fake._upload_slot(f"manifest of {art.name}", on_put)
            file["uploadHeaders"] = []
        manifest_id = fake._manifest_ids.setdefault(art.id, _gql_id("ArtifactManifest"))
        return {"createArtifactManifest": {"artifactManifest": {"id": manifest_id, "file": file}}}

    @staticmethod
    def CreateArtifactFiles(fake: FakeWandb, v: dict, q: str) -> dict:  # noqa: N802
        edges = []
        for spec in v["input"]["artifactFiles"]:
            art = fake._pending.get(spec["artifactID"])
            if art is None:
                raise GraphQLError(f"fake_wandb: CreateArtifactFiles for unknown artifact {spec['artifactID']!r}", 400)
            name, md5 = spec["name"], spec["md5"]

            def on_put(body: bytes, art: FakeArtifact = art, name: str = name, md5: str = md5) -> None:
                if b64_md5(body) != md5:
                    raise ValueError(f"uploaded {name!r} of {art.name!r} does not match its md5 {md5}")
                art.files[name] = body

            node = {
                "storagePath": f"wandb_artifacts/{art.id}/{name}",
                "uploadUrl": fake._upload_slot(f"artifact file {art.name}/{name}", on_put),
                "uploadHeaders": [],
                "uploadMultipartUrls": None,
                "artifact": {"id": art.id},
            }
            edges.append({"node": node})
        return {"createArtifactFiles": {"files": {"edges": edges}}}

    @staticmethod
    def CommitArtifact(fake: FakeWandb, v: dict, q: str) -> dict:  # noqa: N802
        art = fake._pending.pop(v["artifactID"], None)
        if art is None:
            raise GraphQLError(f"fake_wandb: CommitArtifact for unknown artifact {v['artifactID']!r}", 400)
        if art.manifest is None:
            raise GraphQLError(f"fake_wandb: CommitArtifact before the manifest of {art.name!r} was uploaded", 400)
        contents = art.manifest.get("contents", {})
        missing = sorted(name for name, entry in contents.items() if "ref" not in entry and name not in art.files)
        if missing:
            raise GraphQLError(f"fake_wandb: CommitArtifact before files {missing} of {art.name!r} were uploaded", 400)
        art.state = "COMMITTED"
        fake._register_version(art, art.aliases)
        return {"commitArtifact": {"artifact": {"id": art.id, "digest": art.digest}}}

    @staticmethod
    def UseArtifact(fake: FakeWandb, v: dict, q: str) -> dict:  # noqa: N802
        # run.use_artifact() (Python) sends the fields as variables; wandb-core sends them as $input.
        inp = v.get("input") or v
        art = fake._by_id.get(inp["artifactID"])
        run = fake.runs.get((inp["entityName"], inp["projectName"], inp["runName"]))
        if art is None or run is None:
            raise GraphQLError(f"fake_wandb: UseArtifact of unknown artifact or run: {inp}", 400)
        run.used_artifacts.append(art)
        art.used_by.append(run.run_id)
        payload = {
            "id": art.id,
            "digest": art.digest,
            "description": art.description,
            "state": art.state,
            "createdAt": art.created_at,
            "metadata": json.dumps(art.metadata),
        }
        return {"useArtifact": {"artifact": payload}}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeWandb
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    # --------------------------------------------------------------- plumbing
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _send(self, status: int, body: bytes | dict | list, content_type: str = "application/json") -> None:
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorized(self) -> bool:
        expected = "Basic " + base64.b64encode(f"api:{self.fake.api_key}".encode()).decode()
        return self.headers.get("Authorization") == expected

    def _unknown(self, what: str, body: bytes) -> None:
        with self.fake._lock:
            self.fake.unknown.append(what)
            self.fake.unknown_bodies.append(body.decode("utf-8", "replace"))
        self._send(400, {"errors": [{"message": f"fake_wandb does not implement {what}"}]})

    def _error(self, line: str, message: str) -> None:
        """A known request with wrong content: recorded in ``fake.errors``, answered 400."""
        with self.fake._lock:
            self.fake.errors.append(f"{line}: {message}")
        self._send(400, {"errors": [{"message": f"fake_wandb: {message}"}]})

    def _fail_download(self, status: int, blob: Callable[[], bytes]) -> None:
        """``fail_file``: an error status, or (DROP) half the announced body and a closed connection."""
        if status != DROP:
            self._send(status, {"error": f"fake_wandb: injected HTTP {status}"})
            return
        with self.fake._lock:
            content = blob()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content[: len(content) // 2])
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(2)

    def _debug(self, line: str, body: bytes) -> None:
        if self.fake._debug_log:
            with open(self.fake._debug_log, "a") as f:
                f.write(json.dumps({"t": time.time(), "req": line, "body": body.decode("utf-8", "replace")}) + "\n")

    def _dispatch(self) -> None:
        try:
            self._route()
        except Exception:  # a bug in the fake or a request shape it does not expect: fail loudly, not retried
            message = traceback.format_exc()
            with self.fake._lock:
                self.fake.errors.append(f"{self.command} {self.path}: fake_wandb crashed: {message}")
            with contextlib.suppress(OSError):
                self._send(400, {"errors": [{"message": f"fake_wandb crashed: {message.splitlines()[-1]}"}]})

    def _route(self) -> None:
        fake = self.fake
        path = urlsplit(self.path).path
        body = self._body()
        if fake.down:
            with fake._lock:
                fake.requests.append(f"{self.command} {path} (down)")
            self._send(503, {"error": "fake_wandb is down"})
            return
        if self.command == "POST" and path == "/graphql":
            self._graphql(body)
            return
        line = f"{self.command} {path}"
        with fake._lock:
            fake.requests.append(line)
        self._debug(line, body)
        if self.command in ("GET", "HEAD") and (m := re.fullmatch(r"/_fake/blob/([0-9a-f]+)/.*", path)):
            blob = fake._blobs.get(m.group(1))
            failure = fake._blob_failures.get(m.group(1), lambda: None)()
            if blob is None:
                self._unknown(line, body)
            elif failure is not None:
                self._fail_download(failure, blob)
            else:
                with fake._lock:
                    content = blob()
                self._send(200, content, "application/octet-stream")
            return
        if self.command == "GET" and (m := _FALLBACK_URL.fullmatch(path)):
            # The client's fallback after a failed directUrl download: the server's own download handler.
            failure = fake._failing_fallback(*(unquote(g) for g in m.groups()))
            if failure is None:
                self._unknown(line, body)
            else:
                self._fail_download(failure, lambda: b"")
            return
        if self.command == "PUT" and (m := re.fullmatch(r"/_fake/upload/([^/]+)", path)):
            upload = fake._uploads.get(m.group(1))
            if upload is None:
                self._unknown(line, body)
                return
            try:
                with fake._lock:
                    upload.on_put(body)
                    upload.done = True
            except ValueError as e:
                self._error(f"{line} ({upload.description})", str(e))
                return
            self._send(200, b"", "text/plain")
            return
        if self.command == "POST" and (m := re.fullmatch(r"/files/([^/]+)/([^/]+)/([^/]+)/file_stream", path)):
            if not self._authorized():
                fake.auth_failures.append(line)
                self._send(401, {"error": "unauthorized"})
                return
            self._file_stream(*(unquote(g) for g in m.groups()), body)
            return
        self._unknown(line, body)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_PATCH = _dispatch  # noqa: N815

    # --------------------------------------------------------------- GraphQL
    def _graphql(self, body: bytes) -> None:
        fake = self.fake
        try:
            request = json.loads(body)
        except ValueError:
            self._unknown("graphql:<unparsable body>", body)
            return
        query = request.get("query") or ""
        op = request.get("operationName")
        if not op and (m := re.search(r"\b(?:query|mutation)\s+(\w+)", query)):
            op = m.group(1)
        line = f"graphql:{op}"
        with fake._lock:
            fake.requests.append(line)
        self._debug(line, body)
        if not self._authorized():
            fake.auth_failures.append(line)
            self._send(401, {"errors": [{"message": "user is not logged in"}]})
            return
        if (failure := fake.graphql_failures.get(op or "")) is not None:
            self._send(failure[1], {"data": None, "errors": [{"message": failure[0]}]})
            return
        handler = _Ops.__dict__.get(op or "")
        if not isinstance(handler, staticmethod):
            self._unknown(line, body)
            return
        try:
            with fake._lock:
                data = handler.__func__(fake, request.get("variables") or {}, query)
        except GraphQLError as e:
            if e.status == 400:
                with fake._lock:
                    fake.errors.append(f"{line}: {e}")
            self._send(e.status, {"data": None, "errors": [{"message": str(e)}]})
            return
        self._send(200, {"data": data})

    # --------------------------------------------------------------- file_stream
    def _file_stream(self, entity: str, project: str, run_id: str, body: bytes) -> None:
        fake = self.fake
        line = f"POST /files/{entity}/{project}/{run_id}/file_stream"
        run = fake.runs.get((entity, project, run_id))
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if run is None or not isinstance(request, dict):
            self._error(line, f"file_stream for an unknown run or with a non-JSON body: {body[:200]!r}")
            return
        unknown_keys = set(request) - {"files", "complete", "exitcode", "preempting", "dropped", "uploaded"}
        unknown_files = set(request.get("files") or {}) - set(_FILE_STREAM_FILES)
        if unknown_keys or unknown_files:
            self._unknown(f"{line} with {sorted(unknown_keys | unknown_files)}", body)
            return
        with fake._lock:
            for name, chunk in (request.get("files") or {}).items():
                lines = chunk.get("content") or []
                offset = int(chunk.get("offset") or 0)
                if name == "wandb-summary.json":
                    # Each line is the whole summary; the last one is current.
                    if lines:
                        run.summary = json.loads(lines[-1])
                elif name == "output.log":
                    # Console lines are sent with an offset; a line may be re-sent to overwrite it.
                    del run.output[offset:]
                    run.output.extend(lines)
                else:
                    rows = run.history if name == "wandb-history.jsonl" else run.events
                    del rows[offset:]
                    rows.extend(json.loads(row) for row in lines)
            run.uploaded.extend(request.get("uploaded") or [])
            if request.get("preempting"):
                run.preempting = True
            if request.get("complete"):
                run.complete = True
                run.exitcode = request.get("exitcode")
                run.state = "finished" if run.exitcode == 0 else "failed"
        self._send(200, {"exitcode": None, "limits": {}})


def reset_wandb() -> None:
    """Forget wandb's process-wide state so the next ``wandb.init`` / ``wandb.Api`` reads the environment again.

    wandb loads its global settings (base URL, key, directories) once per process and keeps one wandb-core
    service process; ``wandb.teardown()`` finishes any open run, stops the service and drops the settings.
    """
    import sys

    if "wandb" not in sys.modules:
        return
    import wandb

    if wandb.run is not None:
        wandb.run.finish(exit_code=1)
    wandb.teardown()


@contextlib.contextmanager
def running_fake_wandb(**kwargs: Any) -> Iterator[FakeWandb]:
    fake = FakeWandb(**kwargs)
    with fake:
        yield fake


@pytest.fixture(name="fake_wandb")
def fake_wandb_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWandb]:
    """A started ``FakeWandb`` with its ``env()`` set in ``os.environ``; fails the test if the client sent
    anything the fake does not implement."""
    with running_fake_wandb() as fake:
        for var in [v for v in os.environ if v.startswith("WANDB_")]:
            monkeypatch.delenv(var)
        for var, value in fake.env(tmp_path / "wandb").items():
            monkeypatch.setenv(var, value)
        reset_wandb()
        try:
            yield fake
        finally:
            reset_wandb()
    bodies = "\n".join(body[:2000] for body in fake.unknown_bodies)
    assert fake.unknown == [], f"client sent requests the fake does not implement: {fake.unknown}\n{bodies}"
    assert fake.errors == [], f"the fake rejected requests: {fake.errors}"
