"""MLVU: long-video questions asked after the whole video (multiple choice, some open-ended).

Source: github.com/JUNJIE99/MLVU (``videochat2/choice_bench.py``, ``open_bench.py``,
``Evaluation_Test/test_bench.py``). The dev set is one JSON array per task, MVBench style
(``json/1_plotQA.json``, ``json/2_needle.json``, ...) of

    {"video", "duration", "question", "candidates": [...], "answer", "question_type"}

where ``answer`` is the text of the correct candidate; the open-ended tasks (sub-scene
captioning, video summary) have no ``candidates``. The videos of task file ``N_<task>.json`` are
in ``video/N_<task>/`` (the official code's ``data_list``). The test split
(``test_question.json``) adds ``question_id`` and has no ``answer`` (scored by the MLVU
leaderboard): its questions load unscored.

Also read: the grouped file ReKV's data preparation writes (github.com/Becomebright/ReKV,
``data/mlvu/dev_debug_mc.json``): ``[{"video_id", "video_path", "duration", "conversations":
[{"question", "choices", "answer", "question_type"?}]}]``, with the same meaning.

Fields used: ``video`` / ``video_path`` (under the videos directory; also found at
``video/<task file>/<name>`` and ``<task file>/<name>``), ``question``, ``candidates`` /
``choices`` (options, lettered A, B, ... in order), ``answer``, ``question_type`` (task, else
the file name's task part), ``question_id``, ``duration`` (kept in ``extra``), ``start``/``end``
when present (evidence). Every question is asked at the end of the video.

Defects of the published files, per entry: an answer that is not among its candidates (two in
``2_needle.json``) skips that entry (reason ``answer_not_in_candidates``); an answer listed
twice among the candidates (six entries) counts its *last* occurrence, as the official
``choice_bench.py`` does, and is flagged ``duplicate_answer``.
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    BenchQuestion,
    Collector,
    Loaded,
    answer_index,
    as_list,
    conversations,
    letter,
    read_json,
    require,
)


def _task_from_name(path: Path) -> str:
    stem = path.stem
    head, _, rest = stem.partition("_")
    return rest if head.isdigit() and rest else stem


def _question(c: Collector, where: str, e: dict, *, dataset: str, qid: str, video: str, default_task: str,
              options_key: str, extra: dict, alternatives: tuple[str, ...]) -> list[BenchQuestion]:
    question = str(require(e, "question", where)).strip()
    task = str(e.get("question_type") or default_task)
    answer = e.get("answer")
    evidence = (float(e["start"]), float(e["end"])) if "start" in e and "end" in e else None
    candidates = e.get(options_key)
    common = dict(id=qid, dataset=dataset, video=video, question=question, task=task, evidence=evidence,
                  extra=extra, video_alternatives=alternatives)
    if candidates:
        options = tuple(str(o).strip() for o in candidates)
        key = None
        if answer is not None:
            i = answer_index(options, str(answer).strip(), where, lambda d: c.flag(where, "duplicate_answer", d))
            key = letter(i, len(options))
        return [BenchQuestion(kind="multiple_choice", answer=key, options=options, **common)]
    return [BenchQuestion(kind="open", answer=None if answer is None else str(answer).strip(), **common)]


def _flat(c: Collector, where: str, e: dict, i: int, *, dataset: str, default_task: str,
          task_dirs: tuple[str, ...]) -> list[BenchQuestion]:
    video = str(require(e, "video", where))
    qid = str(e.get("question_id", f"{Path(video).stem}#{i}"))
    extra = {k: e[k] for k in ("duration",) if k in e}
    return _question(c, where, e, dataset=dataset, qid=qid, video=video, default_task=default_task,
                     options_key="candidates", extra=extra, alternatives=tuple(f"{d}/{video}" for d in task_dirs))


def load(path: str | Path, dataset: str = "mlvu") -> Loaded:
    path = Path(path)
    data = as_list(read_json(path), path.name)
    default_task = _task_from_name(path)
    task_dirs = (f"video/{path.stem}", path.stem)
    c = Collector(path.name)
    for i, e in enumerate(data):
        where = f"{path.name}[{i}]"
        if isinstance(e, dict) and "conversations" in e:  # ReKV's grouped layout
            video = str(e.get("video_path") or require(e, "video_id", where))
            vid = str(e.get("video_id") or Path(video).stem)
            extra = {k: e[k] for k in ("duration",) if k in e}
            alts = tuple(f"{d}/{Path(video).name}" for d in task_dirs)
            for j, qa in enumerate(conversations(e)):
                w = f"{where}.conversations[{j}]"
                c.entry(w, _question, c, w, qa, dataset=dataset, qid=f"{vid}#{j}", video=video,
                        default_task=default_task, options_key="choices", extra=dict(extra), alternatives=alts)
            continue
        c.entry(where, _flat, c, where, e, i, dataset=dataset, default_task=default_task, task_dirs=task_dirs)
    return c.done()
