"""``serve(settings)`` runs the API under uvicorn; ``demo(settings)`` runs it end to end once."""

from __future__ import annotations

import json
import logging
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import httpx
import uvicorn

from .app import create_app
from .sample import write_sample_video
from .settings import ServerSettings

log = logging.getLogger(__name__)

DEMO_METRICS = (
    "vqa_time_to_first_token_seconds_sum",
    "vqa_time_to_first_token_seconds_count",
    "vqa_generation_tokens_total",
    "vqa_questions_total",
    "vqa_frames_decoded_total",
    "vqa_frames_encoded_total",
    "vqa_frames_dropped_total",
    "vqa_streams_active",
    "vqa_kv_usage_bytes",
    "vqa_device_memory_allocated_bytes",
)


def uvicorn_config(app: Any, settings: ServerSettings) -> uvicorn.Config:
    """uvicorn settings matching ours: protocol-level WebSocket cap above the app-level one."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws_max_size=max(4 * settings.max_ws_message_bytes, 1 << 20),
        timeout_graceful_shutdown=10,
    )


def check_serve_security(settings: ServerSettings) -> None:
    """``ValueError`` (one line) if ``serve`` must not start: auth on with no API keys, or
    keys that cannot be read. Auth off only logs a loud warning."""
    from .auth import load_keys

    keys = load_keys(settings)
    if settings.auth == "on" and not keys:
        raise ValueError(
            "no API keys configured: set STREAMVQA_API_KEYS_FILE (see `streamvqa keys new`) "
            "or run with --insecure / STREAMVQA_AUTH=off on a trusted network"
        )


def configure_logging(level: str) -> None:
    """The app's loggers (``streamvqa.*``) at the server's log level, like uvicorn's own: the CLI
    sets the root to warnings, which hid every INFO line (streams added and reaped, WHIP
    connection states). A handler is added only where none would print them."""
    app_log = logging.getLogger("streamvqa")
    numeric = logging.getLevelName(level.upper())
    app_log.setLevel(numeric if isinstance(numeric, int) else logging.DEBUG)  # uvicorn's "trace": all
    if not logging.getLogger().handlers and not app_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        app_log.addHandler(handler)


def serve(settings: ServerSettings) -> int:
    """Run the server in the foreground until SIGINT/SIGTERM. Returns the exit code
    (2 with a one-line reason when :func:`check_serve_security` refuses)."""
    try:
        check_serve_security(settings)
    except ValueError as e:
        print(f"streamvqa serve: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if settings.auth == "off":
        log.warning("=" * 72)
        log.warning("AUTHENTICATION IS OFF (--insecure / STREAMVQA_AUTH=off): anyone who can reach %s:%s "
                    "controls this server; do not expose it", settings.host, settings.port)
        log.warning("=" * 72)
    app = create_app(settings)
    uvicorn.Server(uvicorn_config(app, settings)).run()
    return 0


class BackgroundServer:
    """uvicorn in a daemon thread on an already-bound 127.0.0.1 socket (port 0 = any free port)."""

    def __init__(self, app: Any, settings: ServerSettings) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((settings.host, settings.port))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{settings.host}:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(app, settings))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.05)
        if not self.server.started:
            raise RuntimeError("the server did not start")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()


def _poll(pred: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    return pred()


def _metric_lines(text: str, names: tuple[str, ...]) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#") and ln.split("{")[0].split(" ")[0] in names]


def demo(
    settings: ServerSettings,
    question: str | None = None,
    out: TextIO = sys.stdout,
    min_frames: int = 10,
    load_timeout_s: float = 600.0,
) -> int:
    """Start the server in-process, feed a sample video, ask over the WebSocket, print, stop.

    Prints the streamed answer tokens, the evidence (stream time ranges) and a few metrics.
    Returns 0 on success, 1 with a one-line reason otherwise.
    """
    from websockets.sync.client import connect

    tmpdir = tempfile.TemporaryDirectory(prefix="streamvqa-demo-")
    tmp = tmpdir.name
    # the demo is local and throw-away: no API keys, files only from its own temporary directory
    settings = settings.model_copy(update={"host": "127.0.0.1", "port": 0, "log_level": "warning",
                                           "auth": "off", "media_root": tmp})
    print("WARNING: AUTHENTICATION IS OFF for the demo (it listens on 127.0.0.1 only)", file=out)
    server = BackgroundServer(create_app(settings), settings)
    try:
        with tmpdir:
            video, sample_question = write_sample_video(Path(tmp), seconds=12.0)
            question = question or sample_question
            server.start()
            print(f"server: {server.url} (model {settings.model}, {settings.device})", file=out)
            with httpx.Client(base_url=server.url, timeout=60.0) as http:
                print("loading the model ...", file=out, flush=True)
                ready = _poll(lambda: http.get("/ready").status_code == 200, load_timeout_s, 0.5)
                if not ready:
                    print(f"demo: the model did not load: {http.get('/ready').json()}", file=out)
                    return 1
                r = http.post("/v1/streams", json={"url": video.as_uri(), "fps": 2.0, "name": "demo"})
                if r.status_code != 201:
                    print(f"demo: POST /v1/streams failed: {r.status_code} {r.text}", file=out)
                    return 1
                sid = r.json()["id"]
                print(f"stream {sid}: {video.name}", file=out, flush=True)

                def encoded() -> dict | None:
                    info = http.get(f"/v1/streams/{sid}").json()
                    final = info["state"] in ("ended", "failed", "stopped")
                    return info if info["frames_encoded"] >= min_frames or final else None

                info = _poll(encoded, 300.0) or http.get(f"/v1/streams/{sid}").json()
                print(f"state {info['state']}: {info['frames_decoded']} frames decoded, "
                      f"{info['frames_encoded']} encoded, up to t={info['last_frame_t']} s", file=out)
                if info["frames_encoded"] == 0:
                    print(f"demo: no frame was encoded: {info.get('last_error')}", file=out)
                    return 1
                ws_url = server.url.replace("http://", "ws://") + f"/v1/streams/{sid}/ws"
                print(f"Q: {question}\nA: ", end="", file=out, flush=True)
                answer = None
                with connect(ws_url, open_timeout=30, close_timeout=5) as ws:
                    ws.send(json.dumps({"type": "question", "request_id": "demo-1", "question": question,
                                        "max_tokens": 32}))
                    for _ in range(10_000):
                        msg = json.loads(ws.recv(timeout=300))
                        if msg["type"] == "token":
                            text = msg["text"] if msg["index"] else msg["text"].lstrip()
                            print(text, end="", file=out, flush=True)
                        elif msg["type"] == "answer":
                            answer = msg
                            break
                        else:
                            print(f"\ndemo: error: {msg['error']}", file=out)
                            return 1
                print("", file=out)
                if answer is None:
                    print("demo: no answer", file=out)
                    return 1
                spans = ", ".join(f"{e['t_start']:.1f}-{e['t_end']:.1f}s" for e in answer["evidence"])
                t = answer["timings"]
                print(f"evidence: {spans or 'none'}", file=out)
                print(f"tokens {answer['tokens']} ({answer['finish_reason']}), first token "
                      f"{t['first_token_s'] * 1000:.0f} ms, total {t['total_s'] * 1000:.0f} ms", file=out)
                print("metrics:", file=out)
                for line in _metric_lines(http.get("/metrics").text, DEMO_METRICS):
                    print(f"  {line}", file=out)
                http.delete(f"/v1/streams/{sid}")
        return 0
    except Exception as e:
        print(f"demo: {type(e).__name__}: {e}", file=out)
        return 1
    finally:
        server.stop()
