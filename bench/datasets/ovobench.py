"""OVO-Bench: backward tracing, real-time perception and forward active responding.

Source: github.com/JoeLeelyf/OVO-Bench (``inference.py``, ``utils/OVOBench.py``,
``utils/OVOBenchScore.py``): one JSON array (``data/ovo_bench_new.json``) of entries with a
``task``:

* backward (``EPM``, ``ASI``, ``HLD``) and real-time (``STU``, ``OJR``, ``ATR``, ``ACR``,
  ``OCR``, ``FPD``): ``{"id", "task", "video", "realtime", "question", "options": [...],
  "gt": <index>}``, multiple choice asked at ``realtime`` seconds;
* forward (``REC``, ``SSR``, ``CRR``): ``{"id", "task", "video", "test_info": [{"realtime", ...}]}``
  probed at every ``test_info[].realtime``: ``REC`` counts an ``activity`` (``count`` is the
  answer), ``SSR`` asks whether a ``step`` is being performed and ``CRR`` whether the video so
  far answers ``question`` (``type`` 1 = yes, 0 = no).

Fields used: ``id``, ``task``, ``video`` (under the videos directory), ``realtime``
(``ask_at``), ``question``, ``options``, ``gt``, ``test_info[].realtime/count/step/type``,
``activity``. Forward probes become one question each (``<id>@<k>``) with the question text
built from those fields; their answers are a number (``count``) or yes/no (``yes_no``). The
task's group (backward / realtime / forward) is kept in ``extra["group"]``.
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    BenchQuestion,
    Collector,
    FormatError,
    Loaded,
    as_list,
    letter,
    read_json,
    require,
    strip_options,
)

BACKWARD = ("EPM", "ASI", "HLD")
REALTIME = ("STU", "OJR", "ATR", "ACR", "OCR", "FPD")
FORWARD = ("REC", "SSR", "CRR")


def _group(task: str) -> str:
    return "backward" if task in BACKWARD else "realtime" if task in REALTIME else "forward"


def _forward(e: dict, task: str, dataset: str, qid: str, video: str, where: str) -> list[BenchQuestion]:
    out: list[BenchQuestion] = []
    for k, probe in enumerate(as_list(require(e, "test_info", where), f"{where}.test_info")):
        w = f"{where}.test_info[{k}]"
        at = float(require(probe, "realtime", w))
        if task == "REC":
            activity = str(require(e, "activity", where)).strip()
            question = f"How many times have they {activity} so far? Answer with a number."
            kind, answer = "count", str(int(require(probe, "count", w)))
        elif task == "SSR":
            step = str(require(probe, "step", w)).strip()
            question = f"Is the person performing this step right now: {step}? Answer yes or no."
            kind, answer = "yes_no", "yes" if int(require(probe, "type", w)) == 1 else "no"
        elif task == "CRR":
            asked = str(require(e, "question", where)).strip()
            question = (f"{asked}\nDoes the video so far, especially its latest frames, show enough to answer "
                        "this question? Answer yes or no.")
            kind, answer = "yes_no", "yes" if int(require(probe, "type", w)) == 1 else "no"
        else:
            raise FormatError(f"{where}: unknown forward task {task!r}", "unknown_task")
        out.append(BenchQuestion(id=f"{qid}@{k}", dataset=dataset, video=video, question=question, kind=kind,
                                 task=task, answer=answer, ask_at=at, extra={"group": "forward"}))
    return out


def _entry(e: dict, i: int, where: str, dataset: str) -> list[BenchQuestion]:
    task = str(require(e, "task", where))
    video = str(require(e, "video", where))
    qid = str(e.get("id", i))
    if task in FORWARD or "test_info" in e:
        return _forward(e, task, dataset, qid, video, where)
    options = strip_options([str(o) for o in require(e, "options", where)])
    gt = e.get("gt")
    return [BenchQuestion(
        id=qid, dataset=dataset, video=video, question=str(require(e, "question", where)).strip(),
        kind="multiple_choice", task=task, answer=None if gt is None else letter(int(gt), len(options)),
        options=options, ask_at=float(require(e, "realtime", where)), extra={"group": _group(task)},
    )]


def load(path: str | Path, dataset: str = "ovobench") -> Loaded:
    path = Path(path)
    data = as_list(read_json(path), path.name)
    c = Collector(path.name)
    for i, e in enumerate(data):
        where = f"{path.name}[{i}]"
        c.entry(where, _entry, e, i, where, dataset)
    return c.done()
