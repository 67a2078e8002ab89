"""Fairness figures: one key's backlog vs another key's question, and /metrics during a probe storm.

``python -m bench.fairness [--model tiny:smolvlm] [--json OUT]`` from the repository root. Each
scenario runs twice in the same run, on a real server (uvicorn on 127.0.0.1, the real engine):

* ``backlog``: key A sends 3 long questions, then key B one short question on its own stream.
  ``fair``: the server as configured (one turn at the model, per-key FIFOs served round-robin);
  ``baseline``: ``question_slots=64``, i.e. every question goes straight to the model lock, as
  before the fair queue. Figures: B's latency and how many of A's answers completed before B's.
* ``probes``: 16 ``POST /v1/streams?probe=true`` to a TCP server that accepts and never speaks,
  then ``GET /metrics`` and ``GET /health``. ``fair``: probes on their own pool; ``baseline``:
  probes on the loop's shared default executor (``asyncio.to_thread``), as before. Figure: the
  seconds ``/metrics`` takes while the probes hang.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from streamvqa.server.app import create_app
from streamvqa.server.auth import hash_key
from streamvqa.server.main import BackgroundServer
from streamvqa.server.sample import write_sample_video
from streamvqa.server.settings import ServerSettings

KEY_A, KEY_B = "svqa_bench-a-0123456789abcdefghijklmnopqrstu", "svqa_bench-b-0123456789abcdefghijklmnopqrstu"


def _server(engine: Any, media: Path, **overrides: Any) -> BackgroundServer:
    keys = json.dumps([{"name": "a", "hash": hash_key(KEY_A)}, {"name": "b", "hash": hash_key(KEY_B)}])
    settings = ServerSettings(
        model="bench", host="127.0.0.1", port=0, log_level="warning", api_keys=keys, media_root=str(media),
        realtime_files=False, ingest_queue_size=64, allow_private_networks=True, **overrides,
    )
    return BackgroundServer(create_app(settings, engine=engine), settings).start()


def _long_question(server: BackgroundServer) -> str:
    """A question at both limits' edge: as many model tokens as allowed within the characters."""
    state = server.server.config.app.state.server
    words = "What exactly happens in the video, frame by frame, and in which order? "
    q = words
    while (state.answers.count_tokens(q + words) <= state.settings.max_question_tokens
           and len(q + words) <= state.settings.max_question_chars):
        q += words
    return q


def backlog(engine: Any, media: Path, video: Path, slots: int | None, a_tokens: int, b_tokens: int) -> dict:
    overrides = {"question_slots": slots} if slots else {}
    server = _server(engine, media, max_tokens=max(a_tokens, b_tokens), **overrides)
    try:
        sids = {}
        with httpx.Client(base_url=server.url, timeout=600) as http:
            for name, key in (("a", KEY_A), ("b", KEY_B)):
                h = {"Authorization": f"Bearer {key}"}
                sid = http.post("/v1/streams", json={"url": video.name, "fps": 2.0}, headers=h).json()["id"]
                for _ in range(600):
                    if http.get(f"/v1/streams/{sid}", headers=h).json()["state"] == "ended":
                        break
                    time.sleep(0.1)
                sids[name] = sid
        long_q = _long_question(server)
        done: list[tuple[str, float]] = []
        lock = threading.Lock()

        def ask(name: str, key: str, question: str, max_tokens: int) -> None:
            t0 = time.monotonic()
            with httpx.Client(base_url=server.url, timeout=600) as c:
                r = c.post(f"/v1/streams/{sids[name[0]]}/questions",
                           json={"question": question, "max_tokens": max_tokens},
                           headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text
            with lock:
                done.append((name, time.monotonic() - t0))

        threads = [threading.Thread(target=ask, args=(f"a{i}", KEY_A, long_q, a_tokens)) for i in range(3)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        time.sleep(0.2)  # A's backlog is in before B asks
        b = threading.Thread(target=ask, args=("b", KEY_B, "What is shown?", b_tokens))
        b.start()
        for t in [*threads, b]:
            t.join()
        order = [n for n, _ in done]
        return {"order": order, "b_latency_s": dict(done)["b"], "a_before_b": order.index("b"),
                "a_latency_s": sorted(s for n, s in done if n != "b")}
    finally:
        server.stop()


class _Hanging:
    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def probes(engine: Any, media: Path, shared_pool: bool, n: int = 16) -> dict:
    hanging = _Hanging()
    server = _server(engine, media, auth="off", open_timeout_s=30.0, read_timeout_s=30.0, probe_timeout_s=60.0)
    if shared_pool:  # the code path before the probe pool
        async def to_thread(fn: Any, *args: Any) -> Any:
            return await asyncio.to_thread(fn, *args)

        server.server.config.app.state.server.streams.sources.probe = to_thread
    try:
        url = f"rtsp://127.0.0.1:{hanging.port}/live"
        for _ in range(n):
            threading.Thread(target=lambda: httpx.post(f"{server.url}/v1/streams?probe=true", json={"url": url},
                                                       timeout=120), daemon=True).start()
        time.sleep(2.0)  # every probe is inside FFmpeg or waiting for a thread
        with httpx.Client(base_url=server.url, timeout=120) as http:
            t0 = time.monotonic()
            assert http.get("/metrics").status_code == 200
            metrics_s = time.monotonic() - t0
            t0 = time.monotonic()
            assert http.get("/health").status_code == 200
            health_s = time.monotonic() - t0
        return {"probes": n, "metrics_s": metrics_s, "health_s": health_s}
    finally:
        hanging.close()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fairness")
    p.add_argument("--model", default="tiny:smolvlm")
    p.add_argument("--a-tokens", type=int, default=48, help="tokens each of A's answers generates")
    p.add_argument("--json", default=None, help="write the figures here (default bench/results/fairness.json)")
    args = p.parse_args(argv)
    from streamvqa.engine import Engine, EngineConfig

    engine = Engine(EngineConfig(model=args.model, max_new_tokens=512))
    out: dict[str, Any] = {"model": args.model, "backlog": {}, "probes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-fair-") as tmp:
        video, _ = write_sample_video(Path(tmp), seconds=6.0)
        for mode, slots in (("baseline", 64), ("fair", None)):
            out["backlog"][mode] = backlog(engine, Path(tmp), video, slots, args.a_tokens, 8)
        for mode, shared in (("baseline", True), ("fair", False)):
            out["probes"][mode] = probes(engine, Path(tmp), shared)
    engine.close()
    print("| scenario | mode | figure |\n|---|---|---|")
    for mode in ("baseline", "fair"):
        b = out["backlog"][mode]
        print(f"| A: 3 long questions, then B: 1 short | {mode} | B answered after {b['a_before_b']} of A's "
              f"answers, in {b['b_latency_s']:.2f} s (A: {', '.join(f'{s:.2f}' for s in b['a_latency_s'])} s) |")
    for mode in ("baseline", "fair"):
        pr = out["probes"][mode]
        print(f"| {pr['probes']} hanging probes | {mode} | GET /metrics {pr['metrics_s']:.2f} s, "
              f"GET /health {pr['health_s']:.3f} s |")
    path = Path(args.json) if args.json else Path(__file__).resolve().parent / "results" / "fairness.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
