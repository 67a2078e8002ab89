"""QAEgo4D: episodic-memory questions about egocentric clips, asked after the whole clip.

Source: github.com/lbaermann/qaego4d (README, ``tools/create_pure_videoqa_json.py``):
``annotations.{train,val,test}.json`` is a JSON array of

    {"video_id", "sample_id", "question", "answer", "moment_start_frame", "moment_end_frame"}

with frames at 30 fps (canonical Ego4D NLQ clips). The closed (multiple-choice) variant used by
later work (e.g. VideoMind's ``annotations.QaEgo4D_test_options.json``) adds either ``options``
(the answer is one of them) or ``wrong_answers`` (three distractors).

Also read: the grouped file ReKV's data preparation writes (github.com/Becomebright/ReKV,
``data/qaego4d/test_mc.json``), one entry per clip:

    {"video_id", "video_path", "duration", "conversations": [
        {"question", "choices": [...], "answer": <text of one choice>,
         "temporal_windows": [[start_s, end_s], ...]}]}

where the times are **seconds** (ReKV's recall metric reads them so) and ``choices`` may be
absent (open-ended).

Fields used: ``video_id`` (the clip file ``<video_id>.mp4`` under the videos directory) or
``video_path``, ``sample_id`` (id; ReKV form: ``<video_id>#<k>``), ``question``, ``answer``,
``moment_start_frame``/``moment_end_frame`` (evidence, divided by 30), ``options`` /
``wrong_answers`` / ``choices``, ``temporal_windows`` (evidence: first start to last end; the
windows are kept in ``extra``). Without options the question is open-ended (judge). With
``wrong_answers`` the answer is inserted at a position derived from the ``sample_id`` (a stable
hash), so the option order is the same on every run. Questions are asked at the end of the clip
(the EMQA setting: the question comes after the video). An answer that is not among the options
skips that entry (``answer_not_in_candidates``); one listed twice counts its last occurrence
(flagged ``duplicate_answer``).
"""

from __future__ import annotations

import zlib
from pathlib import Path

from .base import (
    BenchQuestion,
    Collector,
    FormatError,
    Loaded,
    answer_index,
    as_list,
    conversations,
    letter,
    read_json,
    require,
)

FPS = 30.0


def _closed_or_open(c: Collector, where: str, *, qid: str, dataset: str, video: str, question: str, answer: str,
                    options: list[str] | None, evidence: tuple[float, float] | None,
                    extra: dict) -> list[BenchQuestion]:
    common = dict(id=qid, dataset=dataset, video=video, question=question, evidence=evidence, extra=extra)
    if options is None:
        return [BenchQuestion(kind="open", task="open", answer=answer, **common)]
    opts = tuple(options)
    i = answer_index(opts, answer, where, lambda d: c.flag(where, "duplicate_answer", d))
    return [BenchQuestion(kind="multiple_choice", task="closed", answer=letter(i, len(opts)), options=opts, **common)]


def _flat(c: Collector, e: dict, i: int, where: str, dataset: str) -> list[BenchQuestion]:
    vid = str(require(e, "video_id", where))
    qid = str(e.get("sample_id", f"{vid}#{i}"))
    question = str(require(e, "question", where)).strip()
    answer = str(require(e, "answer", where)).strip()
    evidence = None
    if "moment_start_frame" in e and "moment_end_frame" in e:
        evidence = (float(e["moment_start_frame"]) / FPS, float(e["moment_end_frame"]) / FPS)
    options = None
    if "options" in e:
        options = [str(o).strip() for o in e["options"]]
    elif "wrong_answers" in e:
        wrong = [str(o).strip() for o in e["wrong_answers"]]
        pos = zlib.crc32(qid.encode()) % (len(wrong) + 1)
        options = wrong[:pos] + [answer] + wrong[pos:]
    return _closed_or_open(c, where, qid=qid, dataset=dataset, video=vid, question=question, answer=answer,
                           options=options, evidence=evidence, extra={})


def _windows(qa: dict, where: str) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for w in qa.get("temporal_windows") or []:
        try:
            start, end = (float(x) for x in w)
        except (TypeError, ValueError) as e:
            raise FormatError(f"{where}: bad temporal window {w!r}", "bad_time") from e
        if end < start:
            raise FormatError(f"{where}: temporal window {w!r} ends before it starts", "bad_time")
        out.append((start, end))
    return out


def _conversation(c: Collector, qa: dict, vid: str, video: str, j: int, where: str, dataset: str,
                  extra: dict) -> list[BenchQuestion]:
    question = str(require(qa, "question", where)).strip()
    answer = str(require(qa, "answer", where)).strip()
    windows = _windows(qa, where)
    evidence = (min(s for s, _ in windows), max(e for _, e in windows)) if windows else None
    if windows:
        extra = {**extra, "temporal_windows": [list(w) for w in windows]}
    options = [str(o).strip() for o in qa["choices"]] if qa.get("choices") else None
    return _closed_or_open(c, where, qid=f"{vid}#{j}", dataset=dataset, video=video, question=question,
                           answer=answer, options=options, evidence=evidence, extra=extra)


def load(path: str | Path, dataset: str = "qaego4d") -> Loaded:
    path = Path(path)
    data = as_list(read_json(path), path.name)
    c = Collector(path.name)
    for i, e in enumerate(data):
        where = f"{path.name}[{i}]"
        if isinstance(e, dict) and "conversations" in e:  # ReKV's grouped layout (seconds)
            vid = str(e.get("video_id") or Path(str(e.get("video_path", i))).stem)
            video = str(e.get("video_path") or vid)
            extra = {k: e[k] for k in ("duration",) if k in e}
            for j, qa in enumerate(conversations(e)):
                w = f"{where}.conversations[{j}]"
                c.entry(w, _conversation, c, qa, vid, video, j, w, dataset, extra)
            continue
        c.entry(where, _flat, c, e, i, where, dataset)
    return c.done()
