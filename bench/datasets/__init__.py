"""Question-file loaders of the real streaming / long-video QA benchmarks.

``load(name, path)`` -> :class:`Loaded` (a list of ``BenchQuestion`` that also reports the
entries skipped, with reasons); ``DATASETS`` names every format. One module per
format; each module's docstring says where the format comes from and which fields are read.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from . import mlvu, ovobench, qaego4d, streamingbench, vstream
from .base import BenchQuestion, FormatError, Loaded, Skip, parse_clock, resolve_video, split_option

Loader = Callable[[str | Path], Loaded]

DATASETS: dict[str, Loader] = {
    "rvs-ego": partial(vstream.load, dataset="rvs-ego"),
    "rvs-movie": partial(vstream.load, dataset="rvs-movie"),
    "mlvu": mlvu.load,
    "qaego4d": qaego4d.load,
    "streamingbench": streamingbench.load,
    "ovobench": ovobench.load,
}


def load(name: str, path: str | Path) -> Loaded:
    """Parse ``path`` as benchmark ``name``'s question file: its questions, and the entries skipped
    (``.skipped``) or flagged (``.flagged``) with reasons. ``FormatError`` if the file does not
    fit at all (not JSON/CSV, wrong top level, or no entry fits)."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; one of {', '.join(DATASETS)}") from None
    return loader(path)


__all__ = ["DATASETS", "BenchQuestion", "FormatError", "Loaded", "Skip", "load", "parse_clock", "resolve_video",
           "split_option"]
