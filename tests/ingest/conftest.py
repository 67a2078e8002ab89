"""Fixtures for ingest tests: deterministic H.264 media, a real RTSP server, a real HTTP server.

Everything binds 127.0.0.1 only; every server started here is stopped by PID / shutdown in a
``finally``.
"""

from __future__ import annotations

import http.server
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port

from .media import write_audio_only, write_index_mp4

REPO = Path(__file__).resolve().parents[2]
RTSP_SERVER = REPO / "tools" / "rtsp_test_server.py"
SYSTEM_PYTHON = os.environ.get("STREAMVQA_GST_PYTHON", "/usr/bin/python3")


# ---------------------------------------------------------------------------------- media files


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ingest_media")


@pytest.fixture(scope="session")
def h264_mp4(media_dir: Path) -> Path:
    """10 s, 25 fps, 320x240 H.264 MP4 (moov first); frame i shows index i as 8 bit-bars."""
    return write_index_mp4(media_dir / "index_10s_25fps.mp4", seconds=10.0, fps=25)


@pytest.fixture(scope="session")
def audio_only_file(media_dir: Path) -> Path:
    return write_audio_only(media_dir / "audio_only.m4a")


@pytest.fixture(scope="session")
def random_bytes_file(media_dir: Path) -> Path:
    path = media_dir / "random.mp4"
    path.write_bytes(bytes((i * 7919 + 13) % 251 for i in range(200_000)))
    return path


@pytest.fixture(scope="session")
def truncated_mp4(media_dir: Path, h264_mp4: Path) -> Path:
    """The 10 s clip cut at 40 % of its bytes (moov is at the front, so frames before the cut decode)."""
    data = h264_mp4.read_bytes()
    path = media_dir / "truncated.mp4"
    path.write_bytes(data[: int(len(data) * 0.4)])
    return path


@pytest.fixture(scope="session")
def unknown_codec_avi(media_dir: Path) -> Path:
    """An AVI whose video FourCC no decoder knows (an MJPEG AVI with its tag rewritten)."""
    from fractions import Fraction

    import av
    import numpy as np

    tmp = media_dir / "mjpeg.avi"
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("mjpeg", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame = frame.reformat(format="yuvj420p")
            frame.pts, frame.time_base = i, Fraction(1, 5)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    path = media_dir / "unknown_codec.avi"
    path.write_bytes(tmp.read_bytes().replace(b"MJPG", b"XQZ1"))
    return path


# ----------------------------------------------------------------------------------------- ports


def closed_port() -> int:
    """A 127.0.0.1 TCP port nobody listens on (connection refused)."""
    return free_port()


# ------------------------------------------------------------------------------------ HTTP server


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single-range ``Range: bytes=a-b`` support (what FFmpeg's http client uses)."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def send_head(self):  # type: ignore[override]
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not rng or not rng.startswith("bytes=") or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        start_s, _, end_s = rng[len("bytes=") :].partition("-")
        start = int(start_s) if start_s else 0
        end = min(int(end_s), size - 1) if end_s else size - 1
        if start >= size:
            self.send_error(416)
            return None
        f = path.open("rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._remaining = end - start + 1
        return f

    def copyfile(self, source, outputfile) -> None:  # type: ignore[override]
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            return super().copyfile(source, outputfile)
        try:
            while remaining > 0:
                chunk = source.read(min(65536, remaining))
                if not chunk:
                    break
                outputfile.write(chunk)
                remaining -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass


class _DroppingHandler(_RangeHandler):
    """Like :class:`_RangeHandler`, but the first ``drops_left`` GETs send half the body and hang up."""

    drops_left = 0
    lock = threading.Lock()

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        with self.lock:
            drop = type(self).drops_left > 0
            if drop:
                type(self).drops_left -= 1
        if not drop:
            return super().do_GET()
        path = Path(self.translate_path(self.path))
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


def _serve(handler_cls: type, media_dir: Path) -> Iterator[str]:
    def handler(*a, **kw):
        return handler_cls(*a, directory=str(media_dir), **kw)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def http_server(media_dir: Path) -> Iterator[str]:
    """Serves ``media_dir`` over HTTP on 127.0.0.1 (random port, Range support); yields the base URL."""
    yield from _serve(_RangeHandler, media_dir)


@pytest.fixture
def flaky_http_server(media_dir: Path) -> Iterator[str]:
    """Like ``http_server``, but the first GET is cut off halfway through the body (a drop)."""

    class Handler(_DroppingHandler):
        drops_left = 1

    yield from _serve(Handler, media_dir)


# ------------------------------------------------------------------------------------ RTSP server


def _gst_available() -> str | None:
    """None if the GStreamer RTSP server can run, else the reason."""
    if not shutil.which(SYSTEM_PYTHON) and not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = (
        "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "import sys; sys.exit(0 if Gst.ElementFactory.find('x264enc') else 3)"
    )
    r = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30)
    if r.returncode != 0:
        return (
            "GStreamer RTSP server unavailable (apt-get install -y python3-gi gir1.2-gst-rtsp-server-1.0 "
            f"gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly): rc={r.returncode}"
        )
    return None


@pytest.fixture(scope="session")
def gst_rtsp() -> None:
    reason = _gst_available()
    if reason:
        pytest.skip(reason)


class RtspServer:
    """Controls ``tools/rtsp_test_server.py`` subprocesses on one fixed 127.0.0.1 port."""

    def __init__(self, port: int, extra_args: list[str] | None = None) -> None:
        self.port = port
        self.extra_args = extra_args or []
        self.url = f"rtsp://127.0.0.1:{port}/test"
        self.proc: subprocess.Popen[str] | None = None
        self._all: list[subprocess.Popen[str]] = []

    def start(self, ready_timeout: float = 20.0) -> str:
        """Start the server (again, on the same port) and wait for its READY line."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        cmd = [
            SYSTEM_PYTHON,
            str(RTSP_SERVER),
            "--port",
            str(self.port),
            "--max-lifetime",
            "300",
            *self.extra_args,
        ]
        deadline = time.monotonic() + ready_timeout
        while True:  # a just-killed server's port may need a moment
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self._all.append(proc)
            line = self._read_line(proc, deadline)
            if line.startswith("READY "):
                self.proc = proc
                return self.url
            self._kill(proc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"RTSP test server did not start: {line!r} {proc.stderr.read()[-2000:]!r}")
            time.sleep(0.3)

    @staticmethod
    def _read_line(proc: subprocess.Popen[str], deadline: float) -> str:
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return proc.stdout.readline()
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                return proc.stdout.readline()
        return ""

    def kill(self) -> None:
        """SIGKILL the running server (simulates a crash mid-stream)."""
        if self.proc is not None:
            self._kill(self.proc, signal.SIGKILL)

    @staticmethod
    def _kill(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        for proc in self._all:
            self._kill(proc)


@pytest.fixture
def rtsp_server_ctl(gst_rtsp: None) -> Iterator[RtspServer]:
    """An RTSP server controller (not started) on a free port; every process it started is killed after."""
    ctl = RtspServer(free_port(), ["--fps", "15", "--width", "320", "--height", "240", "--gop", "15"])
    try:
        yield ctl
    finally:
        ctl.close()


@pytest.fixture
def rtsp_url(rtsp_server_ctl: RtspServer) -> str:
    """A running RTSP server (videotestsrc, H.264 320x240@15) on 127.0.0.1; yields its URL."""
    return rtsp_server_ctl.start()
