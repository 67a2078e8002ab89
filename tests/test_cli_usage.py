"""The command line's contract: one-line errors naming the flag, exit 2 for usage errors and 1 for
runtime failures in every command; `methods` as a table; method aliases; `streamvqa sample`.
In-process (`main(argv)`) and before any model loads, so quick."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

from streamvqa.cli import main
from streamvqa.policies.presets import PRESETS, MethodConfig, describe, resolve
from streamvqa.server.sample import CAN_SEE


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `streamvqa ARGV`; argparse's SystemExit counts as a return."""
    try:
        rc = main([*argv])
    except SystemExit as e:
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def usage_error(rc: int, err: str, *words: str) -> None:
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "validation error" not in err, err
    for w in words:
        assert w in err, (w, err)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from streamvqa.server.sample import write_shapes_mp4

    return write_shapes_mp4(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=1.0, width=64, height=64)


@pytest.mark.parametrize("flag, value", [("--fps", "0"), ("--fps", "-1"), ("--fps", "x"), ("--max-tokens", "0")])
def test_bad_numbers_are_one_line_usage_errors_naming_the_flag(capsys, clip, flag, value) -> None:
    rc, _, err = run(capsys, "ask-file", str(clip), "q?", flag, value)
    usage_error(rc, err, f"argument {flag}", "streamvqa ask-file")


@pytest.mark.parametrize("options, words", [
    ("{bad", ("argument --options", "invalid JSON")),
    ("[1, 2]", ("argument --options", "JSON object")),
    ('{"topk": 0}', ("argument --options", "invalid_options", "topk")),
    ('{"no_such_option": 1}', ("argument --options", "invalid_options", "no_such_option")),
])
def test_bad_options_name_the_flag(capsys, clip, options, words) -> None:
    rc, _, err = run(capsys, "ask-file", str(clip), "q?", "--options", options)
    usage_error(rc, err, *words)


def test_unknown_method_missing_file_and_bad_command_are_usage_errors(capsys, clip, tmp_path) -> None:
    rc, _, err = run(capsys, "ask-file", str(clip), "q?", "--method", "nope")
    usage_error(rc, err, "argument --method", "unknown_method")
    rc, _, err = run(capsys, "ask-file", str(tmp_path / "missing.mp4"), "q?")
    usage_error(rc, err, "no such video file")
    rc, _, err = run(capsys, "ask-file", str(clip), "q?", "--model", str(tmp_path / "no-model"))
    usage_error(rc, err, "argument --model")
    rc, _, err = run(capsys, "no-such-command")
    usage_error(rc, err, "invalid choice")
    rc, _, err = run(capsys, "methods", "--no-such-flag")
    usage_error(rc, err, "--no-such-flag")


def test_unusable_model_or_device_names_the_flag(capsys, clip) -> None:
    import torch

    rc, _, err = run(capsys, "ask-file", str(clip), "q?", "--model", "tiny:no_such_family")
    usage_error(rc, err, "argument --model", "no_such_family")
    rc, _, err = run(capsys, "ask-file", str(clip), "q?", "--device", "gpu")
    usage_error(rc, err, "argument --device", "not a device")
    if not torch.cuda.is_available():  # was an AssertionError traceback from deep in torch
        for argv in (["ask-file", str(clip), "q?"], ["serve"], ["demo"], ["eval", "needle"]):
            rc, _, err = run(capsys, *argv, "--device", "cuda:0")
            usage_error(rc, err, "argument --device", "CUDA is not available")


def test_undecodable_video_is_a_runtime_failure(capsys, tmp_path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    rc, _, err = run(capsys, "ask-file", str(junk), "q?", "--model", "tiny:smolvlm")
    assert rc == 1, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("streamvqa ask-file: decode_error: "), err


def test_other_commands_follow_the_same_rule(capsys) -> None:
    rc, _, err = run(capsys, "eval", "needle", "--options", "{x")
    usage_error(rc, err, "argument --options", "streamvqa eval needle")
    rc, _, err = run(capsys, "serve", "--port", "99999")
    usage_error(rc, err, "port")
    rc, _, err = run(capsys, "demo", "--dtype", "int3")
    usage_error(rc, err, "argument --dtype")
    rc, _, err = run(capsys, "sample", "--seconds", "0")
    usage_error(rc, err, "argument --seconds")


def test_serve_help_names_media_root_and_source_flags(capsys) -> None:
    rc, out, _ = run(capsys, "serve", "--help")
    assert rc == 0
    for flag in ("--media-root", "--allow-loopback-sources", "--allow-private-sources", "--api-keys-file",
                 "--insecure"):
        assert flag in out, flag


def test_methods_table_is_compact_and_marks_the_default(capsys) -> None:
    rc, out, _ = run(capsys, "methods")
    assert rc == 0
    lines = out.strip().splitlines()
    assert len(lines) == len(PRESETS) + 2  # header, one row per preset, footnote
    assert lines[0].split() == ["method", "paper", "unit", "pre-LLM", "encoding", "retention", "retrieval",
                                "positions"]
    rows = {ln.split()[0]: ln for ln in lines[1:-1]}
    assert set(rows) == set(PRESETS)
    assert [n for n, ln in rows.items() if ln.split()[1] == "*"] == ["rekv"]
    assert "ReKV 2503.00540" in rows["rekv"] and "window-15000" in rows["rekv"] and "rekv top-64" in rows["rekv"]
    assert "V-Rex ReSV 2512.12284" in rows["resv"] and "resv 6144" in rows["resv"]
    assert "input-match top-4 +recompute" in rows["hybrid"] and "+demote" not in rows["hybrid"]
    assert "streamingvlm 1024 +demote" in rows["hybrid-kv"] and "rekv top-64" in rows["hybrid-kv"]
    assert "v-rex = resv" in lines[-1]


def test_methods_json_stays_complete(capsys) -> None:
    rc, out, _ = run(capsys, "methods", "--json")
    assert rc == 0
    presets = json.loads(out)
    assert presets == describe()
    assert [p["name"] for p in presets if p["default"]] == ["rekv"]
    for p in presets:
        assert set(p["policies"]) == set(MethodConfig.model_fields)
        assert p["policies"] == PRESETS[p["name"]][1].model_dump()
    assert next(p for p in presets if p["name"] == "resv")["aliases"] == ["v-rex", "vrex"]


@pytest.mark.parametrize("alias", ["v-rex", "vrex", "V-Rex"])
def test_v_rex_aliases_resolve_to_resv(alias) -> None:
    assert resolve(alias) == resolve("resv")


def test_sample_writes_a_video_with_known_answers(capsys, tmp_path) -> None:
    out_mp4 = tmp_path / "clip.mp4"
    rc, out, _ = run(capsys, "sample", "--out", str(out_mp4), "--seconds", "30", "--seed", "3")
    assert rc == 0
    meta = json.loads(out_mp4.with_suffix(".json").read_text())
    assert meta["questions"]
    for q in meta["questions"]:  # every question is printed as a ready command with its answer
        assert f"ask-file {out_mp4} {json.dumps(q['question'])}  # {q['answer']}" in out
    assert CAN_SEE in out
    with av.open(str(out_mp4)) as c:
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == 60  # 30 s at 2 fps
