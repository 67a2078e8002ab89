"""The one record every benchmark loader produces, and the small parsers they share.

A loader reads a benchmark's own question file (as published) and returns :class:`Loaded`, a list
of :class:`BenchQuestion` that also reports the entries it skipped (:class:`Skip`: a defective entry
costs that entry, not the file) and the entries it loaded but flagged (e.g. an answer listed twice
among the candidates). Nothing here opens a video: ``video`` is the name the file gives, resolved
against a videos directory by :func:`resolve_video` when the replay runs (also through the
question's ``video_alternatives``, the layouts the benchmark's raw downloads use).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Kind = Literal["multiple_choice", "open", "yes_no", "count"]
KINDS: tuple[str, ...] = ("multiple_choice", "open", "yes_no", "count")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".npy")


@dataclass(frozen=True)
class BenchQuestion:
    """One question of a benchmark, asked of one video stream.

    ``ask_at`` is the stream time (s) at which the question is asked; ``None`` means after the
    whole video (offline-style benchmarks such as MLVU and QAEgo4D). ``answer`` is the option
    letter for multiple choice, ``"yes"``/``"no"`` for yes/no, the number as text for counts and
    the reference text for open-ended questions; ``None`` when the file has no ground truth
    (e.g. MLVU's test split), which leaves the question unscored.
    """

    id: str
    dataset: str
    video: str
    question: str
    kind: Kind
    task: str
    answer: str | None
    options: tuple[str, ...] | None = None
    ask_at: float | None = None
    evidence: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    # other paths (relative to the videos directory; ``*`` matches one folder, only a unique
    # match counts) where the benchmark's raw download puts this video
    video_alternatives: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.id}: unknown kind {self.kind!r}")
        if self.kind == "multiple_choice":
            if not self.options:
                raise ValueError(f"{self.id}: a multiple-choice question needs options")
            if self.answer is not None and self.answer not in letters(len(self.options)):
                raise ValueError(f"{self.id}: answer {self.answer!r} is not an option letter")
        if self.ask_at is not None and self.ask_at < 0:
            raise ValueError(f"{self.id}: negative ask_at {self.ask_at}")

    @property
    def answer_text(self) -> str | None:
        """The correct option's text for multiple choice, else ``answer``."""
        if self.kind == "multiple_choice" and self.answer is not None and self.options:
            return self.options[ord(self.answer) - ord("A")]
        return self.answer

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["options"] = list(self.options) if self.options else None
        d["evidence"] = list(self.evidence) if self.evidence else None
        d["video_alternatives"] = list(self.video_alternatives)
        return d


class FormatError(ValueError):
    """The question file (or one entry of it) is not in the expected format; the message names
    the entry and ``code`` is the stable reason reported when only that entry is skipped."""

    def __init__(self, message: str, code: str = "bad_entry") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Skip:
    """One entry of the file that was not loaded (``reason``: a stable code) or, in
    ``Loaded.flagged``, loaded with a caveat."""

    where: str  # "<file name>[i]" / "<file name>[i].questions[j]" / "<file name>:<csv line>"
    reason: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class Loaded(list[BenchQuestion]):
    """A loader's result: the questions, plus ``skipped`` (entries left out, with reasons) and
    ``flagged`` (entries loaded under a documented convention, e.g. a duplicated answer)."""

    def __init__(self, questions: Iterable[BenchQuestion] = (), skipped: Iterable[Skip] = (),
                 flagged: Iterable[Skip] = ()) -> None:
        super().__init__(questions)
        self.skipped: list[Skip] = list(skipped)
        self.flagged: list[Skip] = list(flagged)

    def report(self) -> dict[str, Any]:
        """JSON-able counts and reasons (for ``bench real``'s result and printout)."""
        return {
            "questions": len(self),
            "skipped": len(self.skipped),
            "skipped_by_reason": dict(Counter(s.reason for s in self.skipped)),
            "flagged": len(self.flagged),
            "flagged_by_reason": dict(Counter(s.reason for s in self.flagged)),
            "skipped_entries": [s.to_dict() for s in self.skipped],
            "flagged_entries": [s.to_dict() for s in self.flagged],
        }


class Collector:
    """Runs each entry's parser, keeping its questions or recording why it was skipped.

    A file whose every entry fails is rejected whole (``FormatError`` with the first reason):
    that is a file in another format, not a few defective entries."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.out = Loaded()

    def entry(self, where: str, parse: Callable[..., list[BenchQuestion]], *args: Any, **kwargs: Any) -> None:
        """``parse(*args, **kwargs)``: its questions are kept; a ``FormatError`` skips the entry
        (and drops what it flagged: a skipped entry is reported once)."""
        flagged = len(self.out.flagged)
        try:
            self.out += parse(*args, **kwargs)
        except FormatError as e:
            del self.out.flagged[flagged:]
            self.skip(where, e)

    def skip(self, where: str, e: FormatError) -> None:
        self.out.skipped.append(Skip(where, e.code, str(e)))

    def flag(self, where: str, reason: str, detail: str) -> None:
        self.out.flagged.append(Skip(where, reason, detail))

    def done(self) -> Loaded:
        if not self.out and self.out.skipped:
            first = self.out.skipped[0]
            raise FormatError(f"{self.name}: no entry fits the format ({len(self.out.skipped)} rejected; "
                              f"first: {first.detail})", first.reason)
        return self.out


def letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def letter(index: int, n_options: int) -> str:
    if not 0 <= index < n_options:
        raise FormatError(f"answer index {index} outside {n_options} options", "answer_not_an_option")
    return chr(ord("A") + index)


# "A. text", "A) text", "(A) text", "A:text", "A.text" (StreamingBench has both with and without space)
_LETTER_PREFIX = re.compile(r"^\s*\(?([A-Z])\s*[.):]\s*(.*)$", re.S)


def split_option(option: str) -> tuple[str | None, str]:
    """``"B. a red car"`` -> ``("B", "a red car")``; an option without a letter -> ``(None, text)``."""
    m = _LETTER_PREFIX.match(option)
    if m:
        return m.group(1), m.group(2).strip()
    return None, option.strip()


def strip_options(options: list[str]) -> tuple[str, ...]:
    """Option texts without the "A." prefixes some files carry, when every option has one in order."""
    parts = [split_option(o) for o in options]
    if all(p[0] == chr(ord("A") + i) for i, p in enumerate(parts)):
        return tuple(p[1] for p in parts)
    return tuple(o.strip() for o in options)


def parse_clock(value: str | float | int) -> float:
    """``"00:03:10"`` / ``"3:10"`` / ``"190"`` / ``190.5`` -> seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError as e:
        raise FormatError(f"bad timestamp {value!r}", "bad_time") from e
    if not 1 <= len(parts) <= 3:
        raise FormatError(f"bad timestamp {value!r}", "bad_time")
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    return seconds


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}: not JSON ({e})") from e


