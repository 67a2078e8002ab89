"""MLVU: long-video questions asked after the whole video (multiple choice, some open-ended).

Source: github.com/JUNJIE99/MLVU (``videochat2/choice_bench.py``, ``open_bench.py``,
``Evaluation_Test/test_bench.py``). The dev set is one JSON array per task
(``1_plotQA.json``, ``4_count.json``, ...) of

    {"video", "duration", "question", "candidates": [...], "answer", "question_type"}

where ``answer`` is the text of the correct candidate; the open-ended tasks (sub-scene
captioning, video summary) have no ``candidates``. The test split (``test_question.json``) adds
``question_id`` and has no ``answer`` (scored by the MLVU leaderboard): its questions load
unscored.

Fields used: ``video`` (file name under the videos directory), ``question``, ``candidates``
(options, lettered A, B, ... in order), ``answer``, ``question_type`` (task, else the file name's
task part), ``question_id``, ``duration`` (kept in ``extra``), ``start``/``end`` when present
(evidence). Every question is asked at the end of the video.
"""

from __future__ import annotations

from pathlib import Path

from .base import BenchQuestion, FormatError, as_list, letter, read_json, require


def _task_from_name(path: Path) -> str:
    stem = path.stem
    head, _, rest = stem.partition("_")
    return rest if head.isdigit() and rest else stem


def load(path: str | Path, dataset: str = "mlvu") -> list[BenchQuestion]:
    path = Path(path)
    data = as_list(read_json(path), str(path))
    default_task = _task_from_name(path)
    out: list[BenchQuestion] = []
    for i, e in enumerate(data):
        where = f"{path}[{i}]"
        video = str(require(e, "video", where))
        question = str(require(e, "question", where)).strip()
        task = str(e.get("question_type") or default_task)
        qid = str(e.get("question_id", f"{Path(video).stem}#{i}"))
        answer = e.get("answer")
        extra = {k: e[k] for k in ("duration",) if k in e}
        evidence = (float(e["start"]), float(e["end"])) if "start" in e and "end" in e else None
        candidates = e.get("candidates")
        if candidates:
            options = tuple(str(c).strip() for c in candidates)
            key = None
            if answer is not None:
                text = str(answer).strip()
                if text not in options:
                    raise FormatError(f"{where}: answer {text!r} is not one of the candidates")
                key = letter(options.index(text), len(options))
            out.append(BenchQuestion(id=qid, dataset=dataset, video=video, question=question,
                                     kind="multiple_choice", task=task, answer=key, options=options,
                                     evidence=evidence, extra=extra))
        else:
            out.append(BenchQuestion(id=qid, dataset=dataset, video=video, question=question, kind="open",
                                     task=task, answer=None if answer is None else str(answer).strip(),
                                     evidence=evidence, extra=extra))
    return out
