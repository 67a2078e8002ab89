"""StreamingBench: multiple-choice questions asked at a timestamp of a streaming video.

Source: github.com/THUNLP-MT/StreamingBench (``src/data/questions_*.json``,
``src/utils/data_execution.py``, ``src/benchmark/*.py``): a JSON array of videos

    {"video_path", "video_categories", "time"?, "questions": [
        {"task_type", "question", "time_stamp": "HH:MM:SS", "options": ["A. ...", ...],
         "answer": "A", "required_ability"?}]}

Fields used: ``video_path`` (resolved under the videos directory, also by its base name),
``questions[].question``, ``options`` (the "A."/"A." prefixes are stripped when every option
has one, in order), ``answer`` (a letter; an option text is accepted too), ``time_stamp``
(asked when the stream reaches it), ``task_type`` (task), ``video_categories`` and
``required_ability`` (kept in ``extra``). Questions without options (the open/proactive
subsets) load as open-ended.
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    BenchQuestion,
    FormatError,
    as_list,
    letters,
    parse_clock,
    read_json,
    require,
    split_option,
    strip_options,
)


def load(path: str | Path, dataset: str = "streamingbench") -> list[BenchQuestion]:
    data = as_list(read_json(path), str(path))
    out: list[BenchQuestion] = []
    for i, v in enumerate(data):
        where = f"{path}[{i}]"
        video = str(require(v, "video_path", where))
        for j, q in enumerate(as_list(require(v, "questions", where), f"{where}.questions")):
            w = f"{where}.questions[{j}]"
            question = str(require(q, "question", w)).strip()
            ask_at = parse_clock(require(q, "time_stamp", w))
            task = str(q.get("task_type") or "unknown")
            extra = {k: x for k, x in (("video_categories", v.get("video_categories")),
                                        ("required_ability", q.get("required_ability"))) if x}
            qid = str(q.get("question_id", f"{Path(video).stem}#{i}.{j}"))
            answer = q.get("answer")
            if q.get("options"):
                options = strip_options([str(o) for o in q["options"]])
                key = None
                if answer is not None:
                    a = str(answer).strip()
                    lead, _ = split_option(a)
                    if a.upper() in letters(len(options)):
                        key = a.upper()
                    elif lead is not None and lead in letters(len(options)):
                        key = lead
                    elif a in options:
                        key = letters(len(options))[options.index(a)]
                    else:
                        raise FormatError(f"{w}: answer {a!r} names no option")
                out.append(BenchQuestion(id=qid, dataset=dataset, video=video, question=question,
                                         kind="multiple_choice", task=task, answer=key, options=options,
                                         ask_at=ask_at, extra=extra))
            else:
                out.append(BenchQuestion(id=qid, dataset=dataset, video=video, question=question, kind="open",
                                         task=task, answer=None if answer is None else str(answer).strip(),
                                         ask_at=ask_at, extra=extra))
    return out
