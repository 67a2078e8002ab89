"""What the vllm answer engine hands vLLM, checked without vLLM: the Qwen2-VL family's language
model exported as a plain Qwen2 (exact at text positions), and the memory written once into its
shared-memory file with the uniform shift applied in every M-RoPE row."""

import threading
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from streamvqa.answering import kvfile
from streamvqa.answering.vllm_engine import VLLMAnswerEngine, export_memory, qwen2_lm
from streamvqa.engine.errors import EngineError
from streamvqa.models.loading import load_adapter
from tests.engine.conftest import get_adapter
from tests.vllm.conftest import tiny_qwen_dir


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@torch.inference_mode()
def test_the_exported_qwen2_lm_is_the_vl_language_model_at_text_positions(family: str, tmp_path) -> None:
    """vLLM runs the export at 1-D positions i; the VL model puts text at (i, i, i): same logits."""
    adapter = load_adapter(str(tiny_qwen_dir(family, tmp_path / family)))
    lm = qwen2_lm(adapter)
    assert type(lm).__name__ == "Qwen2ForCausalLM" and "mrope_section" not in lm.config.rope_parameters
    torch.manual_seed(0)
    ids = torch.randint(0, adapter.text_config.vocab_size, (1, 50))
    pos = torch.arange(300, 350).view(1, -1)  # far from 0: every rotary frequency matters
    hidden = adapter.backbone(input_ids=ids, position_ids=pos.view(1, 1, -1).expand(3, 1, -1)).last_hidden_state
    torch.testing.assert_close(lm(input_ids=ids, position_ids=pos).logits, adapter.lm_head(hidden), rtol=0, atol=1e-6)
    # and the M-RoPE model does depend on its rows: a grid (rows differing) is not what the export computes
    grid = pos.view(1, 1, -1).expand(3, 1, -1).clone()
    grid[1, :, :25] += 7
    other = adapter.lm_head(adapter.backbone(input_ids=ids, position_ids=grid).last_hidden_state)
    assert not torch.allclose(other, adapter.lm_head(hidden), atol=1e-4)


@pytest.mark.parametrize("name", ["tiny:smolvlm", "tiny:qwen2_vl"])
@pytest.mark.parametrize("shift", [0, -37])
@torch.inference_mode()
def test_export_memory_writes_each_layers_shifted_keys_and_values_into_the_file(name: str, shift: int,
                                                                                 tmp_path) -> None:
    adapter = get_adapter(name)
    rows = adapter.new_positions().rows
    torch.manual_seed(1)
    n, total = 23, 30  # the cache may hold more than the memory (a question's own tokens): not exported
    layers = [SimpleNamespace(keys=torch.randn(1, adapter.n_kv_heads, total, adapter.head_dim),
                              values=torch.randn(1, adapter.n_kv_heads, total, adapter.head_dim))
              for _ in range(adapter.n_layers)]
    pool = kvfile.Pool(tmp_path)
    spec = kvfile.KVSpec(path="", layers=len(layers), heads=adapter.n_kv_heads, tokens=n,
                         head_dim=adapter.head_dim, dtype="float32")
    buf = pool.acquire(spec.nbytes)
    spec = replace(spec, path=buf.path)
    export_memory(adapter, SimpleNamespace(layers=layers), n, shift, rows, buf.array(spec))
    kv = kvfile.open_memory(spec)  # what the connector maps, in another process
    assert kv.shape == (len(layers), 2, n, adapter.n_kv_heads, adapter.head_dim)
    for i, layer in enumerate(layers):
        k, v = layer.keys[0, :, :n], layer.values[0, :, :n]
        want = adapter.rotate(k, torch.full((rows, n), shift)) if shift else k
        torch.testing.assert_close(kv[i, 0].transpose(0, 1), want, rtol=1e-6, atol=1e-6)
        assert torch.equal(kv[i, 1].transpose(0, 1), v)
    pool.close()


