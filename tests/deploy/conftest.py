"""Shared helpers for the deployment checks: repository paths and YAML loading."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def load_yaml_all(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


def k8s_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in k8s_files() for d in load_yaml_all(p)]


def pod_spec(doc: dict) -> dict | None:
    """The pod spec of a workload (Deployment, StatefulSet, DaemonSet, Job) or a Pod, else None."""
    if doc.get("kind") == "Pod":
        return doc["spec"]
    tmpl = (doc.get("spec") or {}).get("template")
    return tmpl["spec"] if tmpl else None