def require(entry: dict, key: str, where: str) -> Any:
    if not isinstance(entry, dict):
        raise FormatError(f"{where}: expected an object, got {type(entry).__name__}", "not_an_object")
    if key not in entry or entry[key] is None:
        raise FormatError(f"{where}: missing field {key!r}", "missing_field")
    return entry[key]


def as_list(data: Any, where: str) -> list:
    if not isinstance(data, list):
        raise FormatError(f"{where}: expected a JSON array at the top level")
    return data


def answer_index(options: tuple[str, ...], answer: str, where: str, flag: Callable[[str], None]) -> int:
    """Index of the candidate equal to ``answer`` (exact text, else case-insensitive). When the
    answer is listed more than once the last occurrence wins, as in MLVU's official scorer
    (``choice_bench.py`` keeps overwriting its answer index while scanning the candidates);
    ``flag`` is told. Not among the candidates: ``FormatError`` (the entry is skipped)."""
    hits = [i for i, o in enumerate(options) if o == answer]
    if not hits:
        hits = [i for i, o in enumerate(options) if o.lower() == answer.lower()]
    if not hits:
        raise FormatError(f"{where}: answer {answer!r} is not one of the candidates", "answer_not_in_candidates")
    if len(hits) > 1:
        flag(f"answer {answer!r} listed {len(hits)} times among the candidates; the last one counts")
    return hits[-1]


def conversations(entry: dict) -> list:
    """The ``conversations`` of a ReKV-style grouped entry; not a list: one ``None`` item, which
    the per-question parser then skips as ``not_an_object``."""
    conv = entry.get("conversations")
    return conv if isinstance(conv, list) else [None]


def resolve_video(videos_dir: str | Path | None, name: str, alternatives: Iterable[str] = ()) -> Path:
    """The file a question's ``video`` names: as given if it exists, else under ``videos_dir``
    (also by basename, and with the usual suffixes when the name has none, e.g. a VStream-QA
    ``video_id``), else at one of ``alternatives`` under ``videos_dir`` (a ``*`` part matches
    one folder; only a unique match counts). Raises ``FileNotFoundError`` naming what was tried."""
    tried: list[str] = []
    given = Path(name)
    candidates = [given] if given.is_absolute() or videos_dir is None else []
    if videos_dir is not None:
        root = Path(videos_dir)
        candidates += [root / given, root / given.name]
    for c in list(candidates):
        if not c.suffix:
            candidates += [c.with_name(c.name + s) for s in VIDEO_SUFFIXES]
    for c in candidates:
        tried.append(str(c))
        if c.is_file():
            return c
    if videos_dir is not None:
        for alt in alternatives:
            tried.append(str(root / alt))
            matches = sorted(p for p in root.glob(alt) if p.is_file()) if "*" in alt else [root / alt]
            matches = [p for p in matches if p.is_file()]
            if len(matches) == 1:
                return matches[0]
    raise FileNotFoundError(f"video {name!r} not found (tried {', '.join(tried)})")