def test_the_pool_reuses_a_file_only_when_vllm_is_done_with_it(tmp_path) -> None:
    pool = kvfile.Pool(tmp_path, keep=2)
    a = pool.acquire(3000)
    assert a.capacity == 4096 and (tmp_path / a.path.split("/")[-1]).stat().st_size == 4096
    a.data[:3000] = 7
    pool.release(a, reusable=True)  # vLLM loaded it: the same file (pages) serves the next memory
    assert pool.acquire(4096).path == a.path
    b = pool.acquire(100)
    assert b.path != a.path  # a is in use: another file
    pool.release(b, reusable=False)  # a question that ended before vLLM computed it: never rewritten
    assert not (tmp_path / b.path.split("/")[-1]).exists()
    c, d = pool.acquire(10), pool.acquire(10)
    for buf in (a, c, d):
        pool.release(buf, reusable=True)
    assert len(list(tmp_path.iterdir())) == 2  # at most `keep` free files stay: the largest
    assert pool.acquire(4000).path == a.path
    pool.release(a, reusable=True)
    pool.close()
    assert not list(tmp_path.iterdir())


def test_the_memory_is_copied_once_on_each_side(capsys) -> None:
    """`streamvqa bench vllm-export`'s count (a dispatch mode over every torch op, plus numpy and
    file writes): the server writes the memory once (keys twice over half their width when
    shifted), the connector copies nothing, the cache write once; the former path 6x / 9.67x."""
    from argparse import Namespace

    from bench.vllm_export import run

    result = run(Namespace(model="tiny:smolvlm", tokens=[40], shift=-5, repeats=1, threads=1))
    copied = {(r["path"], r["shift"]): r["bytes_copied"] for r in result["rows"]}
    memory = result["rows"][0]["memory_bytes"]
    for path in ("single", "single-fresh"):
        assert copied[(path, 0)] == {"export": memory, "connector": 0, "cache_write": memory}
        shifted = copied[(path, -5)]
        assert (shifted["connector"], shifted["cache_write"]) == (0, memory)
        assert 3 * memory // 2 <= shifted["export"] < 3 * memory // 2 + 1024  # + cos and sin of the shift
    assert sum(copied[("former", 0)].values()) == 6 * memory
    assert sum(copied[("former", -5)].values()) > 9 * memory
    assert "single/former" in capsys.readouterr().out


@pytest.mark.parametrize("change", [{"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0}},
                                    {"use_sliding_window": True}], ids=["rope_type", "sliding_window"])
def test_an_lm_the_export_cannot_match_is_refused_with_unsupported_for_engine(change: dict, tmp_path) -> None:
    """A rope scaling or a sliding window has no exact plain-Qwen2 equivalent: refused, not served wrong."""
    adapter = load_adapter(str(tiny_qwen_dir("qwen2_vl", tmp_path / "q")))
    for key, value in change.items():
        setattr(adapter.text_config, key, value)
    with pytest.raises(EngineError) as e:
        qwen2_lm(adapter)
    assert e.value.code == "unsupported_for_engine"


def test_a_temperature_vllm_refuses_falls_back_to_transformers_and_is_counted() -> None:
    """vLLM's sampler takes temperatures up to 2, the API up to 10: hotter questions are answered
    by the session's own model (start returns None) and counted, never a 500."""
    engine = VLLMAnswerEngine.__new__(VLLMAnswerEngine)  # start() decides before any vLLM call
    engine._lock, engine.fallbacks = threading.Lock(), {}
    layer = SimpleNamespace(keys=torch.zeros(1, 1, 4, 8), values=torch.zeros(1, 1, 4, 8))
    assembled = SimpleNamespace(cache=SimpleNamespace(layers=[layer, layer]), length=4)
    assert engine.start(None, assembled, 4, [], max_tokens=4, temperature=2.5, top_p=1.0, seed=None) is None
    assert engine.fallbacks == {"temperature": 1}
