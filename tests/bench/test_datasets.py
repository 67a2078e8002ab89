"""Each benchmark loader on a small file written here in that benchmark's published format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.datasets import (
    DATASETS,
    BenchQuestion,
    FormatError,
    load,
    parse_clock,
    resolve_video,
    split_option,
)


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_every_format_is_registered():
    assert set(DATASETS) == {"rvs-ego", "rvs-movie", "mlvu", "qaego4d", "streamingbench", "ovobench"}
    with pytest.raises(ValueError, match="unknown dataset"):
        load("nope", "x.json")


def test_vstream_flat_and_grouped(tmp_path):
    flat = write(tmp_path / "test_qa_ego4d.json", [
        {"id": "v1", "video_id": "v1", "question": "What did I cut?", "answer": "an onion",
         "answer_type": "object", "start_time": 12, "end_time": 30.5},
        {"id": "v1", "video_id": "v1", "question": "Where was the knife?", "answer": "on the board",
         "start_time": 40, "end_time": 55},
    ])
    qs = load("rvs-ego", flat)
    assert [q.ask_at for q in qs] == [30.5, 55.0]
    assert qs[0].evidence == (12.0, 30.5) and qs[0].video == "v1" and qs[0].kind == "open"
    assert qs[0].task == "object" and qs[1].task == "open"  # no answer_type
    assert qs[0].answer == "an onion" and qs[0].dataset == "rvs-ego"
    assert len({q.id for q in qs}) == 2  # the published ids repeat per video

    movie = write(tmp_path / "test_qa_movienet.json", [
        {"video_id": "tt01", "question": "Who enters?", "answer": "a man", "start_time": "shot_0003",
         "end_time": "shot_0010"}])
    (m,) = load("rvs-movie", movie)
    assert m.evidence == (3.0, 10.0) and m.ask_at == 10.0 and m.dataset == "rvs-movie"

    grouped = write(tmp_path / "ego4d_oe.json", [
        {"video_id": "v2", "video_path": "videos/v2.mp4", "conversations": [
            {"question": "Q1?", "answer": "A1", "start_time": 1, "end_time": 2},
            {"question": "Q2?", "answer": "A2", "start_time": 3, "end_time": 9, "answer_type": "action"}]}])
    g = load("rvs-ego", grouped)
    assert [q.id for q in g] == ["v2_0", "v2_1"] and g[1].video == "videos/v2.mp4" and g[1].task == "action"

    bad = write(tmp_path / "bad.json", [{"video_id": "v", "question": "Q", "answer": "A", "start_time": 9,
                                         "end_time": 3}])
    with pytest.raises(FormatError, match="before start_time"):
        load("rvs-ego", bad)


def test_mlvu_dev_open_and_test(tmp_path):
    dev = write(tmp_path / "1_plotQA.json", [
        {"video": "movie101_66.mp4", "duration": 246, "question": "What colour is the car?",
         "candidates": ["red", "blue", "green", "white"], "answer": "green", "question_type": "plotQA"},
        {"video": "movie101_67.mp4", "duration": 100, "question": "How many dogs?",
         "candidates": ["1", "2", "3", "4"], "answer": "2"},
    ])
    a, b = load("mlvu", dev)
    assert a.kind == "multiple_choice" and a.options == ("red", "blue", "green", "white")
    assert a.answer == "C" and a.answer_text == "green" and a.ask_at is None and a.extra == {"duration": 246}
    assert a.task == "plotQA" and b.task == "plotQA"  # task from the file name when the entry has none
    assert b.answer == "B"

    opened = write(tmp_path / "8_sub_scene.json", [
        {"video": "s.mp4", "question": "Describe the scene.", "answer": "A man walks.", "question_type": "subPlot"}])
    (o,) = load("mlvu", opened)
    assert o.kind == "open" and o.answer == "A man walks." and o.options is None

    test_split = write(tmp_path / "test_question.json", [
        {"question_id": "q-1", "video": "t.mp4", "question": "Q?", "candidates": ["x", "y"],
         "question_type": "order"}])
    (t,) = load("mlvu", test_split)
    assert t.id == "q-1" and t.answer is None and t.options == ("x", "y")

    wrong = write(tmp_path / "wrong.json", [{"video": "x.mp4", "question": "Q", "candidates": ["a", "b"],
                                             "answer": "c"}])
    with pytest.raises(FormatError, match="not one of the candidates"):
        load("mlvu", wrong)


def test_qaego4d_open_options_and_wrong_answers(tmp_path):
    rows = [
        {"video_id": "clip-1", "sample_id": "s_0", "question": "Where did I put the keys?",
         "answer": "on the table", "moment_start_frame": 60, "moment_end_frame": 150},
        {"video_id": "clip-1", "sample_id": "s_1", "question": "What did I pick?", "answer": "a cup",
         "options": ["a plate", "A cup", "a fork", "a bowl"], "moment_start_frame": 0, "moment_end_frame": 30},
        {"video_id": "clip-2", "sample_id": "s_2", "question": "What did I open?", "answer": "the fridge",
         "wrong_answers": ["the door", "a box", "the window"], "moment_start_frame": 300, "moment_end_frame": 330},
    ]
    o, mc, wa = load("qaego4d", write(tmp_path / "annotations.test.json", rows))
    assert o.kind == "open" and o.evidence == (2.0, 5.0) and o.ask_at is None and o.id == "s_0"
    assert mc.kind == "multiple_choice" and mc.answer == "B"  # case-insensitive match of the answer
    assert wa.kind == "multiple_choice" and len(wa.options) == 4 and wa.answer_text == "the fridge"
    assert set(wa.options) == {"the door", "a box", "the window", "the fridge"}
    # the same position on every load
    assert load("qaego4d", tmp_path / "annotations.test.json")[2].answer == wa.answer


def test_streamingbench(tmp_path):
    data = [{
        "time": "[0:00:00 - 0:01:00]", "video_categories": "talk_show",
        "video_path": "./videos/sample_1_Object_Perception.mp4",
        "questions": [
            {"task_type": "Object Perception", "question": "What is on the table now?", "time_stamp": "00:00:50",
             "answer": "B", "options": ["A. a cup", "B. a book", "C. a pen", "D. nothing"],
             "required_ability": "perception"},
            {"task_type": "Counting", "question": "How many people?", "time_stamp": "00:01:02",
             "answer": "A", "options": ["A.two", "B.three", "C.four", "D.five"]},
            {"task_type": "Proactive Output", "question": "Tell me when the light turns green.",
             "time_stamp": "0:02:03"},
        ],
    }]
    a, b, c = load("streamingbench", write(tmp_path / "questions_real.json", data))
    assert a.ask_at == 50.0 and b.ask_at == 62.0 and c.ask_at == 123.0
    assert a.options == ("a cup", "a book", "a pen", "nothing") and a.answer == "B" and a.answer_text == "a book"
    assert b.options == ("two", "three", "four", "five") and b.task == "Counting"
    assert a.extra == {"video_categories": "talk_show", "required_ability": "perception"}
    assert c.kind == "open" and c.answer is None
    assert a.video == "./videos/sample_1_Object_Perception.mp4"


def test_ovobench_backward_realtime_forward(tmp_path):
    data = [
        {"id": 1, "task": "EPM", "video": "src/ego/1.mp4", "realtime": 312.5, "question": "Where was the mug?",
         "options": ["sink", "table", "shelf", "floor"], "gt": 2},
        {"id": 2, "task": "OCR", "video": "src/2.mp4", "realtime": 40, "question": "What does the sign say?",
         "options": ["STOP", "GO"], "gt": 0},
        {"id": 3, "task": "REC", "video": "src/3.mp4", "activity": "jump",
         "test_info": [{"realtime": 10, "count": 1}, {"realtime": 20.5, "count": 3}]},
        {"id": 4, "task": "SSR", "video": "src/4.mp4",
         "test_info": [{"realtime": 5, "step": "crack the eggs", "type": 1}, {"realtime": 9, "step": "stir", "type": 0}]},
        {"id": 5, "task": "CRR", "video": "src/5.mp4", "question": "What colour is the car that arrives?",
         "answer": "red", "test_info": [{"realtime": 7, "type": 0}, {"realtime": 30, "type": 1}]},
    ]
    qs = load("ovobench", write(tmp_path / "ovo_bench_new.json", data))
    by = {q.id: q for q in qs}
    assert len(qs) == 8
    assert by["1"].answer == "C" and by["1"].ask_at == 312.5 and by["1"].extra["group"] == "backward"
    assert by["2"].extra["group"] == "realtime" and by["2"].answer_text == "STOP"
    assert [by["3@0"].answer, by["3@1"].answer] == ["1", "3"] and by["3@1"].kind == "count"
    assert by["3@1"].ask_at == 20.5 and "jump" in by["3@0"].question
    assert by["4@0"].kind == "yes_no" and by["4@0"].answer == "yes" and by["4@1"].answer == "no"
    assert "crack the eggs" in by["4@0"].question
    assert by["5@0"].answer == "no" and by["5@1"].answer == "yes" and "car that arrives" in by["5@1"].question
    assert all(q.extra["group"] == "forward" for q in qs if "@" in q.id)

    with pytest.raises(FormatError, match="outside 2 options"):
        load("ovobench", write(tmp_path / "bad.json", [{**data[1], "gt": 5}]))


def test_helpers(tmp_path):
    assert parse_clock("00:03:10") == 190.0 and parse_clock("1:02") == 62.0 and parse_clock(7) == 7.0
    with pytest.raises(FormatError):
        parse_clock("soon")
    assert split_option("(B) a red car") == ("B", "a red car") and split_option("plain") == (None, "plain")
    (tmp_path / "v").mkdir()
    clip = tmp_path / "v" / "abc.mp4"
    clip.write_bytes(b"")
    assert resolve_video(tmp_path / "v", "abc") == clip  # VStream-QA ids have no suffix
    assert resolve_video(tmp_path / "v", "./videos/abc.mp4") == clip  # by base name
    assert resolve_video(None, str(clip)) == clip
    with pytest.raises(FileNotFoundError, match="missing"):
        resolve_video(tmp_path / "v", "missing.mp4")
    with pytest.raises(ValueError, match="not an option letter"):
        BenchQuestion(id="x", dataset="d", video="v", question="q", kind="multiple_choice", task="t",
                      answer="E", options=("a", "b"))
