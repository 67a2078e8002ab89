"""`streamvqa bench --quick`'s answer_engines section: skipped with its reason where vLLM cannot
run, and, with `.venv-vllm`, rows for both engines at each concurrency, JSON-serialisable, with
the ratios and the markdown table."""

from __future__ import annotations

import json

import pytest

from bench import answer_engines
from bench.config import BenchConfig
from bench.report import tables


def _row(engine: str, c: int, ttft: float, latency: float) -> dict:
    return {"engine": engine, "concurrency": c, "questions": c, "tokens": 8 * c, "wall_s": latency,
            "questions_per_s": c / latency, "tokens_per_s": 8 * c / latency, "ttft_p50_s": ttft,
            "ttft_p99_s": ttft, "latency_p50_s": latency}


def test_summary_ratios_and_table() -> None:
    rows = [_row("transformers", 1, 0.2, 1.0), _row("transformers", 16, 3.0, 12.0),
            _row("vllm", 1, 0.25, 1.0), _row("vllm", 16, 0.5, 1.5)]
    s = answer_engines.summary(rows)
    assert s["transformers"] == {"concurrency": [1, 16], "latency_p50_ratio": 12.0, "ttft_p50_ratio": 15.0}
    assert s["vllm"]["latency_p50_ratio"] == pytest.approx(1.5)
    table = tables({"answer_engines": {"rows": rows, "summary": s}})["answer engines"]
    assert table.count("\n| vllm") == 2 and "vllm: 16 in flight / 1: latency p50 1.50x" in table


def test_skipped_with_the_reason_without_vllm(monkeypatch) -> None:
    import streamvqa.answering.vllm_process as vp

    monkeypatch.setattr(vp, "DEFAULT_PYTHON", vp.DEFAULT_PYTHON.with_name("no-such-python"))
    assert "tools/setup.sh --vllm" in answer_engines.skip_reason("default", "default")
    assert "serves the default model" in answer_engines.skip_reason("tiny:smolvlm", "smolvlm")
    assert tables({"answer_engines": {"skipped": "no .venv-vllm"}})["answer engines"] == "skipped: no .venv-vllm\n"
    assert not BenchConfig(answer_engines=False).answer_engines


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_section_with_vllm_has_both_engines_at_each_concurrency() -> None:
    if answer_engines.skip_reason("default", "default"):
        pytest.skip(answer_engines.skip_reason("default", "default"))
    cfg = BenchConfig(model="default", answer_streams=2, answer_minutes=0.05, answer_concurrency=[1, 3],
                      max_tokens=4)
    try:
        out = answer_engines.section(cfg)
    finally:
        from bench.common import close_engines

        close_engines()
    out = json.loads(json.dumps(out))
    assert [(r["engine"], r["concurrency"]) for r in out["rows"]] == \
        [("transformers", 1), ("transformers", 3), ("vllm", 1), ("vllm", 3)]
    for r in out["rows"]:
        assert r["questions"] == r["concurrency"] and 0 < r["tokens"] <= 4 * r["questions"]
        assert 0 < r["ttft_p50_s"] <= r["ttft_p99_s"] and r["questions_per_s"] > 0 and r["tokens_per_s"] > 0
    assert set(out["summary"]) == {"transformers", "vllm"}
