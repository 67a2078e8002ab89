"""Kubernetes manifests: schema-valid (offline, bundled schemas), probes, GPUs, shm, scraping, secrets."""

from __future__ import annotations

import copy

import pytest

from .conftest import DEPLOY, K8S, k8s_docs, k8s_files, load_yaml_all, pod_spec

KUBERNETES_VERSION = "1.37.0"
try:
    import kubernetes_validate as kv
except ImportError:  # the structural checks below still run
    kv = None
needs_validator = pytest.mark.skipif(
    kv is None, reason="kubernetes-validate==1.37.0 (bundled JSON schemas, works offline) is not installed"
)


def _validate(doc: dict) -> None:
    # strict: unknown fields are errors. A kind with no bundled schema (a CRD) raises
    # SchemaNotFoundError, which fails the test too: these manifests use only core kinds.
    kv.validate(doc, KUBERNETES_VERSION, strict=True)


@needs_validator
@pytest.mark.parametrize("path", k8s_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates_against_schema(path):
    docs = load_yaml_all(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        try:
            _validate(doc)
        except kv.ValidationError as e:
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: "
                        f"{'.'.join(map(str, e.path))}: {e.message}")


@needs_validator
def test_validator_catches_errors():
    """The check has teeth: a wrong type and an unknown field are both rejected."""
    deployment = next(d for _, d in k8s_docs() if d["kind"] == "Deployment")
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kv.ValidationError):
        _validate(bad)
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        _validate(bad)


def _streamvqa_containers():
    for path, doc in k8s_docs():
        spec = pod_spec(doc)
        if spec is None:
            continue
        for c in spec["containers"]:
            if c["image"].startswith("streamvqa"):
                yield path, doc, spec, c


def test_server_probes_and_resources():
    servers = [(d, c) for _, d, _, c in _streamvqa_containers() if c["name"] == "server"]
    assert servers
    for doc, c in servers:
        assert c["livenessProbe"]["httpGet"]["path"] == "/health", doc["metadata"]["name"]
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready", doc["metadata"]["name"]
    for _, doc, _, c in _streamvqa_containers():
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], (doc["metadata"]["name"], c["name"])


def test_gpu_roles_request_gpus():
    roles = {c["name"]: c for _, _, _, c in _streamvqa_containers()}
    for role in ("encoder", "answer"):
        res = roles[role]["resources"]
        assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == "1", role
    embedded = next(c for _, d, _, c in _streamvqa_containers() if d["metadata"]["name"] == "streamvqa-server")
    assert embedded["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_store_shares_memory_backed_shm_with_its_workers():
    for _, doc, spec, _ in _streamvqa_containers():
        vols = {v["name"]: v for v in spec["volumes"]}
        shm = [n for n, v in vols.items() if v.get("emptyDir", {}).get("medium") == "Memory"]
        assert shm, doc["metadata"]["name"]
        for c in spec["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert mounts.get("/dev/shm") in shm, (doc["metadata"]["name"], c["name"])


def test_scrape_annotations_and_multi_roles():
    for _, doc, _, _ in _streamvqa_containers():
        ann = doc["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
        assert ann["prometheus.io/port"] == "8000"
    node = next(d for _, d in k8s_docs() if d["metadata"]["name"] == "streamvqa-node")
    spec = node["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in spec["containers"]}
    assert set(containers) == {"server", "kvstore", "encoder", "answer"}
    # the server attaches to workers Kubernetes runs; all share the sockets' run directory
    cm = next(d for _, d in k8s_docs() if d["metadata"]["name"] == "streamvqa-multi-config")
    assert cm["data"]["STREAMVQA_WORKER_SPAWN"] == "false"
    run_dir = cm["data"]["STREAMVQA_RUN_DIR"]
    for name, c in containers.items():
        assert run_dir in {m["mountPath"] for m in c["volumeMounts"]}, name
    for gpu_role in ("encoder", "answer"):
        assert containers[gpu_role]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_no_secret_values_only_references():
    for path, doc in k8s_docs():
        assert doc["kind"] != "Secret", f"{path}: Secrets are created by the operator, not shipped"
    refs = [ef["secretRef"] for _, _, _, c in _streamvqa_containers() for ef in c.get("envFrom", [])
            if "secretRef" in ef]
    assert refs and all(r["name"] == "streamvqa-api-keys" and r["optional"] for r in refs)


def test_redis_statefulset_and_config_match_compose():
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_docs()}
    sts = docs[("StatefulSet", "streamvqa-redis")]
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert ("Service", "streamvqa-redis") in docs
    cm = docs[("ConfigMap", "streamvqa-redis-config")]
    assert cm["data"]["redis.conf"] == (DEPLOY / "redis" / "redis.conf").read_text()
