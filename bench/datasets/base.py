"""The one record every benchmark loader produces, and the small parsers they share.

A loader reads a benchmark's own question file (JSON as published) and returns a list of
:class:`BenchQuestion`. Nothing here opens a video: ``video`` is the name the file gives, resolved
against a videos directory by :func:`resolve_video` when the replay runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Kind = Literal["multiple_choice", "open", "yes_no", "count"]
KINDS: tuple[str, ...] = ("multiple_choice", "open", "yes_no", "count")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")


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
        return d


class FormatError(ValueError):
    """The question file is not in the expected format (the message names the entry)."""


def letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def letter(index: int, n_options: int) -> str:
    if not 0 <= index < n_options:
        raise FormatError(f"answer index {index} outside {n_options} options")
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
        raise FormatError(f"bad timestamp {value!r}") from e
    if not 1 <= len(parts) <= 3:
        raise FormatError(f"bad timestamp {value!r}")
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
        raise FormatError(f"{where}: expected an object, got {type(entry).__name__}")
    if key not in entry or entry[key] is None:
        raise FormatError(f"{where}: missing field {key!r}")
    return entry[key]


def as_list(data: Any, where: str) -> list:
    if not isinstance(data, list):
        raise FormatError(f"{where}: expected a JSON array at the top level")
    return data


def resolve_video(videos_dir: str | Path | None, name: str) -> Path:
    """The file a question's ``video`` names: as given if it exists, else under ``videos_dir``
    (also by basename, and with the usual suffixes when the name has none, e.g. a VStream-QA
    ``video_id``). Raises ``FileNotFoundError`` naming what was tried."""
    tried: list[Path] = []
    given = Path(name)
    candidates = [given] if given.is_absolute() or videos_dir is None else []
    if videos_dir is not None:
        root = Path(videos_dir)
        candidates += [root / given, root / given.name]
    for c in list(candidates):
        if not c.suffix:
            candidates += [c.with_name(c.name + s) for s in VIDEO_SUFFIXES]
    for c in candidates:
        tried.append(c)
        if c.is_file():
            return c
    raise FileNotFoundError(f"video {name!r} not found (tried {', '.join(map(str, tried))})")
