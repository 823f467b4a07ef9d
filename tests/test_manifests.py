"""cluster/: every overlay rendered with `kubectl kustomize` and validated, custom resources strictly against
KubeRay's CRDs (../shared/kuberay, served storage version ray.io/v1, `additionalProperties: false` added
wherever `properties` is listed), built-in kinds with kubernetes-validate (strict) for Kubernetes 1.35; then
the cross-file facts no schema knows: the image tag the Dockerfile builds, the Ray version, the node groups of
cluster/eksctl/cluster.yaml, Secret and ConfigMap references (RESULTS_DB_URL only from its Secret), KubeRay's
controller-side rules, the cron deadline, and the names docs/eks.md uses.

Not validated here (no API server, no operator): CEL rules (`x-kubernetes-validations`; a test proves our
manifests set none of the fields they guard), admission webhooks, scheduling, and whether images exist.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import tomllib
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import kubernetes_validate
import pytest
import typer.main
from dockerfile_parse import DockerfileParser

from tests.support import k8s

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
KUBERAY = SHARED / "kuberay"
CLUSTER = ROOT / "cluster"
BASE = CLUSTER / "base"
CLUSTER_SPEC_COMPONENT = CLUSTER / "components" / "ray-cluster-spec"
CLUSTER_SPEC = CLUSTER_SPEC_COMPONENT / "ray-cluster-spec.yaml"
"""The one Ray cluster spec of the RayJob, the RayCronJob and the RayCluster (a kustomize Component)."""
OVERLAYS = {"cpu": CLUSTER / "overlays" / "cpu", "eks-gpu": CLUSTER / "overlays" / "eks-gpu"}
KEPT_GROUP = {"cpu": "cpu", "eks-gpu": "gpu"}
DEVICE = {"cpu": "cpu", "eks-gpu": "cuda"}
VARIANT = {"cpu": "cpu", "eks-gpu": "gpu"}
RAY_KINDS = set(k8s.CRD_FILES)
BUILTIN_KINDS = {"Namespace", "ServiceAccount", "ConfigMap", "PersistentVolumeClaim"}
BUILTIN_KINDS |= {"Deployment", "Service", "PodDisruptionBudget"}  # the webhook service
NODEGROUP_LABEL = "eks.amazonaws.com/nodegroup"
GPU = "nvidia.com/gpu"
SECRETS_EXAMPLE = CLUSTER / "secrets" / "secrets.example.yaml"
RESULTS_DB_VARIABLE = "RESULTS_DB_URL"
RESULTS_DB_REF = {"name": "results-db", "key": "url", "optional": False}
"""The results database's URL (its password included) comes from this Secret key, required: a cluster without
it would silently fall back to SQLite on the shared EFS volume (docs/eks.md, section 5)."""

pytestmark = [
    pytest.mark.skipif(
        not KUBERAY.is_dir(), reason=f"KubeRay CRDs not found at {KUBERAY} (../shared, beside the clone)"
    ),
    pytest.mark.skipif(k8s.kustomize_binary() is None, reason="neither kubectl nor kustomize on PATH to render"),
]


# -- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crd_schemas() -> dict[str, dict]:
    """kind -> the served v1 openAPIV3Schema, as shipped (not strict)."""
    return {kind: k8s.served_schema(k8s.load_yaml(KUBERAY / name)) for kind, name in k8s.CRD_FILES.items()}


@pytest.fixture(scope="module")
def strict_validators(crd_schemas) -> dict[str, object]:
    return {kind: k8s.validator(k8s.strict(schema)) for kind, schema in crd_schemas.items()}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    """overlay name -> its rendered documents (plus the base, which is rendered and validated too)."""
    return {name: k8s.render(path) for name, path in {**OVERLAYS, "base": BASE}.items()}


def by_kind(documents: list[dict], kind: str) -> list[dict]:
    return [doc for doc in documents if doc["kind"] == kind]


def one(documents: list[dict], kind: str) -> dict:
    (found,) = by_kind(documents, kind)
    return found


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pinned_ray_version() -> str:
    (pin,) = [dep for dep in pyproject()["project"]["dependencies"] if re.match(r"ray(\[.*\])?==", dep)]
    return pin.split("==")[1]


def dockerfile_args() -> dict[str, str]:
    """The Dockerfile's global ARG defaults (before the first FROM)."""
    args = {}
    for instruction in DockerfileParser(path=str(ROOT / "Dockerfile")).structure:
        if instruction["instruction"] == "FROM":
            break
        if instruction["instruction"] == "ARG" and "=" in instruction["value"]:
            key, value = instruction["value"].split("=", 1)
            args[key] = value
    return args


def expected_tag(variant: str) -> str:
    """The tag the Dockerfile builds: <package version>-ray<RAY_VERSION>-<VARIANT> (its header comment)."""
    return f"{pyproject()['project']['version']}-ray{dockerfile_args()['RAY_VERSION']}-{variant}"


def containers(template: k8s.PodTemplate) -> list[dict]:
    return template.spec["containers"] + template.spec.get("initContainers", [])


def ray_resources(documents: list[dict]) -> list[dict]:
    return [doc for doc in documents if doc["kind"] in RAY_KINDS]


