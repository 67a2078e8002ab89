"""The replicated server's Kubernetes manifests (offline; tests/deploy validates every manifest
against the bundled schemas): a StatefulSet behind a headless Service of peer addresses, each
pod's replica id and advertised URL, readiness on the directory lease, a PodDisruptionBudget,
and a ConfigMap the server accepts with the cluster on."""

from __future__ import annotations

import pytest

from streamvqa.cluster.config import ClusterConfig
from streamvqa.server.settings import ServerSettings
from tests.deploy.conftest import K8S, load_yaml_all

DOCS = {(d["kind"], d["metadata"]["name"]): d for p in sorted((K8S / "cluster").glob("*.yaml"))
        for d in load_yaml_all(p)}


def test_statefulset_peers_and_pdb_agree() -> None:
    sts = DOCS[("StatefulSet", "streamvqa-replica")]
    peers = DOCS[("Service", sts["spec"]["serviceName"])]
    assert peers["spec"]["clusterIP"] == "None" and peers["spec"]["publishNotReadyAddresses"] is True
    labels = sts["spec"]["selector"]["matchLabels"]
    assert labels.items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    for kind, name in (("Service", "streamvqa-peers"), ("Service", "streamvqa-replicas")):
        assert DOCS[(kind, name)]["spec"]["selector"] == labels
    pdb = DOCS[("PodDisruptionBudget", "streamvqa-replica")]
    assert pdb["spec"]["selector"]["matchLabels"] == labels and pdb["spec"]["maxUnavailable"] == 1
    assert sts["spec"]["replicas"] >= 2


def test_each_pod_names_itself_and_its_peer_address() -> None:
    sts = DOCS[("StatefulSet", "streamvqa-replica")]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["STREAMVQA_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    url = env["STREAMVQA_ADVERTISE_URL"]["value"]
    assert url.startswith("http://$(STREAMVQA_REPLICA_ID).streamvqa-peers.streamvqa.svc")
    assert url.endswith(":8000")
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"  # 503 without a lease (forward.py)
    assert {"name": "streamvqa-cluster-config"} == c["envFrom"][0]["configMapRef"]


def test_configmap_is_a_valid_cluster_setting() -> None:
    data = DOCS[("ConfigMap", "streamvqa-cluster-config")]["data"]
    s = ServerSettings.from_env({**data, "STREAMVQA_REPLICA_ID": "streamvqa-replica-0",
                                 "STREAMVQA_ADVERTISE_URL": "http://streamvqa-replica-0.streamvqa-peers:8000"})
    cfg = ClusterConfig.from_settings(s)
    assert cfg.replica_id == "streamvqa-replica-0" and cfg.lease_ms == 5000 and "admin" in cfg.admin_keys


@pytest.mark.parametrize("bad,reason", [
    ({"STREAMVQA_STORE_DURABLE": "false"}, "store_durable"),
    ({"STREAMVQA_STORE_REDIS_URL": ""}, "store_redis_url"),
    ({"STREAMVQA_TOPOLOGY": "multi"}, "embedded"),
])
def test_cluster_settings_refuse_what_breaks_failover(bad: dict[str, str], reason: str) -> None:
    data = {**DOCS[("ConfigMap", "streamvqa-cluster-config")]["data"], **bad}
    with pytest.raises(ValueError, match=reason):
        ServerSettings.from_env(data)
