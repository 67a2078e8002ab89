"""docker-compose.yml: the compose client validates it; Redis, Prometheus and Grafana wiring."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .conftest import DEPLOY, ROOT, load_yaml

COMPOSE = ROOT / "docker-compose.yml"
PROFILES = ("embedded", "gpu", "multi", "redis")


def _compose_cmd() -> list[str] | None:
    """``docker compose`` (v2 plugin) if it answers, else ``docker-compose`` (v1), else None."""
    if shutil.which("docker"):
        r = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if r.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.slow
def test_compose_config_validates():
    cmd = _compose_cmd()
    if cmd is None:
        pytest.skip("neither `docker compose` (v2 plugin) nor `docker-compose` is installed")
    profiles = [a for p in PROFILES for a in ("--profile", p)]
    env = {**os.environ, "GRAFANA_ADMIN_PASSWORD": "test-only", "STREAMVQA_API_KEYS": "ops:sha256:" + "0" * 64}
    env.pop("COMPOSE_PROFILES", None)
    r = subprocess.run([*cmd, "-f", str(COMPOSE), *profiles, "config", "-q"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{' '.join(cmd)} config failed:\n{r.stdout}\n{r.stderr}"


def test_compose_refuses_to_run_without_grafana_password():
    """No default password ships: the file insists on GRAFANA_ADMIN_PASSWORD from the caller."""
    grafana = load_yaml(COMPOSE)["services"]["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_servers_require_api_keys_from_the_caller():
    """Auth is on by default: the file insists on STREAMVQA_API_KEYS and never turns auth off."""
    for name, svc in _server_services().items():
        env = svc["environment"]
        assert env["STREAMVQA_API_KEYS"].startswith("${STREAMVQA_API_KEYS:?"), name
        assert env.get("STREAMVQA_AUTH", "on") == "on", name


def _services() -> dict:
    return load_yaml(COMPOSE)["services"]


def _server_services() -> dict:
    return {n: s for n, s in _services().items() if str(s.get("image", "")).startswith("streamvqa")}


def test_server_profiles_and_prometheus_alias():
    servers = _server_services()
    assert {p for s in servers.values() for p in s["profiles"]} >= {"embedded", "multi"}
    prom = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    targets = [t for job in prom["scrape_configs"] if job["job_name"] == "streamvqa"
               for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["streamvqa:8000"]
    for name, svc in servers.items():
        assert "streamvqa" in svc["networks"]["default"]["aliases"], name
        assert svc["environment"]["STREAMVQA_HOST"] == "0.0.0.0", name  # reachable from Prometheus
        assert svc["environment"]["STREAMVQA_PORT"] == "8000", name
        assert svc["shm_size"], f"{name}: the host KV tier lives in /dev/shm"


def test_gpu_profile_reserves_a_gpu():
    gpu = _services()["server-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert gpu["build"]["args"]["VARIANT"] == "cuda"


def _redis_conf() -> dict[str, str]:
    conf = {}
    for line in (DEPLOY / "redis" / "redis.conf").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            conf[key] = value
    return conf


def test_redis_is_a_bounded_persistent_cache():
    conf = _redis_conf()
    assert conf["maxmemory-policy"] == "allkeys-lru"
    assert conf["maxmemory"].endswith(("gb", "mb"))
    assert conf["appendonly"] == "yes" and conf["appendfsync"] == "everysec"
    redis = _services()["redis"]
    assert "./deploy/redis/redis.conf:/usr/local/etc/redis/redis.conf:ro" in redis["volumes"]
    assert "/usr/local/etc/redis/redis.conf" in " ".join(redis["command"])


def test_mounted_files_exist():
    for name, svc in _services().items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), f"{name}: {src} is missing"
