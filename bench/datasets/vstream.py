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
"end_time", "answer_type"?}]}]``.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import BenchQuestion, FormatError, as_list, read_json, require

_SHOT = re.compile(r"shot_(\d+)")


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
    raise FormatError(f"{where}: bad time {value!r}")


def _question(dataset: str, qid: str, video: str, qa: dict, where: str) -> BenchQuestion:
    start = _time(qa.get("start_time", 0.0), where)
    end = _time(require(qa, "end_time", where), where)
    if end < start:
        raise FormatError(f"{where}: end_time {end} before start_time {start}")
    return BenchQuestion(
        id=qid, dataset=dataset, video=video, question=str(require(qa, "question", where)).strip(),
        kind="open", task=str(qa.get("answer_type") or "open"), answer=str(require(qa, "answer", where)).strip(),
        ask_at=end, evidence=(start, end),
    )


def load(path: str | Path, dataset: str = "rvs-ego") -> list[BenchQuestion]:
    data = as_list(read_json(path), str(path))
    out: list[BenchQuestion] = []
    for i, entry in enumerate(data):
        where = f"{path}[{i}]"
        if isinstance(entry, dict) and "conversations" in entry:
            video = str(entry.get("video_path") or require(entry, "video_id", where))
            vid = str(entry.get("video_id") or Path(video).stem)
            for j, qa in enumerate(as_list(entry["conversations"], f"{where}.conversations")):
                out.append(_question(dataset, f"{vid}_{j}", video, qa, f"{where}.conversations[{j}]"))
        else:
            vid = str(require(entry, "video_id", where))
            # ids repeat across questions of one video in the published files: keep them unique
            qid = f"{entry.get('id', vid)}#{i}"
            out.append(_question(dataset, qid, vid, entry, where))
    return out
