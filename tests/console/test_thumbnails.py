"""The thumbnail store: JPEGs within the byte budget, thinning that keeps coverage, cited last."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from streamvqa.server.thumbnails import ThumbnailStore, encode_jpeg


def test_encode_jpeg_downscales_to_max_side() -> None:
    img = np.zeros((720, 1280, 3), np.uint8)
    img[:, 640:] = (200, 30, 30)
    pic = Image.open(io.BytesIO(encode_jpeg(img, 160, 70)))
    assert pic.format == "JPEG" and pic.size == (160, 90)
    r, g, b = pic.getpixel((150, 45))
    assert r > 150 and g < 80 and b < 80  # the right half stays red


def test_budget_is_never_exceeded_and_latest_kept() -> None:
    store = ThumbnailStore(budget_bytes=10 * 100)
    for i in range(200):
        store.add_jpeg("a", float(i), bytes(100))
        assert store.nbytes <= store.budget_bytes
    times = [f["t"] for f in store.index("a")]
    assert len(times) == 10 and times[0] == 0.0 and times[-1] == 199.0  # both ends kept
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) <= 4 * min(gaps)  # thinned over the whole span, not FIFO (which keeps 190..199)
    assert store.latest("a").t == 199.0
    assert store.nearest("a", 100.0).t == min(times, key=lambda t: (abs(t - 100.0), t))


def test_budget_shared_across_streams_biggest_gives_first() -> None:
    store = ThumbnailStore(budget_bytes=1000)
    for i in range(8):
        store.add_jpeg("big", float(i), bytes(100))
    for i in range(4):
        store.add_jpeg("small", float(i), bytes(100))
    assert store.nbytes <= 1000
    assert len(store.index("small")) == 4 and len(store.index("big")) == 6
    store.drop("big")
    assert store.nbytes == 400 and store.latest("big") is None


def test_cited_frames_outlive_uncited() -> None:
    store = ThumbnailStore(budget_bytes=5 * 100)
    for i in range(5):
        store.add_jpeg("a", float(i), bytes(100))
    store.cite("a", [1.0, 2.2])  # nearest kept: 1.0 and 2.0
    for i in range(5, 8):
        store.add_jpeg("a", float(i), bytes(100))
    kept = {f["t"]: f["cited"] for f in store.index("a")}
    assert kept[1.0] and kept[2.0] and 0.0 in kept and 7.0 in kept and len(kept) == 5


def test_zero_budget_keeps_nothing() -> None:
    store = ThumbnailStore(budget_bytes=0)
    store.add("a", 0.0, np.zeros((8, 8, 3), np.uint8))
    assert store.latest("a") is None and store.nbytes == 0


def test_at_most_one_picture_per_interval() -> None:
    store = ThumbnailStore(budget_bytes=1 << 20, min_interval_s=0.2)
    img = np.zeros((64, 64, 3), np.uint8)
    for i in range(31):  # one second at 30 fps
        store.add("a", i / 30, img)
    times = [f["t"] for f in store.index("a")]
    assert times == [i / 30 for i in range(0, 31, 6)]  # every sixth frame: 0.2 s apart
