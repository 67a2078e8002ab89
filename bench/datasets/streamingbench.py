"""StreamingBench: multiple-choice questions asked at a timestamp of a streaming video.

Source: github.com/THUNLP-MT/StreamingBench (``src/data/questions_*.json``,
``src/data/move_video.py``, ``src/benchmark/StreamingBench*.py``) and the released annotation
CSVs (huggingface.co/datasets/mjuicem/StreamingBench, ``StreamingBench/<Group>.csv``). Three
published forms are read:

* ``questions_{real,omni,proactive}.json``: a JSON array of video segments
  ``{"video_path", "video_categories", "time"?, "questions": [{"task_type", "question",
  "time_stamp": "HH:MM:SS", "options": ["A. ...", ...], "answer": "A", "required_ability"?}]}``;
* ``questions_sqa.json``: the same segments grouped per video, an array of arrays (the
  questions of one video are asked in turn, with the earlier ones as context);
* the CSV: one row per question, columns ``question_id`` (``<Group>_sample_<N>_<k>``),
  ``task_type``, ``question``, ``time_stamp``, ``answer``, ``options`` (a Python list literal).

Videos: the JSON names ``./videos/sample_<N>_<TYPE>.mp4`` (what ``move_video.py`` makes of the
raw ``<TYPE dir>/sample_<N>/video.mp4``); the raw layout is found too (``sample_<N>/video.mp4``
under the videos directory, or under ``<TYPE>/`` / ``*/<TYPE>/``). CSV rows get the same name,
with ``TYPE`` = ``real`` / ``sqa`` / ``proactive`` for those groups and the task type otherwise
(the omni and contextual downloads are one folder per task type).

Fields used: ``question``, ``options`` (the "A."/"A." prefixes are stripped), ``answer``
(a letter; "B. text" and an option text are accepted too), ``time_stamp`` (asked when the
stream reaches it), ``task_type`` (task), ``video_categories`` and ``required_ability`` (kept
in ``extra``), ``question_id`` (id). Questions without options (the proactive subset) load as
open-ended.

Defects of the published files, per question (13 omni questions have broken option lists, 6
map the answer letter to another option's text): an option list that cannot be read as one
option per letter (an option split in two, an empty option, a repeated or missing label, some
options labelled and some not) skips the question (``broken_options``). Where the answer's
letter and text disagree, the letter counts, as in the official scorer (it compares the
model's letter with the ``answer`` letter, and the prompt shows the options with their printed
labels); such questions are flagged ``answer_text_mismatch``. Options printed with their labels
out of order are put in label order (flagged ``option_labels_reordered``) for the same reason.
"""

from __future__ import annotations

import ast
import csv
import re
from pathlib import Path
from typing import Any

from .base import (
    BenchQuestion,
    Collector,
    FormatError,
    Loaded,
    as_list,
    letters,
    parse_clock,
    read_json,
    require,
    split_option,
)

_SAMPLE_NAME = re.compile(r"^(sample_\d+)_(.+?)(\.\w+)?$")
_QUESTION_ID = re.compile(r"^(?P<group>.+?)_(?P<sample>sample_\d+)_(?P<k>\d+)$")
# the raw downloads of these groups hold sample_<N> folders directly (move_video.py names them so)
_GROUP_TYPE = {"real-time visual understanding": "real", "sequential question answering": "sqa",
               "proactive output": "proactive"}


def video_alternatives(name: str) -> tuple[str, ...]:
    """Where the raw download puts ``sample_<N>_<TYPE>.mp4``: ``[*/]<TYPE>/sample_<N>/video.mp4``."""
    m = _SAMPLE_NAME.match(Path(name).name)
    if not m:
        return ()
    sample, kind = m.group(1), m.group(2)
    spaced = kind.replace("_", " ")
    dirs = dict.fromkeys([kind, spaced, f"*/{kind}", f"*/{spaced}"])
    return (*(f"{d}/{sample}/video.mp4" for d in dirs), f"{sample}/video.mp4")


def read_options(raw: list[str], answer: str | None, where: str, c: Collector) -> tuple[tuple[str, ...], str | None]:
    """(option texts in letter order, answer letter) or ``FormatError('broken_options')``."""
    if len(raw) < 2:
        raise FormatError(f"{where}: {len(raw)} option(s)", "broken_options")
    parts = [split_option(o) for o in raw]
    labels = [p[0] for p in parts]
    if any(not t for _, t in parts):
        raise FormatError(f"{where}: an empty option in {raw!r}", "broken_options")
    if all(lab is None for lab in labels):
        options = tuple(t for _, t in parts)
    elif sorted(lab or "" for lab in labels) == letters(len(raw)):
        by_label = dict(zip(labels, (t for _, t in parts), strict=True))
        if labels != letters(len(raw)):
            c.flag(where, "option_labels_reordered", f"labels printed in the order {''.join(map(str, labels))}")
        options = tuple(by_label[k] for k in letters(len(raw)))
    else:
        raise FormatError(f"{where}: options are not one per letter: {raw!r}", "broken_options")
    if answer is None:
        return options, None
    a = answer.strip()
    lead, text = split_option(a)
    valid = letters(len(options))
    if a.upper() in valid:
        return options, a.upper()
    if lead is not None and lead in valid:
        if text and text != options[valid.index(lead)]:
            c.flag(where, "answer_text_mismatch", f"answer {a!r}: option {lead} reads {options[valid.index(lead)]!r}; "
                   "the letter counts")
        return options, lead
    if a in options:
        return options, valid[options.index(a)]
    raise FormatError(f"{where}: answer {a!r} names no option", "answer_not_an_option")


