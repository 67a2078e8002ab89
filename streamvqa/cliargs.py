"""Argument parsing shared by every ``streamvqa`` command: one-line errors and the exit-code rule.

Exit codes, the same for every command (docs in README.md):

* 0: done;
* 1: a runtime failure (the video could not be decoded, the model failed to load, a server error);
* 2: a usage error (a bad flag or value, an unknown method, bad ``--options``, a missing file,
  an invalid setting); the message is one line and names the flag.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn

EXIT_RUNTIME = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A bad command line found after parsing; ``flag`` is named in the message (exit 2)."""

    def __init__(self, flag: str | None, message: str) -> None:
        super().__init__(f"argument {flag}: {message}" if flag else message)


class Parser(argparse.ArgumentParser):
    """``argparse`` that reports a bad command line in one line (no usage block) and exits 2.
    Subparsers made from it are of this class too (``add_subparsers`` uses ``type(self)``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text!r}")
    return value


def json_object(text: str) -> dict[str, Any]:
    """A JSON object (``--options``); argparse names the flag in the error."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"invalid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object like '{{\"topk\": 8}}', not {type(value).__name__}")
    return value


def check_device(device: str | None) -> None:
    """``UsageError`` naming ``--device`` unless ``device`` (a flag's value; None: not given) can be
    used here: a torch device string, and CUDA present when it names CUDA."""
    if device is None or device == "cpu":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError("--device", f"not a device: {device!r} (cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device", f"{device}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError("--device", f"{device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (pydantic and FFmpeg messages run to several)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError) and exc.errors():
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        return f"{where}: {msg}" if where else msg
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def fail(prog: str, message: str, code: int) -> int:
    """Print ``prog: message`` on one line to stderr; returns ``code``."""
    print(f"{prog}: {message}", file=sys.stderr)
    return code