# -- schema validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", [*OVERLAYS, "base"])
def test_every_rendered_document_validates_strictly(overlay, rendered, strict_validators):
    documents = rendered[overlay]
    assert {doc["kind"] for doc in documents} == RAY_KINDS | BUILTIN_KINDS
    for doc in documents:
        where = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in RAY_KINDS:
            assert doc["apiVersion"] == "ray.io/v1", where
            assert k8s.errors(strict_validators[doc["kind"]], doc) == [], where
            # The CRD leaves metadata free-form (the API server checks ObjectMeta itself): check ours.
            assert set(doc["metadata"]) <= {"name", "namespace", "labels", "annotations"}, where
            assert doc["metadata"]["namespace"] == "policy-evaluator", where
        else:
            try:
                kubernetes_validate.validate(doc, k8s.KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{where}: {'.'.join(map(str, error.path))}: {error.message}")


def test_strict_schema_rejects_misspelt_fields_the_shipped_crd_accepts(rendered, crd_schemas, strict_validators):
    """The negative test: misspellings at four depths fail strictly, while the CRD as shipped (no
    additionalProperties anywhere) would accept them and the API server would silently prune them."""
    good = one(rendered["eks-gpu"], "RayJob")
    assert k8s.errors(strict_validators["RayJob"], good) == []
    misspelt = {
        ("spec", "shutdownAfterJobFinish"): True,
        ("spec", "rayClusterSpec", "headGroupSpec", "rayStartParam"): {"num-cpus": "0"},
        ("spec", "rayClusterSpec", "workerGroupSpecs", 0, "template", "spec", "toleration"): [],
        ("spec", "rayClusterSpec", "headGroupSpec", "template", "spec", "containers", 0, "resource"): {},
    }
    for path, value in misspelt.items():
        bad = copy.deepcopy(good)
        target = bad
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        found = k8s.errors(strict_validators["RayJob"], bad)
        assert any(f"'{path[-1]}' was unexpected" in message for message in found), (path, found)
        assert k8s.errors(k8s.validator(crd_schemas["RayJob"]), bad) == [], "the shipped CRD would accept it"


def test_kubernetes_validate_is_strict_for_built_in_kinds(rendered):
    account = copy.deepcopy(one(rendered["cpu"], "ServiceAccount"))
    kubernetes_validate.validate(account, k8s.KUBERNETES_VERSION, strict=True)
    account["metadata"]["annotation"] = account["metadata"].pop("annotations")
    with pytest.raises(kubernetes_validate.ValidationError, match="'annotation' was unexpected"):
        kubernetes_validate.validate(account, k8s.KUBERNETES_VERSION, strict=True)


def test_strict_schema_still_rejects_wrong_types_and_enums(rendered, strict_validators):
    bad = copy.deepcopy(one(rendered["cpu"], "RayCluster"))
    bad["spec"]["authOptions"]["mode"] = "password"
    bad["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # rayStartParams values are strings
    found = " ".join(k8s.errors(strict_validators["RayCluster"], bad))
    assert "'password' is not one of" in found and "0 is not of type 'string'" in found


def test_cel_guarded_fields_are_not_used(rendered, crd_schemas):
    """CEL rules are not evaluated here; none of the fields they guard may appear in our manifests."""
    for doc in ray_resources(rendered["cpu"] + rendered["eks-gpu"]):
        for path, rule in k8s.cel_rules(crd_schemas[doc["kind"]]):
            assert not k8s.has_path(doc, path), f"{doc['kind']} sets {'.'.join(path)}, guarded by CEL {rule!r}"


def test_secret_and_account_templates_validate():
    text = SECRETS_EXAMPLE.read_text()
    templates = k8s.load_all_yaml(text)
    names = {doc["metadata"]["name"] for doc in templates}
    assert names == {"ray-auth-token", "wandb-api-key", "wandb-webhook-secret", "results-db"}
    # The header's kubectl commands create the same Secrets, with the templates' keys.
    keys = {doc["metadata"]["name"]: set(doc["stringData"]) for doc in templates}
    created = re.findall(r"create secret generic ([a-z0-9-]+) --from-literal=([\w.-]+)=", text)
    assert {name for name, _ in created} == names
    assert all(key in keys[name] for name, key in created), created
    for doc in templates:
        kubernetes_validate.validate(doc, k8s.KUBERNETES_VERSION, strict=True)
        assert doc["kind"] == "Secret" and "data" not in doc
        for value in doc["stringData"].values():
            assert re.fullmatch(r"<[^<>]+>", value), f"template holds a value, not a placeholder: {value!r}"
    account = k8s.load_yaml(BASE / "serviceaccount.yaml")
    arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", arn), arn


# -- image and Ray version ------------------------------------------------------------------------------------


def test_image_tags_are_the_ones_the_dockerfile_builds(rendered):
    base_images = k8s.load_yaml(BASE / "kustomization.yaml")["images"]
    (entry,) = base_images
    assert entry["newTag"] == expected_tag("cpu")
    (gpu_entry,) = k8s.load_yaml(OVERLAYS["eks-gpu"] / "kustomization.yaml")["images"]
    assert gpu_entry == {"name": entry["newName"], "newTag": expected_tag("gpu")}, "eks-gpu retags base's repo"
    for overlay in OVERLAYS:
        images = {
            container["image"]
            for doc in ray_resources(rendered[overlay])
            for template in k8s.pod_templates(doc)
            for container in containers(template)
        }
        assert images == {f"{entry['newName']}:{expected_tag(VARIANT[overlay])}"}, overlay


def test_ray_version_everywhere_is_the_pinned_one(rendered):
    assert dockerfile_args()["RAY_VERSION"] == pinned_ray_version()
    for doc in ray_resources(rendered["cpu"] + rendered["eks-gpu"]):
        assert k8s.ray_cluster_spec(doc)["rayVersion"] == pinned_ray_version(), doc["kind"]


# -- what the issue asks of the clusters ----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_request_resources_and_land_on_their_node_groups(overlay, rendered):
    eksctl = k8s.load_yaml(CLUSTER / "eksctl" / "cluster.yaml")
    node_groups = {group["name"]: group for group in eksctl["managedNodeGroups"]}
    gpu_taints = [(t["key"], t["effect"]) for t in node_groups["gpu"]["taints"]]
    for doc in ray_resources(rendered[overlay]):
        cluster = k8s.ray_cluster_spec(doc)
        assert [g["groupName"] for g in cluster["workerGroupSpecs"]] == [KEPT_GROUP[overlay]], doc["kind"]
        assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "no work on the head"
        assert cluster["authOptions"] == {"mode": "token", "secretName": "ray-auth-token"}
        for template in k8s.pod_templates(doc):
            spec = template.spec
            for container in containers(template):
                resources = container["resources"]
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(resources[kind]), f"{template.name}: {kind}"
                if GPU in resources["limits"] or GPU in resources["requests"]:
                    assert resources["requests"][GPU] == resources["limits"][GPU], template.name
            assert spec["securityContext"]["runAsNonRoot"] is True, template.name
            group = spec["nodeSelector"][NODEGROUP_LABEL]
            assert group in node_groups, f"{template.name}: no node group {group!r} in cluster/eksctl/cluster.yaml"
            uses_gpu = any(GPU in c["resources"]["limits"] for c in containers(template))
            assert (group == "gpu") == uses_gpu, f"{template.name}: GPU Pods, and only they, go to the GPU group"
            tolerated = {(t["key"], t["effect"]) for t in spec.get("tolerations", [])}
            assert set(gpu_taints) <= tolerated if uses_gpu else not tolerated, template.name
            if template.role in ("head", "worker"):
                _check_shared_memory(template)
        prices = k8s.load_yaml(ROOT / "evaluator" / "cost" / "prices.yaml")["prices"]
        for group in cluster["workerGroupSpecs"]:  # the cost estimate prices nodes by this label
            instance_type = group["labels"]["instance-type"]
            node_group = group["template"]["spec"]["nodeSelector"][NODEGROUP_LABEL]
            assert instance_type == node_groups[node_group]["instanceType"], group["groupName"]
            assert instance_type in prices, f"{instance_type}: not in evaluator/cost/prices.yaml"
        if cluster.get("enableInTreeAutoscaling"):
            autoscaler = cluster["autoscalerOptions"]["resources"]
            assert {"cpu", "memory"} <= set(autoscaler["requests"]), "the autoscaler sidecar requests too"
            assert autoscaler["requests"] == autoscaler["limits"], doc["kind"]
    if overlay == "eks-gpu":
        assert node_groups["gpu"]["amiFamily"] == "Bottlerocket", "the NVIDIA variant ships the device plugin"


def _check_shared_memory(template: k8s.PodTemplate) -> None:
    """/dev/shm (Ray's object store) of the head and of every worker is a memory emptyDir at least as large as
    the object store (set explicitly: Ray's default, 30% of the memory limit, ignores /dev/shm and falls back to
    /tmp on disk when it does not fit) and smaller than the container's memory limit it is charged to."""
    (container,) = template.spec["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    (volume,) = [v for v in template.spec["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"]["medium"] == "Memory", template.name
    shm = k8s.quantity(volume["emptyDir"]["sizeLimit"])
    store = float(template.group["rayStartParams"]["object-store-memory"])
    assert store <= shm < k8s.quantity(container["resources"]["limits"]["memory"]), template.name
    if template.role == "head":
        return
    assert 0 <= template.group["minReplicas"] <= template.group["replicas"] <= template.group["maxReplicas"]
    assert template.group["maxReplicas"] >= 1, template.name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_three_resources_run_the_same_cluster(overlay, rendered):
    """The Pods run by three resources (RayJob, RayCronJob, RayCluster), from one spec (the component
    ray-cluster-spec), must not drift apart after the base's and the overlays' patches. Only sizes (replicas)
    and the RayCluster's autoscaling may differ."""
    documents = rendered[overlay]
    ignored = {"replicas", "minReplicas", "maxReplicas"}

    def shape(resource: dict) -> dict:
        cluster = k8s.ray_cluster_spec(resource)
        workers = [{k: v for k, v in group.items() if k not in ignored} for group in cluster["workerGroupSpecs"]]
        return {"head": cluster["headGroupSpec"], "workers": workers, "auth": cluster["authOptions"]}

    job, cron, long_lived = (one(documents, kind) for kind in ("RayJob", "RayCronJob", "RayCluster"))
    assert shape(job) == shape(cron) == shape(long_lived)
    ignored_job_fields = {"rayClusterSpec", "activeDeadlineSeconds", "entrypoint"}  # the cron sweeps
    assert {k: v for k, v in job["spec"].items() if k not in ignored_job_fields} == {
        k: v for k, v in cron["spec"]["jobTemplate"].items() if k not in ignored_job_fields
    }


def test_the_cluster_spec_is_written_once():
    """The base's Ray resources hold their names and job settings only; the cluster they run (head and worker
    groups, autoscaler, auth) is written once, in the component that the base lists and that fills it in."""
    base = k8s.load_yaml(BASE / "kustomization.yaml")
    assert base["components"] == [f"../{CLUSTER_SPEC_COMPONENT.relative_to(CLUSTER).as_posix()}"]
    component = k8s.load_yaml(CLUSTER_SPEC_COMPONENT / "kustomization.yaml")
    assert component["kind"] == "Component" and component["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    kinds = set()
    for name in base["resources"]:
        doc = k8s.load_yaml(BASE / name)
        if doc["kind"] not in RAY_KINDS:
            continue
        kinds.add(doc["kind"])
        cluster = doc.get("spec") if doc["kind"] == "RayCluster" else k8s.job_spec(doc).get("rayClusterSpec")
        assert cluster is None, f"{name} writes its cluster spec again: it comes from {CLUSTER_SPEC_COMPONENT}"
    assert kinds == RAY_KINDS
    spec = k8s.load_yaml(CLUSTER_SPEC)
    assert spec["kind"] == "RayCluster" and {"headGroupSpec", "workerGroupSpecs"} <= set(spec["spec"])


MAX_IDLE_TIMEOUT_S = 600
"""An idle GPU worker costs a GPU node: the autoscaler removes it well within 10 minutes."""


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpu_workers_scale_from_zero_with_autoscaler_v2(overlay, rendered):
    """Every cluster (RayJob, RayCronJob, RayCluster) runs Ray's autoscaler v2 with the same options and an idle
    timeout; the head does no work (num-cpus 0, no GPU); the `gpu` group rests at zero Pods (minReplicas and
    replicas 0) and may grow. KubeRay's own rules for v2 hold: no RAY_enable_autoscaler_v2 next to `version`,
    restartPolicy Never or unset. (evaluator/run/autoscaling.py asks for the GPU node; tests/test_autoscale.py runs
    the real autoscaler.)"""
    options = set()
    for doc in ray_resources(rendered[overlay]):
        cluster = k8s.ray_cluster_spec(doc)
        autoscaler = cluster["autoscalerOptions"]
        assert cluster["enableInTreeAutoscaling"] is True, doc["kind"]
        assert autoscaler["version"] == "v2", doc["kind"]
        assert 0 < autoscaler["idleTimeoutSeconds"] <= MAX_IDLE_TIMEOUT_S, doc["kind"]
        options.add(repr(autoscaler))
        head = cluster["headGroupSpec"]
        assert head["rayStartParams"]["num-cpus"] == "0" and "num-gpus" not in head["rayStartParams"]
        for template in k8s.pod_templates(doc):
            assert template.spec.get("restartPolicy", "Never") == "Never", template.name
            for container in containers(template):
                assert "RAY_enable_autoscaler_v2" not in env_of(container), f"{template.name}: `version` sets it"
                if template.role == "head":
                    assert GPU not in container["resources"]["limits"], "a CPU-only head"
        for group in cluster["workerGroupSpecs"]:
            if group["groupName"] == "gpu":
                assert group["minReplicas"] == group["replicas"] == 0 < group["maxReplicas"], doc["kind"]
            else:
                assert group["minReplicas"] >= 1, doc["kind"]
    assert len(options) == 1, "the three resources set the same autoscaler options"
    if overlay == "eks-gpu":
        (gpu,) = [
            g for g in k8s.load_yaml(CLUSTER / "eksctl" / "cluster.yaml")["managedNodeGroups"] if g["name"] == "gpu"
        ]
        assert gpu["minSize"] == gpu["desiredCapacity"] == 0, "no GPU instance while no GPU Pod wants one"
        assert gpu["propagateASGTags"] is True and gpu["iam"]["withAddonPolicies"]["autoScaler"] is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_jobs_are_bounded_and_run_the_evaluator_with_markers(overlay, rendered):
    from evaluator.cli.app import app

    run_options = {
        opt
        for param in typer.main.get_command(app).commands["run"].params
        for opt in (*param.opts, *param.secondary_opts)
    }
    sweep_options = {
        opt
        for param in typer.main.get_command(app).commands["sweep"].params
        for opt in (*param.opts, *param.secondary_opts)
    }
    for doc in by_kind(rendered[overlay], "RayJob") + by_kind(rendered[overlay], "RayCronJob"):
        job = k8s.job_spec(doc)
        words = job["entrypoint"].split()
        command, options = ("sweep", sweep_options) if doc["kind"] == "RayCronJob" else ("run", run_options)
        assert words[:2] == ["policy-evaluator", command] and "--markers" in words, job["entrypoint"]
        unknown = [w.split("=")[0] for w in words[2:] if w.startswith("-") and w.split("=")[0] not in options]
        assert unknown == [], f"`policy-evaluator {command}` has no option {unknown}"
        assert job["shutdownAfterJobFinishes"] is True
        assert job["ttlSecondsAfterFinished"] > 0
        assert 0 < job["preRunningDeadlineSeconds"] < job["activeDeadlineSeconds"]
        assert job["submitterConfig"]["backoffLimit"] >= 0
        # An outage (exit 3) is retried once on a new cluster; KubeRay cannot tell exit codes apart, so no more.
        assert job["backoffLimit"] == 1
        assert job["submitterPodTemplate"]["spec"]["restartPolicy"] == "Never"


def test_cron_runs_end_before_the_next_one_starts(rendered):
    """RayCronJob has no concurrency policy: activeDeadlineSeconds must be shorter than the schedule's
    shortest interval, or runs could overlap."""
    for overlay in OVERLAYS:
        cron = one(rendered[overlay], "RayCronJob")
        ZoneInfo(cron["spec"]["timeZone"])  # an IANA name, or this raises
        interval = k8s.shortest_cron_interval(cron["spec"]["schedule"])
        template = cron["spec"]["jobTemplate"]
        attempts = 1 + template.get("backoffLimit", 0)  # each retry is a new run with its own deadline
        deadline = attempts * timedelta(seconds=template["activeDeadlineSeconds"])
        assert deadline < interval, f"{overlay}: {attempts} runs of up to {deadline} >= interval {interval}"


def test_cron_interval_helper():
    assert k8s.shortest_cron_interval("0 3 * * *") == timedelta(days=1)
    assert k8s.shortest_cron_interval("*/15 * * * *") == timedelta(minutes=15)
    assert k8s.shortest_cron_interval("0 1,23 * * *") == timedelta(hours=2)
    assert k8s.shortest_cron_interval("0 0 * * 1-5") == timedelta(days=1)
    with pytest.raises(ValueError):
        k8s.shortest_cron_interval("0 25 * * *")


def test_kuberay_controller_rules(rendered):
    """Rules KubeRay's operator enforces outside the CRD schema (ray-operator/controllers/ray/utils/validation.go),
    encoded by hand for the fields we use."""
    dns1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
    max_name = {"RayJob": 47, "RayCronJob": 47, "RayCluster": 53}  # cluster names get 6-character suffixes
    for overlay in OVERLAYS:
        for doc in ray_resources(rendered[overlay]):
            name = doc["metadata"]["name"]
            assert dns1035.fullmatch(name) and len(name) <= max_name[doc["kind"]], name
            cluster = k8s.ray_cluster_spec(doc)
            version = tuple(int(part) for part in cluster["rayVersion"].split("."))
            assert version >= (2, 52, 0), "token auth needs Ray >= 2.52"
            groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
            assert len({g.get("groupName") for g in cluster["workerGroupSpecs"]}) == len(cluster["workerGroupSpecs"])
            for group in groups:
                assert not ({"num-cpus", "num-gpus", "memory", "resources"} & set(group["rayStartParams"])) or (
                    "resources" not in group
                ), "rayStartParams resources and the group's `resources` are exclusive"
                assert "labels" not in group["rayStartParams"]
                assert group["template"]["spec"]["containers"], "at least one container"
            job = k8s.job_spec(doc)
            if job is not None:
                assert job["shutdownAfterJobFinishes"] or not job.get("ttlSecondsAfterFinished")
                assert job.get("activeDeadlineSeconds", 1) > 0


def test_overlay_patches_refuse_a_reordered_base(tmp_path: Path):
    """Each overlay drops a worker group by index after a JSON-patch `test` of its name, and the base sets the
    RayCluster's `cpu` replicas likewise: with the groups swapped in the cluster spec (the component), the base
    must fail to render; with the base's patch moved to the new index, every overlay still must, rather than
    drop the wrong group."""
    clone = tmp_path / "cluster"
    shutil.copytree(CLUSTER, clone)
    spec = clone / CLUSTER_SPEC.relative_to(CLUSTER)
    text = spec.read_text()
    head, workers = text.split("  workerGroupSpecs:\n")
    cpu_group, gpu_group = ("    - groupName:" + part for part in workers.split("    - groupName:")[1:])
    spec.write_text(head + "  workerGroupSpecs:\n" + gpu_group + cpu_group)
    with pytest.raises(RuntimeError, match="testing value"):
        k8s.render(clone / "base")
    base = clone / "base" / "kustomization.yaml"
    text = base.read_text()
    assert text.count("/spec/workerGroupSpecs/0/") == 2, "the base's RayCluster patch: test, then replace"
    base.write_text(text.replace("/spec/workerGroupSpecs/0/", "/spec/workerGroupSpecs/1/"))
    for doc in ray_resources(k8s.render(clone / "base")):
        assert [g["groupName"] for g in k8s.ray_cluster_spec(doc)["workerGroupSpecs"]] == ["gpu", "cpu"], doc["kind"]
    for overlay in OVERLAYS:
        with pytest.raises(RuntimeError, match="testing value"):
            k8s.render(clone / "overlays" / overlay)


# -- references between files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve_and_configuration_is_the_seeds(overlay, rendered):
    from evaluator.cli.app import app

    seed_variables = {
        param.envvar for param in typer.main.get_command(app).commands["run"].params if isinstance(param.envvar, str)
    }
    documents = rendered[overlay]
    secrets = {
        doc["metadata"]["name"]: set(doc["stringData"])
        for doc in k8s.load_all_yaml((CLUSTER / "secrets" / "secrets.example.yaml").read_text())
    }
    config_maps = {doc["metadata"]["name"]: doc["data"] for doc in by_kind(documents, "ConfigMap")}
    accounts = {doc["metadata"]["name"] for doc in by_kind(documents, "ServiceAccount")}
    for doc in ray_resources(documents):
        assert k8s.ray_cluster_spec(doc)["authOptions"]["secretName"] in secrets
        for template in k8s.pod_templates(doc):
            if "serviceAccountName" in template.spec:
                assert template.spec["serviceAccountName"] in accounts, template.name
            for container in containers(template):
                for source in container.get("envFrom", []):
                    assert source["configMapRef"]["name"] in config_maps, template.name
                for variable in container.get("env", []):
                    assert variable["name"] in seed_variables, f"{variable['name']} is no option of the CLI"
                    ref = variable.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["key"] in secrets[ref["name"]], template.name
    (config,) = config_maps.values()
    assert set(config) <= seed_variables and "POLICY_URI" in config
    assert config["DEVICE"] == DEVICE[overlay]
    assert config["DATA_DIR"] == "/app/data"
    head = one(documents, "RayJob")["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert "WANDB_API_KEY" not in config, "the key comes from a Secret, never a ConfigMap"
    assert RESULTS_DB_VARIABLE not in config, "the database URL holds a password: a Secret, never a ConfigMap"
    assert any(v["name"] == "WANDB_API_KEY" and "secretKeyRef" in v["valueFrom"] for v in head["containers"][0]["env"])
    assert head["serviceAccountName"] == "policy-evaluator"
    (account,) = by_kind(documents, "ServiceAccount")
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"], "IRSA"


def test_eksctl_cluster_matches_the_validated_kubernetes_version():
    eksctl = k8s.load_yaml(CLUSTER / "eksctl" / "cluster.yaml")
    assert eksctl["metadata"]["version"] == k8s.KUBERNETES_VERSION
    assert eksctl["iam"]["withOIDC"] is True, "IRSA needs the cluster's OIDC provider"
    values = k8s.load_yaml(CLUSTER / "kuberay-operator" / "values.yaml")
    assert {"name": "RayCronJob", "enabled": True} in values["featureGates"]


def test_docs_eks_commands_match_the_manifests(rendered):
    """Every cluster/ path docs/eks.md names exists, and every resource it addresses by kind and name
    exists in the rendered overlays (or is one of the Secrets of the template)."""
    text = (ROOT / "docs" / "eks.md").read_text()
    for path in set(re.findall(r"\bcluster/[\w./-]+", text)):
        assert (ROOT / path.rstrip(".")).exists(), f"docs/eks.md names {path}, which does not exist"
    names: dict[str, set[str]] = {}
    for doc in rendered["cpu"] + rendered["eks-gpu"]:
        names.setdefault(doc["kind"].lower(), set()).add(doc["metadata"]["name"])
    for doc in k8s.load_all_yaml((CLUSTER / "secrets" / "secrets.example.yaml").read_text()):
        names.setdefault("secret", set()).add(doc["metadata"]["name"])
    cluster_name = one(rendered["cpu"], "RayCluster")["metadata"]["name"]
    job_name = one(rendered["cpu"], "RayJob")["metadata"]["name"]
    names["svc"] = {f"{cluster_name}-head-svc", f"{job_name}-head-svc"}
    names["job"] = {job_name}  # KubeRay names the submitter Job after the RayJob
    aliases = {"rayjobs": "rayjob", "rayclusters": "raycluster", "raycronjobs": "raycronjob", "service": "svc"}
    kinds = r"(rayjobs?|rayclusters?|raycronjobs?|secret|svc|service|job)"
    slashed = re.findall(rf"\b{kinds}/([a-z0-9][a-z0-9-]*)", text)  # job/policy-evaluator-run
    verbs = re.findall(rf"\b(?:get|delete|patch|describe|create)[ \t]+{kinds}[ \t]+([a-z0-9-]+)", text)
    created = [("secret", name) for name in re.findall(r"\bsecret[ \t]+generic[ \t]+([a-z0-9-]+)", text)]
    referenced = slashed + [(kind, name) for kind, name in verbs if (kind, name) != ("secret", "generic")] + created
    assert len(referenced) >= 8, f"docs/eks.md addresses few resources by name: {referenced}"
    for kind, name in referenced:
        kind = aliases.get(kind, kind)
        assert name in names.get(kind, set()), f"docs/eks.md uses {kind} {name}, not in the manifests"
    commands = text.replace("\\\n", " ")  # shell continuation lines joined
    keys = {doc["metadata"]["name"]: set(doc["stringData"]) for doc in k8s.load_all_yaml(SECRETS_EXAMPLE.read_text())}
    for name, key in re.findall(r"\bsecret[ \t]+generic[ \t]+([a-z0-9-]+)[ \t]+--from-literal=([\w.-]+)=", commands):
        assert key in keys[name], f"docs/eks.md creates Secret {name} with key {key}, which the manifests do not read"
    for account in re.findall(r"iamserviceaccount[^\n]*?--name ([a-z0-9-]+)", commands):
        assert account in names["serviceaccount"], f"IRSA for ServiceAccount {account}, not in the manifests"
    eksctl_name = k8s.load_yaml(CLUSTER / "eksctl" / "cluster.yaml")["metadata"]["name"]
    assert set(re.findall(r"--cluster ([a-z0-9-]+)", commands)) == {eksctl_name}
    namespace = one(rendered["cpu"], "Namespace")["metadata"]["name"]
    assert set(re.findall(r"(?:-n|--namespace)[ =]([a-z0-9-]+)", text)) <= {namespace, "kuberay-system", "kube-system"}
    for variant in VARIANT.values():
        assert expected_tag(variant) in text, f"docs/eks.md should build and push {expected_tag(variant)}"


def test_kubectl_kustomize_is_what_renders(tmp_path: Path):
    """The renderer is the real one: a broken kustomization fails loudly, it is not skipped."""
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(RuntimeError):
        k8s.render(tmp_path)
    assert subprocess.run([*k8s.kustomize_binary(), "--help"], capture_output=True).returncode == 0


# -- the webhook service and the shared DATA_DIR --------------------------------------------------------------

READ_ONLY_ROOT_VARIABLES = {"HOME", "WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "PYTHONDONTWRITEBYTECODE"}
"""Variables the webhook container sets besides `serve`'s own: where things write with a read-only root."""


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_webhook_deployment_runs_serve_hardened_and_probed(overlay, rendered):
    from evaluator.cli.app import app
    from evaluator.service import ServiceSettings, create_app

    documents = rendered[overlay]
    deployment = one(documents, "Deployment")
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    (container,) = pod["containers"]
    assert spec["replicas"] == 2 and spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert container["command"] == ["policy-evaluator", "serve"]
    serve = typer.main.get_command(app).commands["serve"]
    # Non-root, read-only root file system (only /tmp writable, and HOME there), nothing escalates.
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    env = {variable["name"]: variable for variable in container["env"]}
    assert all(env[name]["value"].startswith("/tmp") for name in ("HOME", "WANDB_DIR", "WANDB_CONFIG_DIR"))
    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind]), kind
    assert k8s.quantity(resources["requests"]["memory"]) <= k8s.quantity(resources["limits"]["memory"])
    # Probes ask routes the app serves, on a port the container opens; SERVICE_PORT is that port.
    settings = ServiceSettings(ray_address="http://x:8265", webhook_secret="x" * 16)
    routes = {resource.canonical for resource in create_app(settings).router.resources()}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and path in routes and get["port"] in ports, probe
    assert int(env["SERVICE_PORT"]["value"]) == ports["http"]
    # Every variable is one `serve` reads (or a read-only-root one); secrets come from the Secrets only.
    serve_variables = {param.envvar for param in serve.params if isinstance(param.envvar, str)}
    secrets = {
        doc["metadata"]["name"]: set(doc["stringData"])
        for doc in k8s.load_all_yaml((CLUSTER / "secrets" / "secrets.example.yaml").read_text())
    }
    # RESULTS_DB_URL: given to every evaluator container (test_commands_given_results_db_url_read_it checks `serve`).
    for name, variable in env.items():
        assert name in serve_variables | READ_ONLY_ROOT_VARIABLES | {RESULTS_DB_VARIABLE}, f"`serve` reads no {name}"
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        secret_variables = ("WEBHOOK_SECRET", "RAY_AUTH_TOKEN", "WANDB_API_KEY", RESULTS_DB_VARIABLE)
        assert (ref is not None) == (name in secret_variables), name
        if ref:
            assert ref["key"] in secrets[ref["name"]], name
    config_maps = {doc["metadata"]["name"] for doc in by_kind(documents, "ConfigMap")}
    assert {source["configMapRef"]["name"] for source in container["envFrom"]} <= config_maps
    # RAY_ADDRESS is the long-lived RayCluster's dashboard (KubeRay names its head Service <name>-head-svc),
    # with the token of that cluster's authOptions Secret.
    cluster = one(documents, "RayCluster")
    (head,) = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    dashboard = {port["name"]: port["containerPort"] for port in head["ports"]}["dashboard"]
    assert env["RAY_ADDRESS"]["value"] == f"http://{cluster['metadata']['name']}-head-svc:{dashboard}"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == cluster["spec"]["authOptions"]["secretName"]
    # The Ray Pods' image, on the CPU node group; the ServiceAccount exists.
    images = {c["image"] for doc in ray_resources(documents) for t in k8s.pod_templates(doc) for c in containers(t)}
    assert {container["image"]} == images
    eksctl = k8s.load_yaml(CLUSTER / "eksctl" / "cluster.yaml")
    assert pod["nodeSelector"][NODEGROUP_LABEL] in {group["name"] for group in eksctl["managedNodeGroups"]}
    assert pod["serviceAccountName"] in {doc["metadata"]["name"] for doc in by_kind(documents, "ServiceAccount")}
    # The Service and the PodDisruptionBudget select exactly these Pods.
    service, budget = one(documents, "Service"), one(documents, "PodDisruptionBudget")
    assert service["spec"]["selector"].items() <= labels.items()
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in ports
    assert 1 <= budget["spec"]["minAvailable"] < spec["replicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_head_mounts_the_shared_data_volume_at_data_dir(overlay, rendered):
    """The runs' outputs (reports, episodes.parquet, replays) and the checkpoint cache live in DATA_DIR: every
    Ray head (one-off job, nightly sweep, long-lived cluster of the webhook jobs) mounts the same ReadWriteMany
    claim there. (The results and the sweep leases live in the results database: see below.)"""
    documents = rendered[overlay]
    (claim,) = by_kind(documents, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "heads of several clusters mount it at once"
    data_dir = one(documents, "ConfigMap")["data"]["DATA_DIR"]
    for doc in ray_resources(documents):
        (head,) = [template for template in k8s.pod_templates(doc) if template.role == "head"]
        volumes = {volume["name"]: volume for volume in head.spec["volumes"]}
        (mount,) = [m for m in head.spec["containers"][0]["volumeMounts"] if m["mountPath"] == data_dir]
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"], doc["kind"]


def test_docs_webhooks_names_what_exists(rendered):
    """docs/webhooks.md: the cluster/ paths, the resources it addresses by kind and name, the Secrets it creates
    and the variables it names all exist (in the manifests, the Secret templates, or `serve`/`sweep`)."""
    from evaluator.cli.app import app

    text = (ROOT / "docs" / "webhooks.md").read_text()
    for path in set(re.findall(r"\bcluster/[\w./-]+", text)):
        assert (ROOT / path.rstrip(".")).exists(), f"docs/webhooks.md names {path}, which does not exist"
    names = {(doc["kind"].lower(), doc["metadata"]["name"]) for doc in rendered["cpu"]}
    aliases = {"svc": "service", "deployment": "deployment"}
    for kind, name in re.findall(r"\b(deployment|svc)/([a-z0-9][a-z0-9-]*)", text):
        assert (aliases[kind], name) in names, f"docs/webhooks.md uses {kind}/{name}"
    templates = {
        doc["metadata"]["name"] for doc in k8s.load_all_yaml((CLUSTER / "secrets" / "secrets.example.yaml").read_text())
    }
    assert set(re.findall(r"secret generic ([a-z0-9-]+)", text)) <= templates
    commands = typer.main.get_command(app).commands
    variables = {p.envvar for name in ("serve", "sweep") for p in commands[name].params if isinstance(p.envvar, str)}
    for variable in re.findall(r"`((?:SWEEP|JOB|POLICY_URI|WEBHOOK)_[A-Z_]+)`", text):
        assert variable in variables, f"docs/webhooks.md names {variable}, which no command reads"


# -- the results database -------------------------------------------------------------------------------------


def env_of(container: dict) -> dict[str, dict]:
    return {variable["name"]: variable for variable in container.get("env", [])}


def every_container(documents: list[dict]) -> dict[str, dict]:
    """Every container of every Pod template (Ray heads, workers and submitters; the webhook Deployment), named."""
    found = {}
    for doc in ray_resources(documents):
        for template in k8s.pod_templates(doc):
            for container in containers(template):
                found[f"{template.name} {container['name']}"] = container
    for deployment in by_kind(documents, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"] + pod.get("initContainers", []):
            found[f"Deployment/{deployment['metadata']['name']} {container['name']}"] = container
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_evaluator_container_gets_results_db_url_from_its_secret(overlay, rendered):
    """Runs, checkpoints, episodes and the sweep leases live in the results database. Its URL, password included,
    reaches exactly the containers that run the evaluator (every Ray head, where the driver runs, and the
    webhook service: those WANDB_API_KEY reaches), from the Secret `results-db`, key `url`, required; never as
    a literal value, in a ConfigMap or anywhere else in a manifest. The Secret's template declares the key."""
    documents = rendered[overlay]
    everywhere = every_container(documents)
    heads = {
        f"{template.name} {container['name']}"
        for doc in ray_resources(documents)
        for template in k8s.pod_templates(doc)
        if template.role == "head"
        for container in template.spec["containers"]
    }
    webhook = {name for name in everywhere if name.startswith("Deployment/policy-evaluator-webhook ")}
    assert len(heads) == 3 and len(webhook) == 1, (heads, webhook)
    given_wandb_key = {name for name, container in everywhere.items() if "WANDB_API_KEY" in env_of(container)}
    given_database = {name for name, container in everywhere.items() if RESULTS_DB_VARIABLE in env_of(container)}
    assert given_wandb_key == heads | webhook, sorted(given_wandb_key)
    assert given_database == given_wandb_key, f"RESULTS_DB_URL reaches {sorted(given_database)}"
    for name in given_database:
        variable = env_of(everywhere[name])[RESULTS_DB_VARIABLE]
        assert "value" not in variable, f"{name}: RESULTS_DB_URL as a literal value"
        assert variable["valueFrom"] == {"secretKeyRef": RESULTS_DB_REF}, name
    for container in everywhere.values():
        assert all("secretRef" not in source for source in container.get("envFrom", [])), "Secrets by key only"
    for config_map in by_kind(documents, "ConfigMap"):
        assert RESULTS_DB_VARIABLE not in config_map["data"], "the URL holds a password: a Secret, never a ConfigMap"
    assert not re.search(r"postgres(?:ql)?(?:\+\w+)?://", repr(documents)), "a database URL in a manifest"
    (template,) = [
        doc for doc in k8s.load_all_yaml(SECRETS_EXAMPLE.read_text()) if doc["metadata"]["name"] == "results-db"
    ]
    assert set(template["stringData"]) == {RESULTS_DB_REF["key"]}
    url = template["stringData"][RESULTS_DB_REF["key"]]
    assert re.fullmatch(r"<postgresql(?:\+psycopg)?://\w+:[A-Z_]+@[A-Z_]+:5432/\w+>", url), url


def test_commands_given_results_db_url_read_it():
    """The Ray heads run `run` (RayJob) and `sweep` (RayCronJob, the webhook's jobs), the webhook Deployment
    `serve`: each command given RESULTS_DB_URL reads it (`--results-db`)."""
    from evaluator.cli.app import app

    commands = typer.main.get_command(app).commands
    reading = {
        name
        for name, command in commands.items()
        if RESULTS_DB_VARIABLE in {param.envvar for param in command.params if isinstance(param.envvar, str)}
    }
    assert {"run", "sweep", "serve", "results"} <= reading, f"only {sorted(reading)} read {RESULTS_DB_VARIABLE}"