def _question(c: Collector, q: dict, *, where: str, dataset: str, qid: str, video: str, extra: dict[str, Any],
              options: list[str] | None) -> list[BenchQuestion]:
    question = str(require(q, "question", where)).strip()
    ask_at = parse_clock(require(q, "time_stamp", where))
    task = str(q.get("task_type") or "unknown")
    answer = q.get("answer")
    answer = None if answer is None or str(answer).strip() == "" else str(answer)
    common = dict(id=qid, dataset=dataset, video=video, question=question, task=task, ask_at=ask_at, extra=extra,
                  video_alternatives=video_alternatives(video))
    if options:
        opts, key = read_options(options, answer, where, c)
        return [BenchQuestion(kind="multiple_choice", answer=key, options=opts, **common)]
    return [BenchQuestion(kind="open", answer=None if answer is None else answer.strip(), **common)]


def _json_question(c: Collector, v: dict, q: Any, video: str, where: str, *, qid_default: str, dataset: str,
                   sequential: bool) -> list[BenchQuestion]:
    require(q, "question", where)
    extra = {k: x for k, x in (("video_categories", v.get("video_categories")),
                                ("required_ability", q.get("required_ability"))) if x}
    if sequential:
        extra["sequential"] = True
    opts = q.get("options")
    return _question(c, q, where=where, dataset=dataset, qid=str(q.get("question_id", qid_default)), video=video,
                     extra=extra, options=[str(o) for o in opts] if isinstance(opts, list) and opts else None)


def _segment(c: Collector, v: Any, i: int, where: str, dataset: str, sequential: bool) -> None:
    try:
        video = str(require(v, "video_path", where))
        qs = as_list(require(v, "questions", where), f"{where}.questions")
    except FormatError as e:
        c.skip(where, e)
        return
    for j, q in enumerate(qs):
        c.entry(f"{where}.questions[{j}]", _json_question, c, v, q, video, f"{where}.questions[{j}]",
                qid_default=f"{Path(video).stem}#{i}.{j}", dataset=dataset, sequential=sequential)


def _load_json(path: Path, dataset: str) -> Loaded:
    data = as_list(read_json(path), path.name)
    c = Collector(path.name)
    for i, v in enumerate(data):
        where = f"{path.name}[{i}]"
        if isinstance(v, list):  # questions_sqa.json: the segments of one video
            for k, seg in enumerate(v):
                _segment(c, seg, i, f"{where}[{k}]", dataset, sequential=True)
        else:
            _segment(c, v, i, where, dataset, sequential=False)
    return c.done()


def _csv_video(row: dict[str, str], where: str) -> str:
    m = _QUESTION_ID.match((row.get("question_id") or "").strip())
    if not m:
        if row.get("video_path"):
            return row["video_path"]
        raise FormatError(f"{where}: question_id {row.get('question_id')!r} names no sample", "missing_field")
    group = m.group("group").strip()
    kind = _GROUP_TYPE.get(group.lower()) or (row.get("task_type") or group).strip().replace(" ", "_")
    return f"{m.group('sample')}_{kind}.mp4"


def _csv_options(raw: str, where: str) -> list[str] | None:
    text = (raw or "").strip()
    if not text:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        raise FormatError(f"{where}: options {text[:80]!r} are not a list literal", "broken_options") from e
    if not isinstance(value, (list, tuple)):
        raise FormatError(f"{where}: options {text[:80]!r} are not a list", "broken_options")
    return [str(o) for o in value]


def _csv_question(c: Collector, row: dict[str, str], where: str, dataset: str) -> list[BenchQuestion]:
    video = _csv_video(row, where)
    qid = (row.get("question_id") or "").strip() or f"{Path(video).stem}@{where}"
    extra = {"sequential": True} if Path(video).stem.endswith("_sqa") else {}
    return _question(c, row, where=where, dataset=dataset, qid=qid, video=video, extra=extra,
                     options=_csv_options(row.get("options", ""), where))


def _load_csv(path: Path, dataset: str) -> Loaded:
    c = Collector(path.name)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"question", "time_stamp", "options"} - set(reader.fieldnames or ())
        if missing:
            raise FormatError(f"{path.name}: not a StreamingBench CSV (no column {', '.join(sorted(missing))})")
        for row in reader:
            c.entry(f"{path.name}:{reader.line_num}", _csv_question, c, row, f"{path.name}:{reader.line_num}", dataset)
    return c.done()


def load(path: str | Path, dataset: str = "streamingbench") -> Loaded:
    path = Path(path)
    return _load_csv(path, dataset) if path.suffix.lower() == ".csv" else _load_json(path, dataset)
