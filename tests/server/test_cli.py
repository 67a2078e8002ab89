"""``streamvqa serve`` (a real process, stopped by PID) and ``streamvqa demo``."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from streamvqa.server.main import demo
from streamvqa.server.settings import ServerSettings

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "streamvqa.server.cli"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def test_serve_runs_and_stops(clip: Path, serve_process) -> None:
    server = serve_process(["--model", "tiny:smolvlm"],
                           {"STREAMVQA_AUTH": "off", "STREAMVQA_MEDIA_ROOT": str(clip.parent)})
    try:
        assert server.wait_ready(120)
        assert httpx.get(f"{server.base}/health").json() == {"status": "ok"}
        r = httpx.post(f"{server.base}/v1/streams", json={"url": clip.as_uri(), "fps": 2})
        assert r.status_code == 201
    finally:
        out = server.stop()
    # uvicorn re-raises the captured SIGTERM after a graceful shutdown
    assert server.proc.returncode in (0, -signal.SIGTERM), out[-3000:]
    assert "Application shutdown complete" in out, out[-3000:]


@pytest.mark.slow
def test_serve_rejects_bad_input() -> None:
    # multi is implemented (tests/multiproc); without API keys it is refused like embedded
    r = subprocess.run([*CLI, "serve", "--topology", "multi"], cwd=REPO, env=ENV, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "API keys" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([*CLI, "serve", "--port", "99999"], cwd=REPO, env=ENV, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "port" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_demo_runs_end_to_end(caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    with caplog.at_level(logging.WARNING):
        rc = demo(ServerSettings(model="tiny:smolvlm"), question="What appeared?", out=out, min_frames=4)
    text = out.getvalue()
    assert rc == 0, text
    # the auth warning once, and never naming the bind-any port 0
    said = (text + "\n" + caplog.text).lower()
    assert said.count("authentication off") + said.count("authentication is off") == 1, said
    assert ":0 " not in said and not said.rstrip().endswith(":0"), said
    assert "Q: What appeared?" in text and "evidence: " in text and "evidence: none" not in text, text
    assert "vqa_time_to_first_token_seconds_count 1.0" in text and "vqa_frames_encoded_total" in text, text
