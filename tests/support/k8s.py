"""Validation helpers for cluster/: strict JSON Schemas from KubeRay's CRDs, `kubectl kustomize` rendering, a
walk over every Pod template of a Ray custom resource, and a tiny cron matcher.

No Kubernetes API server exists here, so "valid" means: the served `ray.io/v1` openAPIV3Schema of each CRD,
made strict (an object that lists `properties` accepts no others, as the API server's pruning would silently
drop them), and kubernetes-validate's strict schemas for the built-in kinds. CEL rules
(`x-kubernetes-validations`) and KubeRay's controller-side checks are not evaluated by either; the tests
encode the controller rules that apply to our manifests by hand.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import yaml

KUBERNETES_VERSION = "1.35"
"""The Kubernetes version built-in kinds are validated against (kubernetes-validate, strict); also the EKS
version of cluster/eksctl/cluster.yaml."""

CRD_FILES = {
    "RayJob": "ray.io_rayjobs.yaml",
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayCronJob": "ray.io_raycronjobs.yaml",
}
SCHEMA_COMBINATORS = ("allOf", "anyOf", "oneOf")

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_LOADER)


def load_all_yaml(text: str) -> list[dict]:
    return [doc for doc in yaml.load_all(text, Loader=_LOADER) if doc]


def served_schema(crd: dict, version: str = "v1") -> dict:
    """The openAPIV3Schema of `version`, which must be the served storage version."""
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            assert entry.get("served") and entry.get("storage"), f"{version} is not the served storage version"
            return entry["schema"]["openAPIV3Schema"]
    raise KeyError(f"{crd['spec']['names']['kind']} has no version {version}")


def strict(schema: dict) -> dict:
    """A copy of `schema` where every object schema that lists `properties` and says nothing about
    additionalProperties (nor preserves unknown fields) gets `additionalProperties: false`, recursively."""
    schema = copy.deepcopy(schema)
    _tighten(schema)
    return schema


def _tighten(node: dict) -> None:
    if "properties" in node:
        if "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        for child in node["properties"].values():
            _tighten(child)
    if isinstance(node.get("items"), dict):
        _tighten(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        _tighten(node["additionalProperties"])
    for combinator in SCHEMA_COMBINATORS:
        for child in node.get(combinator, ()):
            _tighten(child)


def _int_range(bits: int):
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return lambda value: not isinstance(value, int) or low <= value <= high


FORMATS = jsonschema.FormatChecker(formats=())
FORMATS.checks("int32")(_int_range(32))
FORMATS.checks("int64")(_int_range(64))


def validator(schema: dict) -> jsonschema.Draft4Validator:
    """OpenAPI v3.0 schemas are close to JSON Schema draft 4 (boolean exclusiveMinimum, no `const`)."""
    return jsonschema.Draft4Validator(schema, format_checker=FORMATS)


def errors(validator_: jsonschema.Draft4Validator, document: dict) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator_.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


def cel_rules(schema: dict, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """(field path, rule) of every CEL rule in the schema; `*` stands for a list item."""
    for rule in schema.get("x-kubernetes-validations", ()):
        yield path, rule["rule"]
    for name, child in schema.get("properties", {}).items():
        yield from cel_rules(child, (*path, name))
    if isinstance(schema.get("items"), dict):
        yield from cel_rules(schema["items"], (*path, "*"))


def has_path(document: Any, path: tuple[str, ...]) -> bool:
    """Whether `document` sets the field at `path` (`*` matches any list item)."""
    if not path:
        return True
    head, rest = path[0], path[1:]
    if head == "*":
        return isinstance(document, list) and any(has_path(item, rest) for item in document)
    return isinstance(document, dict) and head in document and has_path(document[head], rest)


def kustomize_binary() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def render(directory: Path) -> list[dict]:
    """`kubectl kustomize <directory>` (or `kustomize build`), parsed."""
    command = kustomize_binary()
    assert command, "neither kubectl nor kustomize is on PATH"
    done = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} {directory} failed:\n{done.stderr}")
    return load_all_yaml(done.stdout)


@dataclass(frozen=True)
class PodTemplate:
    """One Pod template inside a Ray custom resource, with where it is and its Ray group (if any)."""

    owner: str
    role: str  # head, worker or submitter
    group: dict | None
    template: dict

    @property
    def spec(self) -> dict:
        return self.template["spec"]

    @property
    def name(self) -> str:
        group = f"[{self.group['groupName']}]" if self.group and "groupName" in self.group else ""
        return f"{self.owner} {self.role}{group}"


def ray_cluster_spec(resource: dict) -> dict | None:
    spec = resource["spec"]
    kind = resource["kind"]
    if kind == "RayCluster":
        return spec
    if kind == "RayJob":
        return spec.get("rayClusterSpec")
    if kind == "RayCronJob":
        return spec["jobTemplate"].get("rayClusterSpec")
    raise ValueError(kind)


def job_spec(resource: dict) -> dict | None:
    """The RayJob spec of a RayJob or a RayCronJob's jobTemplate."""
    if resource["kind"] == "RayJob":
        return resource["spec"]
    if resource["kind"] == "RayCronJob":
        return resource["spec"]["jobTemplate"]
    return None


