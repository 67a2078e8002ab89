"""The hard streaming set: deterministic by seed, well-formed questions, evidence scoring, budgets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamvqa.evals.budget import FRAME_TOKENS, UNSUPPORTED, budget_options, parse_budget, preset_of
from streamvqa.evals.scoring import evidence_frames, evidence_scores, truth_frames
from streamvqa.evals.sweep import METHODS, pareto
from streamvqa.policies.presets import resolve
from streamvqa.synth.hard import (
    BUCKETS,
    HARD_SEED,
    bucket,
    hard_questions,
    hard_stream,
    moments,
    question_truth,
    shown_frames,
    stream_tokens,
)
from streamvqa.synth.streams import render_stream_frame


@pytest.fixture(scope="module")
def long_stream():
    s = hard_stream(HARD_SEED, minutes=60)
    return s, hard_questions(s)


def test_deterministic_by_seed():
    a, b, c = hard_stream(5, minutes=4), hard_stream(5, minutes=4), hard_stream(6, minutes=4)
    assert a == b and a != c
    assert hard_questions(a) == hard_questions(b)
    assert np.array_equal(render_stream_frame(a, 30), render_stream_frame(b, 30))


@pytest.mark.parametrize("minutes", [30, 60])
def test_busy_beyond_the_models_positions(minutes):
    s = hard_stream(HARD_SEED + minutes, minutes=minutes)
    ms = moments(s)
    gaps = np.diff([m.t for m in ms])
    assert gaps.min() >= 10 and gaps.max() <= 25  # an event every 10-25 s
    assert all(m.t + m.duration <= n.t for m, n in zip(ms, ms[1:], strict=False))  # never overlapping
    assert {len(m.objects) for m in ms} >= {1, 2, 3}  # several objects at once at times
    assert stream_tokens(s) > 8192  # more than SmolLM2's positions


def test_every_answer_follows_from_the_events(long_stream):
    stream, qs = long_stream
    assert len(qs) > 100
    for q in qs:
        assert question_truth(stream, q) == q["answer"], q
        if q["type"] not in ("now_yes", "now_no"):
            assert all(hi <= q["asked_at"] for _, hi in q["evidence"]), q  # evidence fully shown before


def test_near_misses_are_truly_absent(long_stream):
    stream, qs = long_stream
    near = [q for q in qs if q["type"] in ("exists_no", "now_no")]
    assert len(near) >= 6 and all(q["answer"] == "no" for q in near)
    for q in near:
        c, s = q["key"]["colour"], q["key"]["shape"]
        window = [m for m in moments(stream) if m.t < q["asked_at"]]
        if q["type"] == "now_no":  # on screen now: its colour and shape, in two different objects
            window = [m for m in window if m.t <= q["asked_at"] - 1 < m.end]
            assert len(window) == 1
        objs = [o for m in window for o in m.objects]
        assert not any(o.colour == c and o.shape == s for o in objs)
        assert any(o.colour == c for o in objs) and any(o.shape == s for o in objs)


def test_distances_hold(long_stream):
    _, qs = long_stream
    for q in qs:
        if q["evidence"]:
            assert q["distance"] == pytest.approx(max(0.0, q["asked_at"] - min(hi for _, hi in q["evidence"])))
            assert q["bucket"] == bucket(q["distance"])
    present = {q["bucket"] for q in qs}
    assert {name for name, _ in BUCKETS} <= present  # now, ~1, 5, 15 and 45 minutes back
    assert sum(q["asked_at"] < 3600 for q in qs) > len(qs) / 3  # asked during the stream too
    kinds = {q["type"] for q in qs}
    assert {"after", "first_of", "digit_when", "colour_with", "exists_no", "now_no"} <= kinds


def test_evidence_scoring_hand_cases():
    truth = [[10.0, 13.0], [40.0, 42.0]]  # frames 10, 11, 12 and 40, 41
    assert truth_frames(truth, 1.0) == {10, 11, 12, 40, 41}
    assert evidence_frames([(11.0, 11.0), (50.0, 52.0)], 1.0) == {11, 50, 51, 52}
    assert evidence_scores([(11.0, 11.0), (40.0, 41.0)], truth, 1.0) == {"recall": 1.0, "precision": 1.0}
    s = evidence_scores([(11.0, 11.0), (50.0, 52.0)], truth, 1.0)  # one of two ranges; 1 of 4 frames
    assert s == {"recall": 0.5, "precision": 0.25}
    assert evidence_scores([(13.0, 13.0)], truth, 1.0) == {"recall": 0.0, "precision": 0.0}  # end is exclusive
    assert evidence_scores([], truth, 1.0) == {"recall": 0.0, "precision": 0.0}
    assert evidence_scores([(0.0, 100.0)], truth, 1.0) == {"recall": 1.0, "precision": 5 / 101}


def test_parse_budget_units():
    assert parse_budget("2048", 10_000, 46_080) == 2048
    assert parse_budget("5%", 10_000, 46_080) == 500
    assert parse_budget("46080000B", 10_000, 46_080) == 1000
    assert parse_budget("45MiB", 10_000, 46_080) == 45 * 2**20 // 46_080
    for bad in ("lots", "-5%", "3"):
        with pytest.raises(ValueError):
            parse_budget(bad, 10_000, 46_080)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("tokens", [120, 960])
def test_kv_budget_maps_to_each_presets_options(method, tokens):
    cfg = resolve(preset_of(method), budget_options(method, tokens))
    frames = tokens // FRAME_TOKENS
    if cfg.encode_on == "window" and cfg.retention != "streamingvlm":
        assert cfg.n_local is not None and cfg.n_local <= tokens  # the encoder's window
    if cfg.memory_tokens is not None and method != "streammem":
        assert cfg.memory_tokens <= tokens
    ret = cfg.retrieval_options
    if cfg.retrieval == "rekv" and ret.get("score_mass") is None:  # one frame a block: top-k frames in what is left
        kept = cfg.memory_tokens if cfg.keep_memory else 0
        assert kept + ret["topk"] * FRAME_TOKENS <= tokens
    if method == "streamingvlm":
        assert cfg.retention_options["vision_window_s"] == frames - 1  # both ends of the window count
    if method == "streamingtom":
        assert ret["retrieve_tokens"] <= tokens


def test_unsupported_and_references():
    for method in UNSUPPORTED:
        with pytest.raises(ValueError):
            budget_options(method, 1000)
    assert budget_options("full", 1000) == {}


def test_uniform_floor_spaces_frames_evenly_before_the_question_within_the_budget():
    from streamvqa.evals.hard import uniform_frames

    stream = hard_stream(HARD_SEED, minutes=10)
    shown = shown_frames(stream)
    assert sum(shown) * FRAME_TOKENS == stream_tokens(stream)
    data = {"stream": stream, "frames": [None] * stream.n_frames, "shown": shown}
    qs = hard_questions(stream)
    budget = stream_tokens(stream) // 10
    for q in qs:
        before = int(np.ceil(q["asked_at"] * stream.fps - 1e-9))
        idx = uniform_frames(data, q, budget)
        assert idx and idx == sorted(set(idx)) and idx[-1] < before and idx[0] == 0, q["question"]
        assert sum(shown[i] for i in idx) * FRAME_TOKENS <= budget
        gaps = np.diff(idx)
        assert gaps.max() - gaps.min() <= 1 if len(gaps) else True  # evenly spaced
        denser = np.unique(np.linspace(0, before - 1, len(idx) + 1).round().astype(int))
        assert len(idx) == before or sum(shown[i] for i in denser) * FRAME_TOKENS > budget  # no room for one more
    last = qs[-1]
    everything = uniform_frames(data, last, stream_tokens(stream))
    assert everything == list(range(int(np.ceil(last["asked_at"] * stream.fps - 1e-9))))


def test_pareto_front():
    pts = [{"hot_peak_bytes": 1, "accuracy": 0.5}, {"hot_peak_bytes": 2, "accuracy": 0.4},
           {"hot_peak_bytes": 2, "accuracy": 0.7}, {"hot_peak_bytes": 3, "accuracy": 0.7}]
    assert pareto(pts) == [pts[0], pts[2]]


def _row(method, budget, acc, hot):
    return {"method": method, "kv_budget": budget, "budget_tokens": hot, "budget_bytes": hot * 46080,
            "hot_peak_tokens": hot, "hot_peak_bytes": hot * 46080, "within_budget": True, "store_bytes": 0,
            "accuracy": acc, "n": 10, "per_type": {}, "per_distance": {"1m": {"n": 10, "correct": 5, "accuracy": acc}},
            "evidence": {"n": 10, "recall": 1.0, "precision": 0.5}, "evidence_when": {}, "no_answers": {},
            "ttft_median_s": 0.1, "seconds": 1.0, "options": {}}


def test_sweep_table_from_logs(tmp_path):
    from streamvqa.evals import sweep

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(json.dumps(r) for r in (_row("full", None, 0.6, 900), _row("rekv", "10%", 0.4, 90))))
    over = {**_row("hybrid-v1", "10%", 0.9, 200), "within_budget": False}  # held twice the budget
    floor = _row("uniform", "10%", 0.6, 84)  # the offline floor: a reference, never a leader
    b.write_text("\n".join(json.dumps(r) for r in (_row("hybrid", "10%", 0.5, 90), over, floor)) + "\n")
    result = sweep.from_logs([str(a), str(b)], ["rekv", "hybrid", "hybrid-v1"], ["10%"])
    assert [r["method"] for r in result["rows"]] == ["full", "rekv", "hybrid", "hybrid-v1", "uniform"]
    assert result["leaders"] == {"10%": ["hybrid"]}  # not the run over its budget, nor the floor
    assert [r["method"] for r in result["rows"] if r["pareto"]] == ["hybrid", "hybrid-v1"]  # by bytes held
    table = sweep.markdown(result)
    assert "| hybrid * | 10% | 90 / 4.0 |" in table and "| full | - | 900 / 39.6 |" in table
    assert "| uniform | 10% | 84 / 3.7 |" in table
    assert sweep.plot(result, tmp_path / "sweep.png").stat().st_size > 1000


def test_sweep_table_from_single_run_results(tmp_path):
    """`eval hard --json` results (one run, indented, with its question rows) merge with logs."""
    from streamvqa.evals import sweep

    log = tmp_path / "a.jsonl"
    log.write_text(json.dumps(_row("full", None, 0.7, 900)) + "\n")
    single = tmp_path / "hybrid.json"
    single.write_text(json.dumps({**_row("hybrid", "5%", 0.5, 45), "rows": [{"question": "q"}], "model": {}},
                                 indent=2))
    result = sweep.from_logs([str(log), str(single)], ["hybrid"], ["5%"])
    assert [(r["method"], r["kv_budget"]) for r in result["rows"]] == [("full", None), ("hybrid", "5%")]
    assert "rows" not in result["rows"][1] and result["leaders"] == {"5%": ["hybrid"]}


def test_sweep_refuses_references_as_methods(capsys):
    from streamvqa.evals import sweep

    for method in ("oracle", "full", "uniform"):
        assert sweep.main(["--methods", method, "--minutes", "1"]) == 2
        assert method in capsys.readouterr().err


def test_cli_parsers():
    import argparse

    from streamvqa.evals import cli, hard, sweep

    p = argparse.ArgumentParser()
    cli.add_parsers(p.add_subparsers(dest="command"))
    a = p.parse_args(["eval", "hard", "--method", "hybrid", "--kv-budget", "5%", "--minutes", "60"])
    assert a.func is hard.run and a.kv_budget == "5%" and a.minutes == 60.0
    a = p.parse_args(["eval", "sweep", "--budgets", "5%,10%"])
    assert a.func is sweep.run and a.minutes == 3.0 and "hybrid" in a.methods
