"""One encoding pipeline: every preset runs through the session's public phases; policies never
import the engine; a replica is rebuilt through `StreamSession.restore` and answers as the
session that encoded the stream."""

import ast
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from streamvqa.engine.replica import sync
from streamvqa.engine.session import StreamSession
from streamvqa.policies.presets import PRESETS, resolve
from streamvqa.store.base import MemoryStore
from tests.engine.conftest import get_adapter, make_frames

ROOT = Path(__file__).resolve().parents[2] / "streamvqa"
# small windows and budgets so every stage acts on a short stream
OPTIONS = {"rekv": {"n_local": 40, "topk": 2}, "sliding-window": {"n_local": 40}, "streamkv": {"n_local": 40},
           "livevlm": {"n_local": 40, "memory_tokens": 60}, "streamingtom": {"n_local": 60},
           "infinipot-v": {"memory_tokens": 60}, "streammem": {"memory_tokens": 60, "unit_frames": 2},
           "resv": {"memory_tokens": 60}, "rlivs": {"unit_frames": 2, "retention_options": {"caption_tokens": 2}},
           "hybrid": {"n_local": 40, "memory_tokens": 40, "topk": 2}}
REPLICABLE = {"full", "rekv", "sliding-window"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_policies_never_import_the_engine_and_the_model_base_no_family():
    for path in (ROOT / "policies").rglob("*.py"):
        bad = {m for m in imports_of(path) if m.startswith("streamvqa.engine")}
        assert not bad, (path.name, bad)
    assert not {m for m in imports_of(ROOT / "models" / "base.py") if m.startswith("streamvqa.models.grounded")}


@pytest.mark.slow  # a fresh interpreter
def test_every_policy_module_imports_on_its_own():
    modules = sorted(f"streamvqa.policies.{p.stem}" for p in (ROOT / "policies").glob("*.py") if p.stem != "__init__")
    for m in modules:  # each first, in a fresh interpreter: an import cycle fails here
        subprocess.run([sys.executable, "-c", f"import {m}"], check=True, cwd=ROOT.parent)


@pytest.mark.parametrize("method", [m for m in PRESETS if m != "rekv-external"])
def test_every_preset_encodes_through_the_public_phases(method, monkeypatch):
    adapter = get_adapter("tiny:smolvlm")
    session = StreamSession("s", adapter, MemoryStore(), method, resolve(method, OPTIONS.get(method)),
                            threading.Lock(), [])
    calls = {"prepare": 0, "forward_unit": 0, "commit": 0}
    for name in calls:
        phase = getattr(session, name)

        def spy(*args, _phase=phase, _name=name):
            calls[_name] += 1
            return _phase(*args)

        monkeypatch.setattr(session, name, spy)
    for image, t in make_frames(6):
        session.push_frame(image, t)
    answer = session.answer("What happened?", max_tokens=2)
    stats = session.stats()
    assert calls["prepare"] == calls["forward_unit"] == calls["commit"] == session.next_index == stats.units_encoded > 0
    assert stats.frames_received == 6 and 0 < stats.frames_encoded <= 6 and answer.evidence
    assert session.replicable == (method in REPLICABLE)


def test_a_replica_restored_from_the_store_answers_as_the_encoder():
    adapter = get_adapter("tiny:smolvlm")
    store = MemoryStore()
    config = resolve("rekv", {"n_local": 40, "topk": 2})
    encoder = StreamSession("s", adapter, store, "rekv", config, threading.Lock(), [])
    for image, t in make_frames(8):
        encoder.push_frame(image, t)
    replica = StreamSession("s", adapter, store, "rekv", config, threading.Lock(), [])
    with torch.inference_mode():
        assert sync(replica) == 8
    assert replica.next_index == encoder.next_index == 8
    assert replica.window.block_ids == encoder.window.block_ids and replica.tracker.next == encoder.tracker.next
    a, b = encoder.answer("What happened?", max_tokens=4), replica.answer("What happened?", max_tokens=4)
    assert a.token_ids == b.token_ids and a.blocks_per_layer == b.blocks_per_layer
