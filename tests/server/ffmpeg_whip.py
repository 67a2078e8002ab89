"""FFmpeg's own WHIP muxer (inside PyAV) publishing a synthetic H.264 scene with its default
options: ``python -m tests.server.ffmpeg_whip URL SECONDS [KEY]``. A separate process, because
PyAV holds the GIL while the muxer talks to the server (a server in the same process would stall)."""

from __future__ import annotations

import fractions
import sys
import time

import av
import numpy as np


def publish(url: str, seconds: float, key: str | None = None, fps: int = 10) -> None:
    options = {"authorization": key} if key else {}
    with av.open(url, "w", format="whip", options=options) as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = 160, 120, "yuv420p"
        # the muxer's options stay the defaults; the encoder makes what WebRTC receivers decode
        st.options = {"tune": "zerolatency", "profile": "baseline", "bf": "0", "g": str(fps)}
        for i in range(int(seconds * fps)):
            img = np.full((120, 160, 3), 90, np.uint8)
            img[30:90, (i * 4) % 120:(i * 4) % 120 + 40] = (220, 30, 30)  # a red block moving right
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, fps)
            for packet in st.encode(frame.reformat(format="yuv420p")):
                out.mux(packet)
            time.sleep(1 / fps)
        for packet in st.encode():
            out.mux(packet)


if __name__ == "__main__":
    publish(sys.argv[1], float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
