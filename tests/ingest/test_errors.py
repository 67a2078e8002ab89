"""Failure classification: every error code the API promises, from real sockets and real files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streamvqa.workers.ingest import (
    ERROR_CODES,
    IngestConfig,
    IngestError,
    IngestState,
    IngestWorker,
    parse_source_url,
    probe_source,
)

from .conftest import closed_port
from .helpers import CollectingSink
from .media import read_index


def run_worker(cfg: IngestConfig, timeout: float = 30) -> tuple[IngestWorker, CollectingSink]:
    sink = CollectingSink()
    worker = IngestWorker(cfg, sink).start()
    try:
        assert worker.wait(timeout), "worker did not reach a final state"
    finally:
        worker.stop()
    return worker, sink


def test_error_codes_are_stable() -> None:
    assert set(ERROR_CODES) == {
        "unsupported_scheme",
        "source_unreachable",
        "unsupported_codec",
        "no_video_stream",
        "decode_error",
        "resolution_too_large",
        "retries_exhausted",
    }
    e = IngestError("decode_error", "boom")
    assert e.to_dict() == {"code": "decode_error", "message": "boom"}
    with pytest.raises(ValueError):
        IngestError("nope", "x")  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x.mp4", "whip://x", "udp://127.0.0.1:1234", "rtmp://h/app"])
def test_unsupported_scheme(url: str) -> None:
    with pytest.raises(IngestError) as ei:
        parse_source_url(url)
    assert ei.value.code == "unsupported_scheme"
    with pytest.raises(ValidationError) as ve:
        IngestConfig(url=url)
    assert ve.value.errors()[0]["type"] == "unsupported_scheme"


def test_config_validation() -> None:
    with pytest.raises(ValidationError):
        IngestConfig(url="a.mp4", fps=0)
    with pytest.raises(ValidationError):
        IngestConfig(url="a.mp4", rtsp_transport="sctp")
    with pytest.raises(ValidationError):
        IngestConfig(url="a.mp4", backoff_initial_s=5, backoff_max_s=1)
    cfg = IngestConfig(url="rtsp://127.0.0.1:1/x", backoff_initial_s=0.5, backoff_max_s=3)
    assert [cfg.backoff_s(a) for a in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_unreachable_source(scheme: str) -> None:
    url = f"{scheme}://127.0.0.1:{closed_port()}/stream"
    cfg = IngestConfig(url=url, open_timeout_s=3, read_timeout_s=3, max_retries=3, backoff_initial_s=0.05)
    with pytest.raises(IngestError) as ei:
        probe_source(cfg)
    assert ei.value.code == "source_unreachable"
    worker, sink = run_worker(cfg)
    assert worker.state is IngestState.FAILED
    assert worker.last_error is not None and worker.last_error.code == "source_unreachable"
    assert worker.stats().last_error["code"] == "source_unreachable"
    assert len(sink) == 0


def test_missing_file_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(IngestError) as ei:
        probe_source(IngestConfig(url=str(tmp_path / "nope.mp4")))
    assert ei.value.code == "source_unreachable"


def test_http_404_is_unreachable(http_server: str) -> None:
    with pytest.raises(IngestError) as ei:
        probe_source(IngestConfig(url=f"{http_server}/missing.mp4", open_timeout_s=5, read_timeout_s=5))
    assert ei.value.code == "source_unreachable"


def test_random_bytes(random_bytes_file: Path) -> None:
    cfg = IngestConfig(url=str(random_bytes_file))
    with pytest.raises(IngestError) as ei:
        probe_source(cfg)
    assert ei.value.code in ("decode_error", "no_video_stream")
    worker, _ = run_worker(cfg)
    assert worker.state is IngestState.FAILED
    assert worker.last_error.code in ("decode_error", "no_video_stream")


def test_audio_only(audio_only_file: Path) -> None:
    cfg = IngestConfig(url=str(audio_only_file))
    with pytest.raises(IngestError) as ei:
        probe_source(cfg)
    assert ei.value.code == "no_video_stream"
    worker, _ = run_worker(cfg)
    assert worker.state is IngestState.FAILED and worker.last_error.code == "no_video_stream"


def test_truncated_mp4(truncated_mp4: Path) -> None:
    """Frames before the damage arrive in order, then a clean end or decode_error; no crash, no hang."""
    worker, sink = run_worker(IngestConfig(url=str(truncated_mp4), fps=1.0, queue_size=100))
    frames = sink.snapshot()
    assert worker.state in (IngestState.ENDED, IngestState.FAILED)
    if worker.state is IngestState.FAILED:
        assert worker.last_error.code == "decode_error"
    assert 1 <= len(frames) < 10
    assert [read_index(f.image) for f in frames] == [25 * k for k in range(len(frames))]


def test_resolution_too_large(h264_mp4: Path) -> None:
    cfg = IngestConfig(
        url=str(h264_mp4), max_width=64, max_height=64, max_decode_width=100, max_decode_height=100
    )
    with pytest.raises(IngestError) as ei:
        probe_source(cfg)
    assert ei.value.code == "resolution_too_large"
    worker, sink = run_worker(cfg)
    assert worker.last_error.code == "resolution_too_large" and len(sink) == 0


def test_unknown_codec(unknown_codec_avi: Path) -> None:
    cfg = IngestConfig(url=str(unknown_codec_avi))
    with pytest.raises(IngestError) as ei:
        probe_source(cfg)
    assert ei.value.code == "unsupported_codec"
    worker, _ = run_worker(cfg)
    assert worker.last_error.code == "unsupported_codec"


def test_sink_errors_are_counted_not_fatal(h264_mp4: Path) -> None:
    seen: list[int] = []

    def sink(frame) -> None:
        seen.append(frame.index)
        if frame.index % 2:
            raise RuntimeError("encoder hiccup")

    worker = IngestWorker(IngestConfig(url=str(h264_mp4), fps=1.0, queue_size=100), sink).start()
    try:
        assert worker.wait(30)
    finally:
        worker.stop()
    s = worker.stats()
    assert worker.state is IngestState.ENDED and seen == list(range(10))
    assert s.frames_delivered == 5 and s.frames_dropped == {"sink_error": 5}


def test_stop_after_failure_keeps_failed_state() -> None:
    """Final states are sticky: stop() after a failure keeps ``failed`` and its error."""
    from .helpers import wait_until

    url = f"rtsp://127.0.0.1:{closed_port()}/x"
    worker = IngestWorker(IngestConfig(url=url, read_timeout_s=2, open_timeout_s=2), CollectingSink())
    assert worker.state is IngestState.CONNECTING
    worker.start()
    assert wait_until(lambda: worker.state.is_final, timeout=20)
    assert worker.stop(timeout=5)
    assert worker.state is IngestState.FAILED
    assert worker.last_error.code == "source_unreachable"


def test_silent_server_times_out() -> None:
    """A TCP listener that accepts but never answers: open gives up after open_timeout_s."""
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    try:
        for scheme in ("rtsp", "http"):
            cfg = IngestConfig(url=f"{scheme}://127.0.0.1:{port}/x", open_timeout_s=1, read_timeout_s=1)
            with pytest.raises(IngestError) as ei:
                probe_source(cfg)
            assert ei.value.code == "source_unreachable", ei.value
    finally:
        listener.close()
