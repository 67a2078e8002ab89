"""Probe: needle answers of the default model on long streams, offline, with empty frames kept
(the served layout) or dropped from the prompt ("skip") or reduced to their newline ("nl").

    .venv/bin/python tools/probe_long_streams.py skip 2 10   # mode, then stream minutes

Each question is answered by offline greedy generation over the whole sequence (as
`streamvqa eval frames` does); stream seed 7002, the first four needle questions.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamvqa.evals.common import normalise  # noqa: E402
from streamvqa.evals.frames import answer_offline, load_default_adapter  # noqa: E402
from streamvqa.models.base import Segment  # noqa: E402
from streamvqa.synth.streams import needle_questions, random_stream, render_stream_frame  # noqa: E402


def main(argv: list[str]) -> int:
    mode, minutes = argv[0], [float(x) for x in argv[1:]]
    adapter = load_default_adapter(threads=2)
    served = adapter.unit_piece

    def unit_piece(frames, t0):
        if mode == "keep":
            return served(frames, t0)
        batch = torch.from_numpy(np.stack(frames)).to(adapter.device)
        parse = adapter.vision.parse(batch)
        _, used = adapter.vision.slots(parse)
        vis = adapter.vision.words(parse)
        close = adapter.text_segment("\n")
        piece = []
        for i in range(len(frames)):
            if not bool(used[i].any()) and int(parse.digit[i].argmax()) == 0:  # nothing to see
                if mode == "nl":
                    piece.append(close)
                continue
            piece += [Segment(embeds=vis[i]), close]
        return piece

    adapter.unit_piece = unit_piece
    for m in minutes:
        stream = random_stream(7002, minutes=m)
        frames = [(render_stream_frame(stream, i), i / stream.fps) for i in range(stream.n_frames)]
        for q in needle_questions(stream)[:4]:
            t = time.time()
            pred = answer_offline(adapter, frames, q["question"], max_new_tokens=4)
            ok = normalise(pred) == normalise(q["answer"])
            print(mode, m, q["type"], q["answer"], repr(pred), ok, f"{time.time() - t:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
