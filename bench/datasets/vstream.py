"""RVS-Ego / RVS-Movie (VStream-QA, Flash-VStream): open-ended questions asked during the stream.

Source: the VStream-QA dataset card (huggingface.co/datasets/IVGSZ/VStream-QA) and the
Flash-VStream evaluation code (github.com/IVGSZ/Flash-VStream, ``flash_vstream/eval_video``),
which read ``vstream-realtime/test_qa_ego4d.json`` / ``test_qa_movienet.json``: a JSON array of

    {"id", "video_id", "question", "answer", "answer_type", "start_time", "end_time"}

Fields used: ``id``, ``video_id`` (the video file is ``<video_id>.mp4`` or another usual suffix
under the videos directory), ``question``, ``answer`` (reference text), ``answer_type`` (task),
``start_time``/``end_time`` (seconds in the clip; MovieNet files may write ``"shot_0123"``, read
as 123). In the real-time setting the question is asked when the stream reaches ``end_time``;
``[start_time, end_time]`` is the evidence range. Scoring is open-ended (judge).

The grouped layout ReKV's evaluation uses (github.com/Becomebright/ReKV, ``data/rvs``) is read
too: ``[{"video_id", "video_path"?, "conversations": [{"question", "answer", "start_time",
"end_time", "answer_type"?}]}]`` (ReKV's ``video_path`` names the clip: ``.mp4`` for RVS-Ego,
``.npy`` for RVS-Movie).

Units. RVS-Ego times are seconds of the clip. RVS-Movie is built on MovieNet *keyframes*, not
video: its "videos" are the ``(T, H, W, 3)`` uint8 keyframe arrays ReKV ships as
``data/rvs/movie/<id>.npy`` (VStream-QA: "cut the keyframes from start_shot to end_shot"), and
its ``start_time``/``end_time`` are keyframe indices into that array. The documented rate of
those arrays is one keyframe per second (VStream-QA extracts its features "at fps=1"; ReKV's
``.npy`` reader reports 1 fps and the array length equals the annotation's ``duration`` in
seconds), so keyframe ``k`` is shown at ``k / KEYFRAME_RATE`` = ``k`` seconds of the replayed
stream: ``ask_at`` and ``evidence`` are those seconds, and the raw indices stay in
``extra["keyframes"]``. The replay turns a ``.npy`` array into a 1-fps H.264 file
(``bench/datasets/frames.py``) so the server plays it like any other video.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import BenchQuestion, Collector, FormatError, Loaded, as_list, conversations, read_json, require

_SHOT = re.compile(r"shot_(\d+)")
KEYFRAME_RATE = 1.0  # RVS-Movie keyframes per second of the replayed stream (see the module docstring)


def _time(value: object, where: str) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _SHOT.search(value)
        if m:
            return float(m.group(1))
        try:
            return float(value)
        except ValueError:
            pass
    raise FormatError(f"{where}: bad time {value!r}", "bad_time")


def _question(dataset: str, qid: str, video: str, qa: dict, where: str) -> list[BenchQuestion]:
    question = str(require(qa, "question", where)).strip()
    start = _time(qa.get("start_time", 0.0), where)
    end = _time(require(qa, "end_time", where), where)
    if end < start:
        raise FormatError(f"{where}: end_time {end} before start_time {start}", "bad_time")
    extra: dict = {}
    alternatives: tuple[str, ...] = ()
    if dataset == "rvs-movie":  # keyframe indices -> seconds of the 1-keyframe-per-second stream
        extra["keyframes"] = [start, end]
        start, end = start / KEYFRAME_RATE, end / KEYFRAME_RATE
        alternatives = (f"{Path(video).stem}.npy",)
    return [BenchQuestion(
        id=qid, dataset=dataset, video=video, question=question, kind="open",
        task=str(qa.get("answer_type") or "open"), answer=str(require(qa, "answer", where)).strip(),
        ask_at=end, evidence=(start, end), extra=extra, video_alternatives=alternatives,
    )]


def _flat(dataset: str, entry: dict, i: int, where: str) -> list[BenchQuestion]:
    vid = str(require(entry, "video_id", where))
    # ids repeat across questions of one video in the published files: keep them unique
    return _question(dataset, f"{entry.get('id', vid)}#{i}", vid, entry, where)


def load(path: str | Path, dataset: str = "rvs-ego") -> Loaded:
    path = Path(path)
    data = as_list(read_json(path), path.name)
    c = Collector(path.name)
    for i, entry in enumerate(data):
        where = f"{path.name}[{i}]"
        if isinstance(entry, dict) and "conversations" in entry:
            video = str(entry.get("video_path") or entry.get("video_id") or "")
            if not video:
                c.skip(where, FormatError(f"{where}: missing field 'video_id'", "missing_field"))
                continue
            vid = str(entry.get("video_id") or Path(video).stem)
            for j, qa in enumerate(conversations(entry)):
                w = f"{where}.conversations[{j}]"
                c.entry(w, _question, dataset, f"{vid}_{j}", video, qa, w)
            continue
        c.entry(where, _flat, dataset, entry, i, where)
    return c.done()