def pod_templates(resource: dict) -> Iterator[PodTemplate]:
    owner = f"{resource['kind']}/{resource['metadata']['name']}"
    cluster = ray_cluster_spec(resource)
    if cluster:
        yield PodTemplate(owner, "head", cluster["headGroupSpec"], cluster["headGroupSpec"]["template"])
        for group in cluster.get("workerGroupSpecs", ()):
            yield PodTemplate(owner, "worker", group, group["template"])
    job = job_spec(resource)
    if job and "submitterPodTemplate" in job:
        yield PodTemplate(owner, "submitter", None, job["submitterPodTemplate"])


QUANTITY_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "m": 10**-3,
}


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity ("500m", "6Gi", "2") as a number (cores or bytes)."""
    text = str(value)
    for suffix, factor in sorted(QUANTITY_SUFFIXES.items(), key=lambda item: -len(item[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


# -- cron: the five standard fields, enough to find the shortest gap between two runs of a schedule ----------

CRON_FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))  # minute, hour, day of month, month, day of week


def _cron_field(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        spec, _, step = part.partition("/")
        if spec == "*":
            start, end = low, high
        elif "-" in spec:
            start, end = (int(x) for x in spec.split("-"))
        else:
            start = end = int(spec)
        if not (low <= start <= end <= high):
            raise ValueError(f"cron field {part!r} outside {low}-{high}")
        values.update(range(start, end + 1, int(step) if step else 1))
    return values


def cron_times(schedule: str, start: datetime, days: int) -> list[datetime]:
    """Every minute in [start, start + days) that the standard cron `schedule` fires at (Vixie semantics:
    with both day fields restricted, either matches)."""
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 cron fields, got {schedule!r}")
    minute, hour, mday, month, wday = (_cron_field(f, lo, hi) for f, (lo, hi) in zip(fields, CRON_FIELDS, strict=True))
    day_star = fields[2] == "*" or fields[4] == "*"
    found = []
    moment = start.replace(second=0, microsecond=0)
    for _ in range(days * 24 * 60):
        day_ok = (
            (moment.day in mday and moment.isoweekday() % 7 in wday)
            if day_star
            else (moment.day in mday or moment.isoweekday() % 7 in wday)
        )
        if moment.minute in minute and moment.hour in hour and moment.month in month and day_ok:
            found.append(moment)
        moment += timedelta(minutes=1)
    return found


def shortest_cron_interval(schedule: str, days: int = 62) -> timedelta:
    times = cron_times(schedule, datetime(2026, 1, 1), days)
    if len(times) < 2:
        raise ValueError(f"{schedule!r} fires fewer than twice in {days} days")
    return min(later - earlier for earlier, later in zip(times, times[1:], strict=False))
