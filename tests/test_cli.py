"""The command line: ask-file end to end on a real H.264 file, methods, and one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(40):  # 4 s
            img = np.zeros((64, 96, 3), np.uint8)
            img[:, : 10 + 2 * i] = (255, 0, 0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamvqa.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_ask_file_prints_answer_evidence_and_timings(clip):
    r = run("ask-file", str(clip), "What colour is on the left?", "--model", "tiny:smolvlm", "--fps", "2",
            "--max-tokens", "4", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["frames"] == 8
    assert out["evidence"] and all(0.0 <= a <= b <= 4.0 for a, b in out["evidence"])
    assert {"prefill_s", "first_token_s", "total_s", "encode_s"} <= set(out["timings"])


@pytest.mark.slow
def test_ask_file_bad_inputs_exit_non_zero_with_one_line(clip, tmp_path):
    r = run("ask-file", str(tmp_path / "missing.mp4"), "q?", "--model", "tiny:smolvlm")
    assert r.returncode != 0 and "no such video file" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    r = run("ask-file", str(junk), "q?", "--model", "tiny:smolvlm")
    assert r.returncode == 1 and r.stderr.startswith("streamvqa ask-file: decode_error: ")  # a runtime failure
    r = run("ask-file", str(clip), "q?", "--model", "tiny:smolvlm", "--method", "nope")
    assert r.returncode == 2 and "unknown_method" in r.stderr


@pytest.mark.slow
def test_methods_lists_presets_with_policies():
    r = run("methods", "--json")
    assert r.returncode == 0
    names = {m["name"]: m for m in json.loads(r.stdout)}
    assert {"full", "rekv", "sliding-window"} <= set(names)
    assert names["rekv"]["policies"]["topk"] == 64 and names["full"]["policies"]["n_local"] is None


@pytest.mark.slow
def test_ask_file_answers_the_sample_with_the_default_model(tmp_path):
    """The README's pair: `streamvqa sample` then `ask-file` with the default model gets the printed answer."""
    mp4 = tmp_path / "clip.mp4"
    r = run("sample", "--out", str(mp4))
    assert r.returncode == 0, r.stderr
    questions = json.loads(mp4.with_suffix(".json").read_text())["questions"]
    q = next(q for q in questions if q["type"] == "colour_of")
    assert f"# {q['answer']}" in r.stdout
    r = run("ask-file", str(mp4), q["question"], "--json", timeout=540)  # model load + 60 frames
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["answer"].strip() == q["answer"], out
    assert out["frames"] == 60 and out["method"] == "rekv"
    t0, t1 = q["evidence"][0]
    assert any(a <= t1 and b >= t0 for a, b in out["evidence"]), out["evidence"]  # the event's frames were used
