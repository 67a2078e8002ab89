"""QAEgo4D: episodic-memory questions about egocentric clips, asked after the whole clip.

Source: github.com/lbaermann/qaego4d (README, ``tools/create_pure_videoqa_json.py``):
``annotations.{train,val,test}.json`` is a JSON array of

    {"video_id", "sample_id", "question", "answer", "moment_start_frame", "moment_end_frame"}

with frames at 30 fps (canonical Ego4D NLQ clips). The closed (multiple-choice) variant used by
later work (e.g. VideoMind's ``annotations.QaEgo4D_test_options.json``, ReKV's ``qaego4d``) adds
either ``options`` (the answer is one of them) or ``wrong_answers`` (three distractors).

Fields used: ``video_id`` (the clip file ``<video_id>.mp4`` under the videos directory),
``sample_id`` (id), ``question``, ``answer``, ``moment_start_frame``/``moment_end_frame``
(evidence, divided by 30), ``options`` / ``wrong_answers``. Without either the question is
open-ended (judge). With ``wrong_answers`` the answer is inserted at a position derived from the
``sample_id`` (a stable hash), so the option order is the same on every run. Questions are asked
at the end of the clip (the EMQA setting: the question comes after the video).
"""

from __future__ import annotations

import zlib
from pathlib import Path

from .base import BenchQuestion, FormatError, as_list, letter, read_json, require

FPS = 30.0


def load(path: str | Path, dataset: str = "qaego4d") -> list[BenchQuestion]:
    data = as_list(read_json(path), str(path))
    out: list[BenchQuestion] = []
    for i, e in enumerate(data):
        where = f"{path}[{i}]"
        vid = str(require(e, "video_id", where))
        qid = str(e.get("sample_id", f"{vid}#{i}"))
        question = str(require(e, "question", where)).strip()
        answer = str(require(e, "answer", where)).strip()
        evidence = None
        if "moment_start_frame" in e and "moment_end_frame" in e:
            evidence = (float(e["moment_start_frame"]) / FPS, float(e["moment_end_frame"]) / FPS)
        if "options" in e or "wrong_answers" in e:
            if "options" in e:
                options = [str(o).strip() for o in e["options"]]
            else:
                wrong = [str(o).strip() for o in e["wrong_answers"]]
                pos = zlib.crc32(qid.encode()) % (len(wrong) + 1)
                options = wrong[:pos] + [answer] + wrong[pos:]
            lowered = [o.lower() for o in options]
            if answer.lower() not in lowered:
                raise FormatError(f"{where}: answer {answer!r} is not one of the options")
            key = letter(lowered.index(answer.lower()), len(options))
            out.append(BenchQuestion(id=qid, dataset=dataset, video=vid, question=question, kind="multiple_choice",
                                     task="closed", answer=key, options=tuple(options), evidence=evidence))
        else:
            out.append(BenchQuestion(id=qid, dataset=dataset, video=vid, question=question, kind="open",
                                     task="open", answer=answer, evidence=evidence))
    return out
