"""Every sampled frame of a finite source, in order, without the live path's drop policy.

For offline work (ask-file, evals, benchmarks) where the consumer may be slower than decoding
and no frame may be lost. Same opening, sampling and conversion as the live worker.
"""

from __future__ import annotations

from collections.abc import Iterator

from .config import IngestConfig
from .frames import Frame
from .sampler import FrameSampler, RgbConverter, Timeline
from .source import open_source, read_frames


def read_video(config: IngestConfig) -> Iterator[Frame]:
    """Yield sampled RGB frames of `config.url`; raises IngestError if it cannot be opened."""
    opened = open_source(config)
    try:
        timeline, sampler = Timeline(), FrameSampler(config.fps)
        converter = RgbConverter(config.max_width, config.max_height, config.max_decode_width, config.max_decode_height)
        index = 0
        for frame in read_frames(opened):
            t = timeline.map(None if frame.time is None else float(frame.time))
            if sampler.accept(t):
                yield Frame(t=t, image=converter.convert(frame), index=index)
                index += 1
    finally:
        opened.close()
