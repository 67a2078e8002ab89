"""Single synthetic frames: coloured shapes at five positions and an optional seven-segment digit.

Rendering is numpy + PIL and fully determined by the `Scene` (the background noise is seeded by
`Scene.seed`), so the same seed always yields the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from streamvqa.models.grounded.vision import COLOURS, POSITIONS, SHAPES

RGB = {
    "red": (220, 30, 30),
    "green": (30, 175, 45),
    "blue": (40, 70, 235),
    "yellow": (245, 225, 30),
    "purple": (150, 40, 195),
    "orange": (250, 140, 20),
    "white": (248, 248, 248),
    "black": (12, 12, 12),
}
ANCHORS = {"left": (0.2, 0.5), "right": (0.8, 0.5), "top": (0.5, 0.2), "bottom": (0.5, 0.8), "centre": (0.5, 0.5)}
# seven-segment layout: a b c d e f g -> which segments each digit lights
SEGMENTS = {
    0: "abcdef", 1: "bc", 2: "abged", 3: "abgcd", 4: "fgbc",
    5: "afgcd", 6: "afgedc", 7: "abc", 8: "abcdefg", 9: "abcdfg",
}


@dataclass
class Obj:
    """One shape: its words, and where/how big it is drawn (fractions of the frame)."""

    shape: str
    colour: str
    position: str
    size: float = 0.12  # radius as a fraction of the frame side
    dx: float = 0.0
    dy: float = 0.0


@dataclass
class Scene:
    """A frame's content. `background` is an RGB base colour; `seed` drives the pixel noise."""

    objects: list[Obj] = field(default_factory=list)
    digit: int | None = None
    digit_colour: str = "white"
    background: tuple[int, int, int] = (110, 110, 110)
    gradient: tuple[float, float] = (0.0, 0.0)
    noise: float = 6.0
    seed: int = 0


def random_background(rng: np.random.Generator) -> tuple[int, int, int]:
    """A low-saturation mid-tone, far from every object colour."""
    base = int(rng.integers(75, 165))
    return tuple(int(np.clip(base + rng.integers(-10, 11), 0, 255)) for _ in range(3))  # type: ignore[return-value]


def random_scene(rng: np.random.Generator, n_objects: int | None = None, digit_p: float = 0.35) -> Scene:
    """One to three objects with distinct positions and distinct (shape, colour) pairs."""
    digit = int(rng.integers(0, 10)) if rng.random() < digit_p else None
    n = int(rng.integers(1, 4)) if n_objects is None else n_objects
    allowed = [p for p in POSITIONS if not (digit is not None and p == "centre")]
    positions = list(rng.choice(allowed, size=min(n, len(allowed)), replace=False))
    objects: list[Obj] = []
    used: set[tuple[str, str]] = set()
    for pos in positions:
        while True:
            shape, colour = str(rng.choice(SHAPES)), str(rng.choice(COLOURS))
            if (shape, colour) not in used:
                used.add((shape, colour))
                break
        objects.append(Obj(shape, colour, str(pos), size=float(rng.uniform(0.09, 0.14)),
                           dx=float(rng.uniform(-0.04, 0.04)), dy=float(rng.uniform(-0.04, 0.04))))
    return Scene(
        objects=objects,
        digit=digit,
        digit_colour=str(rng.choice(["white", "black"])),
        background=random_background(rng),
        gradient=(float(rng.uniform(-30, 30)), float(rng.uniform(-30, 30))),
        noise=float(rng.uniform(2.0, 10.0)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.42
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    if shape == "cross":
        w = r * 0.34
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
                (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
                (cx - r, cy - w), (cx - w, cy - w)]
    raise ValueError(f"unknown shape {shape!r}")


def draw_object(draw: ImageDraw.ImageDraw, obj: Obj, w: int, h: int) -> None:
    ax, ay = ANCHORS[obj.position]
    side = min(w, h)
    cx, cy, r = (ax + obj.dx) * w, (ay + obj.dy) * h, obj.size * side
    fill = RGB[obj.colour]
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(_shape_points(obj.shape, cx, cy, r), fill=fill)


def draw_digit(draw: ImageDraw.ImageDraw, digit: int, colour: str, w: int, h: int) -> None:
    """A seven-segment digit in the centre, about a third of the frame tall."""
    dh, dw = 0.34 * h, 0.2 * w
    x0, y0 = w / 2 - dw / 2, h / 2 - dh / 2
    t = max(2.0, 0.045 * min(w, h))
    half = dh / 2
    seg = {
        "a": (x0, y0, x0 + dw, y0 + t),
        "g": (x0, y0 + half - t / 2, x0 + dw, y0 + half + t / 2),
        "d": (x0, y0 + dh - t, x0 + dw, y0 + dh),
        "f": (x0, y0, x0 + t, y0 + half),
        "b": (x0 + dw - t, y0, x0 + dw, y0 + half),
        "e": (x0, y0 + half, x0 + t, y0 + dh),
        "c": (x0 + dw - t, y0 + half, x0 + dw, y0 + dh),
    }
    for s in SEGMENTS[digit]:
        draw.rectangle(seg[s], fill=RGB[colour])


def render_background(scene: Scene, width: int, height: int) -> np.ndarray:
    """Base colour + linear gradient + seeded Gaussian noise, uint8 [H, W, 3]."""
    gx = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :] * scene.gradient[0]
    gy = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None] * scene.gradient[1]
    img = np.asarray(scene.background, dtype=np.float32)[None, None, :] + (gx + gy)[:, :, None]
    if scene.noise > 0:
        rng = np.random.default_rng(scene.seed)
        img = img + rng.normal(0.0, scene.noise, size=(height, width, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_scene(scene: Scene, width: int = 128, height: int | None = None) -> np.ndarray:
    """The scene as uint8 RGB [H, W, 3]."""
    height = width if height is None else height
    im = Image.fromarray(render_background(scene, width, height))
    draw = ImageDraw.Draw(im)
    if scene.digit is not None:
        draw_digit(draw, scene.digit, scene.digit_colour, width, height)
    for obj in scene.objects:
        draw_object(draw, obj, width, height)
    return np.asarray(im)


def scene_labels(scene: Scene) -> dict[str, np.ndarray | int]:
    """Targets of the vision head: per-position colour/shape class (0 = nothing), digit, count."""
    colour = np.zeros(len(POSITIONS), dtype=np.int64)
    shape = np.zeros(len(POSITIONS), dtype=np.int64)
    for o in scene.objects:
        i = POSITIONS.index(o.position)
        colour[i] = 1 + COLOURS.index(o.colour)
        shape[i] = 1 + SHAPES.index(o.shape)
    digit = 0 if scene.digit is None else scene.digit + 1
    return {"colour": colour, "shape": shape, "digit": digit, "count": len(scene.objects)}
