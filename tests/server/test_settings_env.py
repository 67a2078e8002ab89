"""Every ``STREAMVQA_*`` variable the docs mention still works: each is read by a settings model
(set it to a valid value, and the field takes it) or by the one component that documents it."""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path

import pytest
from annotated_types import Ge, Gt, Le

from streamvqa.server.settings import ServerSettings, StoreSettings, env_names

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
NAME_RE = re.compile(r"\bSTREAMVQA_[A-Z0-9_]+")

# values the type alone does not make valid (patterns, URLs, origins)
SAMPLES = {
    ("store", "shm_prefix"): "svq_docs",
    ("store", "redis_url"): "redis://127.0.0.1:6390/0",
    ("cors_allow_origins",): "https://a.example,https://b.example",
    ("cors_allow_headers",): "X-Test",
    ("allowed_networks",): "10.0.0.0/8",
    ("whip_ice_addresses",): "127.0.0.1,host",
    ("cluster_redis_url",): "redis://127.0.0.1:6391/0",
    ("advertise_url",): "http://127.0.0.1:8001",
}
EXPECTED = {
    ("cors_allow_origins",): ["https://a.example", "https://b.example"],
    ("cors_allow_headers",): ["X-Test"],
    ("whip_ice_addresses",): ["127.0.0.1", "host"],
}
# settings that are only valid together with another
COMPANIONS = {
    ("store", "durable"): {"STREAMVQA_STORE_REDIS_URL": "redis://127.0.0.1:6390/0"},
    ("cluster_redis_url",): {"STREAMVQA_STORE_REDIS_URL": "redis://127.0.0.1:6390/0", "STREAMVQA_STORE_DURABLE": "true"},
}


def documented() -> set[str]:
    return {n for p in DOCS for n in NAME_RE.findall(p.read_text())}


def _field(path: tuple[str, ...]):
    model = StoreSettings if path[0] == "store" else ServerSettings
    return model.model_fields[path[-1]]


def sample(path: tuple[str, ...]) -> tuple[str, object]:
    """A valid value for the field other than its default, as a variable and as parsed."""
    field = _field(path)
    if path in SAMPLES:
        raw = SAMPLES[path]
        return raw, EXPECTED.get(path, raw)
    default = field.get_default(call_default_factory=True)
    kind = field.annotation
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None
        kind = next(t for t in typing.get_args(kind) if t is not type(None))
    if typing.get_origin(kind) is typing.Literal:
        choice = next(c for c in typing.get_args(kind) if c != default)
        return str(choice), choice
    if kind is bool:
        return str(not default).lower(), not default
    if kind in (int, float):
        lo = next((m.ge if isinstance(m, Ge) else m.gt for m in field.metadata if isinstance(m, Ge | Gt)), 0)
        hi = next((m.le for m in field.metadata if isinstance(m, Le)), None)
        value = kind(max(default or 0, lo) + 1)
        if hi is not None and value > hi:
            value = kind(hi - 1)
        return str(value), value
    return "docs-sample", "docs-sample"


def test_docs_mention_settings_variables():
    names = documented()
    assert len(names) > 25 and "STREAMVQA_STORE_HOST_BYTES" in names and "STREAMVQA_MAX_STREAMS" in names


@pytest.mark.parametrize("name", sorted(documented() & set(env_names()) | set(env_names())))
def test_documented_setting_takes_effect(name):
    path = env_names()[name]
    raw, want = sample(path)
    settings = ServerSettings.from_env({name: raw, **COMPANIONS.get(path, {})})
    got = settings
    for part in path:
        got = getattr(got, part)
    default = _field(path).get_default(call_default_factory=True)
    assert got == want and got != default


def test_documented_store_prefix_names_store_settings():
    prefixes = {n for n in documented() if n.endswith("_")}
    for prefix in prefixes:
        assert any(n.startswith(prefix) for n in env_names()), prefix


def test_variables_read_outside_the_settings_take_effect(tmp_path, monkeypatch):
    """The few documented variables read by other components (not server settings)."""
    from bench import replay
    from streamvqa.engine.spill import spill_dir
    from streamvqa.models.smollm2 import cache_root
    from streamvqa.policies.retrieval.rekv_external import encoder_path
    from streamvqa.server.allocator import configure

    monkeypatch.setenv("STREAMVQA_CACHE", str(tmp_path))
    assert cache_root() == tmp_path and spill_dir().is_relative_to(tmp_path)
    enc = tmp_path / "clip"
    enc.mkdir()
    (enc / "config.json").write_text(json.dumps({"model_type": "clip"}))
    monkeypatch.setenv("STREAMVQA_ENCODER_DIR", str(enc))
    assert encoder_path(None) == enc
    assert configure({"STREAMVQA_MALLOC_TUNE": "0"}) == {}
    monkeypatch.setenv("STREAMVQA_JUDGE_URL", "http://judge.example/v1")
    monkeypatch.setenv("STREAMVQA_JUDGE_MODEL", "judge-m")
    monkeypatch.setenv("STREAMVQA_JUDGE_API_KEY", "k-judge")
    judge = replay.JudgeConfig.from_env()
    assert (judge.url, judge.model, judge.api_key) == ("http://judge.example/v1", "judge-m", "k-judge")
    assert replay.SERVER_KEY_ENV == "STREAMVQA_API_KEY"  # read by `bench real --server`


def test_every_documented_variable_is_covered():
    outside = {"STREAMVQA_CACHE", "STREAMVQA_ENCODER_DIR", "STREAMVQA_MALLOC_TUNE", "STREAMVQA_API_KEY",
               "STREAMVQA_JUDGE_URL", "STREAMVQA_JUDGE_MODEL", "STREAMVQA_JUDGE_API_KEY",
               "STREAMVQA_SCREENSHOTS"}  # the last: where tests/console/test_browser.py saves its screenshots
    left = {n for n in documented() if n not in env_names() and n not in outside and not n.endswith("_")}
    assert not left, f"documented but read by nothing known: {sorted(left)}"
