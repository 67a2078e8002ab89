"""Every published form of the benchmark annotation files, with the defects the published files
have (issue 22). Fixtures are written here in each form's field layout, with our own content."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np
import pytest

from bench.datasets import FormatError, load, resolve_video
from bench.datasets.frames import CACHE_DIR, FramesError, npy_video
from bench.replay import ReplayConfig, load_note, local_video


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# ------------------------------------------------------------------------------------ MLVU


def test_mlvu_task_file_with_defects_loads_the_rest(tmp_path):
    # MVBench-style task file (json/2_needle.json): two defects of the published file
    f = write(tmp_path / "2_needle.json", [
        {"video": "needle_1.mp4", "duration": 420, "question": "What is the man holding?",
         "candidates": ["a lamp", "a kite", "a shovel", "a violin"], "answer": "a kite", "question_type": "findNeedle"},
        # the answer is not among the candidates: this entry only is skipped
        {"video": "needle_2.mp4", "duration": 300, "question": "Which animal crosses the road?",
         "candidates": ["a fox", "a deer", "a goat", "a cow"], "answer": "a horse", "question_type": "findNeedle"},
        # the answer listed twice: the last occurrence counts (MLVU's choice_bench.py)
        {"video": "needle_3.mp4", "duration": 250, "question": "What colour is the boat?",
         "candidates": ["blue", "red", "blue", "green"], "answer": "blue", "question_type": "findNeedle"},
    ])
    qs = load("mlvu", f)
    assert [q.video for q in qs] == ["needle_1.mp4", "needle_3.mp4"]
    assert qs[0].answer == "B" and qs[1].answer == "C" and qs[1].answer_text == "blue"
    (skip,) = qs.skipped
    assert skip.where == "2_needle.json[1]" and skip.reason == "answer_not_in_candidates" and "a horse" in skip.detail
    (flag,) = qs.flagged
    assert flag.where == "2_needle.json[2]" and flag.reason == "duplicate_answer"
    report = qs.report()
    assert report["questions"] == 2 and report["skipped_by_reason"] == {"answer_not_in_candidates": 1}
    assert report["flagged_by_reason"] == {"duplicate_answer": 1}
    note = load_note(report)
    assert "1 entries skipped (answer_not_in_candidates 1)" in note and "1 flagged (duplicate_answer 1)" in note

    # the download keeps each task's videos in video/<task file>/
    clip = touch(tmp_path / "MLVU" / "video" / "2_needle" / "needle_3.mp4")
    assert resolve_video(tmp_path / "MLVU", qs[1].video, qs[1].video_alternatives) == clip


def test_mlvu_rekv_grouped_conversations(tmp_path):
    # ReKV's data preparation: one entry per video, questions under conversations with choices
    f = write(tmp_path / "dev_debug_mc.json", [
        {"video_id": "plot_7", "video_path": "data/mlvu/videos/plot_7.mp4", "duration": 512.0, "conversations": [
            {"question": "Where does the chase end?", "choices": ["a bridge", "a roof", "a tunnel", "a market"],
             "answer": "a tunnel", "question_type": "plotQA"},
            {"question": "Who opens the door?", "choices": ["the cook", "the boy"], "answer": "nobody",
             "question_type": "plotQA"},
        ]},
        {"video_id": "count_2", "video_path": "data/mlvu/videos/count_2.mp4", "duration": 200.0, "conversations": [
            {"question": "How many jumps?", "choices": ["2", "3", "4", "5"], "answer": "4", "question_type": "count"}]},
    ])
    qs = load("mlvu", f)
    assert [(q.id, q.answer, q.task) for q in qs] == [("plot_7#0", "C", "plotQA"), ("count_2#0", "C", "count")]
    assert qs[0].options == ("a bridge", "a roof", "a tunnel", "a market") and qs[0].ask_at is None
    assert qs[0].extra == {"duration": 512.0} and qs[0].video == "data/mlvu/videos/plot_7.mp4"
    assert [(s.where, s.reason) for s in qs.skipped] == [("dev_debug_mc.json[0].conversations[1]",
                                                           "answer_not_in_candidates")]


def test_a_file_where_no_entry_fits_is_rejected_whole(tmp_path):
    f = write(tmp_path / "1_plotQA.json", [{"video": "x.mp4", "question": "Q", "candidates": ["a", "b"],
                                            "answer": "c"}])
    with pytest.raises(FormatError, match="no entry fits.*not one of the candidates"):
        load("mlvu", f)


# ------------------------------------------------------------------------------------ QAEgo4D


def test_qaego4d_rekv_form_seconds_and_windows(tmp_path):
    f = write(tmp_path / "test_mc.json", [
        {"video_id": "ego_a", "video_path": "data/qaego4d/videos/ego_a.mp4", "duration": 480.0, "conversations": [
            {"question": "Where did I leave the scissors?", "choices": ["in the drawer", "on the sofa",
                                                                        "by the sink", "on the shelf"],
             "answer": "by the sink", "temporal_windows": [[121.5, 126.0]]},
            {"question": "What did I pour?", "choices": ["milk", "juice", "water", "tea"], "answer": "water",
             "temporal_windows": [[10.0, 12.0], [300.0, 304.5]]},
            {"question": "What did I pick up first?", "answer": "a red mug", "temporal_windows": [[5, 6]]},
            {"question": "Which door did I open?", "choices": ["left", "right"], "answer": "right",
             "temporal_windows": [[50, 40]]},
        ]},
    ])
    qs = load("qaego4d", f)
    a, b, o = qs
    assert a.kind == "multiple_choice" and a.answer == "C" and a.evidence == (121.5, 126.0) and a.ask_at is None
    assert a.id == "ego_a#0" and a.video == "data/qaego4d/videos/ego_a.mp4" and a.extra["duration"] == 480.0
    # seconds as given (not frames): first start to last end, every window kept
    assert b.evidence == (10.0, 304.5) and b.extra["temporal_windows"] == [[10.0, 12.0], [300.0, 304.5]]
    assert o.kind == "open" and o.answer == "a red mug" and o.evidence == (5.0, 6.0)
    assert [(s.where, s.reason) for s in qs.skipped] == [("test_mc.json[0].conversations[3]", "bad_time")]


# ------------------------------------------------------------------------------------ StreamingBench


def test_streamingbench_sqa_array_of_arrays(tmp_path):
    # questions_sqa.json: per video, an array of segments; options there carry no "A." labels
    seg = {"video_categories": "table_games", "video_path": "./videos/sample_9_sqa.mp4"}
    f = write(tmp_path / "questions_sqa.json", [[
        {**seg, "time": "[0:00:00 - 0:01:00]", "questions": [
            {"task_type": "Sequential Question Answering", "question": "Who serves first?", "time_stamp": "00:00:20",
             "answer": "B", "options": ["the left player", "the right player", "the referee", "nobody"]}]},
        {**seg, "time": "[0:01:00 - 0:02:00]", "questions": [
            {"task_type": "Sequential Question Answering", "question": "Who won the rally the player above served?",
             "time_stamp": "00:01:40", "answer": "A", "options": ["the server", "the receiver", "no one", "both"]}]},
    ]])
    qs = load("streamingbench", f)
    assert [q.ask_at for q in qs] == [20.0, 100.0] and [q.answer for q in qs] == ["B", "A"]
    assert qs[0].options == ("the left player", "the right player", "the referee", "nobody")
    assert all(q.extra["sequential"] and q.video == "./videos/sample_9_sqa.mp4" for q in qs)
    assert not qs.skipped


def test_streamingbench_broken_options_and_answer_text(tmp_path):
    v = {"video_categories": "talk_show", "video_path": "./videos/sample_4_Source_Discrimination.mp4"}
    q = {"task_type": "Source Discrimination", "question": "Who just spoke?", "time_stamp": "00:00:30"}
    f = write(tmp_path / "questions_omni.json", [
        {**v, "questions": [{**q, "answer": "A", "options": ["A. the host", "B. the guest", "C. the band",
                                                              "D. the crowd"]}]},
        # an option split in two: skipped
        {**v, "questions": [{**q, "answer": "B", "options": ["A. a man in a", "grey suit", "B. the guest",
                                                              "C. the band", "D. the crowd"]}]},
        # an empty option: skipped
        {**v, "questions": [{**q, "answer": "A", "options": ["A. the host", "", "B. the guest", "C. the band"]}]},
        # a repeated label: skipped
        {**v, "questions": [{**q, "answer": "C", "options": ["A. the host", "B. the guest", "B. the band",
                                                              "D. the crowd"]}]},
        # the answer's letter names another text: the letter counts (official scorer), flagged
        {**v, "questions": [{**q, "answer": "B. the band", "options": ["A. the host", "B. the guest",
                                                                        "C. the band", "D. the crowd"]}]},
        # labels printed out of order: the printed label counts
        {**v, "questions": [{**q, "answer": "B", "options": ["A. the host", "C. the band", "B. the guest",
                                                              "D. the crowd"]}]},
    ])
    qs = load("streamingbench", f)
    assert len(qs) == 3
    assert [(s.where, s.reason) for s in qs.skipped] == [
        ("questions_omni.json[1].questions[0]", "broken_options"),
        ("questions_omni.json[2].questions[0]", "broken_options"),
        ("questions_omni.json[3].questions[0]", "broken_options"),
    ]
    mismatch, reordered = qs[1], qs[2]
    assert mismatch.answer == "B" and mismatch.answer_text == "the guest"
    assert reordered.options == ("the host", "the guest", "the band", "the crowd") and reordered.answer_text == "the guest"
    assert [(s.where, s.reason) for s in qs.flagged] == [
        ("questions_omni.json[4].questions[0]", "answer_text_mismatch"),
        ("questions_omni.json[5].questions[0]", "option_labels_reordered"),
    ]


def test_streamingbench_csv(tmp_path):
    f = tmp_path / "Real_Time_Visual_Understanding.csv"
    with f.open("w", newline="", encoding="utf-8") as h:
        w = csv.DictWriter(h, fieldnames=["question_id", "task_type", "question", "time_stamp", "answer", "options"])
        w.writeheader()
        w.writerow({"question_id": "Real-Time Visual Understanding_sample_12_1", "task_type": "Object Recognition",
                    "question": "What is on the desk right now?", "time_stamp": "00:01:05", "answer": "C",
                    "options": "['A. a phone.', 'B. a book.', 'C. a lamp.', 'D. a cup.']"})
        w.writerow({"question_id": "Real-Time Visual Understanding_sample_12_2", "task_type": "Counting",
                    "question": "How many chairs are there?", "time_stamp": "00:02:10", "answer": "A",
                    "options": "['A. 2', 'B. 3', 'C. 4', 'D. 5']"})
        w.writerow({"question_id": "Real-Time Visual Understanding_sample_13_1", "task_type": "Counting",
                    "question": "How many doors?", "time_stamp": "00:00:15", "answer": "A",
                    "options": "A. 1; B. 2"})  # not a list literal: skipped
    qs = load("streamingbench", f)
    sqa = tmp_path / "Sequential_Question_Answering.csv"
    sqa.write_text("question_id,task_type,question,time_stamp,answer,options\n"
                   "Sequential Question Answering_sample_3_1,Sequential Question Answering,Who?,00:00:09,B,"
                   "\"['the cat', 'the dog']\"\n")
    (s,) = load("streamingbench", sqa)
    assert s.video == "sample_3_sqa.mp4" and s.answer_text == "the dog" and s.extra == {"sequential": True}
    a, b = qs
    assert a.id == "Real-Time Visual Understanding_sample_12_1" and a.ask_at == 65.0 and a.answer_text == "a lamp."
    assert a.video == b.video == "sample_12_real.mp4" and b.task == "Counting" and b.options == ("2", "3", "4", "5")
    assert [(s.where, s.reason) for s in qs.skipped] == [("Real_Time_Visual_Understanding.csv:4", "broken_options")]


def test_streamingbench_raw_sample_layout(tmp_path):
    # raw downloads: <TYPE>/sample_<N>/video.mp4 (move_video.py renames them sample_<N>_<TYPE>.mp4)
    omni = touch(tmp_path / "data" / "omni" / "Source Discrimination" / "sample_4" / "video.mp4")
    real = touch(tmp_path / "data" / "real" / "sample_12" / "video.mp4")
    root = tmp_path / "data"
    v = "./videos/sample_4_Source_Discrimination.mp4"
    (q,) = load("streamingbench", write(tmp_path / "q.json", [{"video_path": v, "questions": [
        {"task_type": "Source Discrimination", "question": "Who?", "time_stamp": "00:00:05", "answer": "A",
         "options": ["A. x", "B. y"]}]}]))
    assert resolve_video(root, q.video, q.video_alternatives) == omni
    assert resolve_video(root / "omni" / "Source Discrimination", q.video, q.video_alternatives) == omni
    from bench.datasets.streamingbench import video_alternatives

    assert resolve_video(root, "sample_12_real.mp4", video_alternatives("sample_12_real.mp4")) == real
    # sample numbers repeat across task folders: an ambiguous glob is not a match
    touch(tmp_path / "data" / "contextual" / "Source Discrimination" / "sample_4" / "video.mp4")
    with pytest.raises(FileNotFoundError, match="sample_4"):
        resolve_video(root, q.video, q.video_alternatives)


# ------------------------------------------------------------------------------------ RVS-Movie


def frames_array(path: Path, n: int, h: int = 33, w: int = 47) -> np.ndarray:
    """n keyframes, frame k a flat grey of level 20 * k (odd size on purpose)."""
    arr = np.stack([np.full((h, w, 3), 20 * k, np.uint8) for k in range(n)])
    np.save(path, arr)
    return arr


def test_rvs_movie_keyframe_indices_are_seconds_at_one_per_second(tmp_path):
    f = write(tmp_path / "movie_oe.json", [
        {"video_id": "tt0000001_1", "video_path": "data/rvs/movie/tt0000001_1.npy", "duration": 12,
         "conversations": [
             {"question": "Who walks in?", "answer": "a nurse", "start_time": 2, "end_time": 6},
             {"question": "What breaks?", "answer": "a glass", "start_time": 9, "end_time": 7}]}])
    qs = load("rvs-movie", f)
    (q,) = qs
    assert q.ask_at == 6.0 and q.evidence == (2.0, 6.0) and q.extra["keyframes"] == [2.0, 6.0]
    assert qs.skipped[0].reason == "bad_time"
    flat = write(tmp_path / "test_qa_movienet.json", [
        {"id": "tt2", "video_id": "tt0000002_3", "question": "Q?", "answer": "A", "start_time": "shot_0004",
         "end_time": "shot_0011"}])
    (m,) = load("rvs-movie", flat)
    assert m.ask_at == 11.0 and m.extra["keyframes"] == [4.0, 11.0]

    # the .npy array is the published "video": found by name and played as a 1-fps MP4
    videos = tmp_path / "videos"
    videos.mkdir()
    arr = frames_array(videos / "tt0000001_1.npy", 12)
    mp4 = local_video(q, ReplayConfig(server="http://127.0.0.1:9", videos_dir=videos))
    assert mp4 == videos / CACHE_DIR / "tt0000001_1.mp4"
    with av.open(str(mp4)) as c:
        s = c.streams.video[0]
        assert float(s.average_rate) == 1.0 and (s.codec_context.width, s.codec_context.height) == (48, 34)
        decoded = [(float(fr.time), fr.to_ndarray(format="rgb24")) for fr in c.decode(s)]
    assert [t for t, _ in decoded] == [float(k) for k in range(12)]  # keyframe k at k seconds
    for (_, img), ref in zip(decoded, arr, strict=True):
        assert abs(float(img[:33, :47].mean()) - float(ref.mean())) < 4.0  # lossy, but the same picture
    mtime = mp4.stat().st_mtime_ns
    assert npy_video(videos / "tt0000001_1.npy", videos / CACHE_DIR, 1.0).stat().st_mtime_ns == mtime  # reused


def test_npy_that_is_not_frames_is_refused(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((4, 5), np.float32))
    with pytest.raises(FramesError, match=r"expected \(T, H, W, 3\) uint8"):
        npy_video(tmp_path / "bad.npy", tmp_path / CACHE_DIR, 1.0)
    assert list((tmp_path / CACHE_DIR).iterdir()) == []  # no half-written file left


def test_cli_replays_rvs_movie_keyframes_and_reports_skips(tmp_path, capsys):
    from bench.__main__ import main as bench_main

    videos = tmp_path / "videos"
    videos.mkdir()
    frames_array(videos / "tt0000005_2.npy", 5, h=64, w=64)
    f = write(tmp_path / "movie_oe.json", [
        {"video_id": "tt0000005_2", "video_path": "data/rvs/movie/tt0000005_2.npy", "duration": 5, "conversations": [
            {"question": "What changes?", "answer": "it gets brighter", "start_time": 1, "end_time": 3},
            {"question": "Broken?", "answer": "yes", "start_time": "later", "end_time": 4}]}])
    out = tmp_path / "out.json"
    code = bench_main(["real", "--dataset", "rvs-movie", "--questions", str(f), "--videos", str(videos),
                       "--embedded", "--model", "tiny:smolvlm", "--fast", "--max-tokens", "4", "--json", str(out),
                       "--quiet"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["load"]["questions"] == 1 and result["load"]["skipped_by_reason"] == {"bad_time": 1}
    assert result["load"]["skipped_entries"][0]["where"] == "movie_oe.json[0].conversations[1]"
    (row,) = result["rows"]
    assert row["error"] is None and row["ask_at"] == 3.0 and row["evidence_truth"] == [1.0, 3.0]
    assert row["stream_t_at_ask"] >= 3.0 and isinstance(row["prediction"], str)  # played from the keyframes
    assert row["correct"] is None  # open-ended without a judge
    assert "1 entries skipped (bad_time 1)" in capsys.readouterr().out


def test_a_skipped_entry_is_not_also_flagged(tmp_path):
    f = write(tmp_path / "questions_omni.json", [{"video_path": "./videos/sample_1_Emotion_Recognition.mp4",
                                                  "questions": [{"task_type": "Emotion Recognition", "question": "Mood?",
                                                                 "time_stamp": "00:00:03", "answer": "E",
                                                                 "options": ["B. sad", "A. happy"]}]},
                                                 {"video_path": "./videos/sample_2_Emotion_Recognition.mp4",
                                                  "questions": [{"task_type": "Emotion Recognition", "question": "Mood?",
                                                                 "time_stamp": "00:00:03", "answer": "A",
                                                                 "options": ["A. calm", "B. angry"]}]}])
    qs = load("streamingbench", f)
    assert len(qs) == 1 and [s.reason for s in qs.skipped] == ["answer_not_an_option"] and qs.flagged == []
