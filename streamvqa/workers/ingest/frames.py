"""The unit ingest hands to the encoder: one sampled, decoded RGB frame."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One sampled video frame.

    Attributes:
        t: seconds since the start of the stream, from presentation timestamps (not wall clock).
            Monotonic within a stream, also across reconnects.
        image: ``H x W x 3`` ``uint8`` RGB array, already downscaled to the configured limits.
        index: 0-based position of this frame among the frames *sampled* from the stream.
        arrival: ``time.monotonic()`` when it was sampled (the encode scheduler's lag).
    """

    t: float
    image: np.ndarray
    index: int
    arrival: float = field(default_factory=time.monotonic, compare=False)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
