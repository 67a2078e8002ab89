"""The README's "A first server" recipe, run as written: a key, `serve` (a real process with the
default model), a file stream from `--media-root`, questions over curl and the WebSocket."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import free_port

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- first-server recipe: tests/server/test_readme_recipe.py runs this block as written -->"


def recipe() -> str:
    """The bash block that follows the marker in README.md."""
    text = (REPO / "README.md").read_text()
    assert MARKER in text, "the README lost its first-server recipe"
    m = re.search(r"```bash\n(.*?)\n```", text[text.index(MARKER):], re.S)
    assert m is not None
    return m.group(1)


def test_recipe_is_complete() -> None:
    block = recipe()
    for step in ("keys new", "--api-keys-file", "--media-root", "streamvqa sample", "/v1/streams",
                 "/questions", "/ws", "kill $SERVER"):
        assert step in block, step


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_readme_first_server_recipe_runs_as_written(tmp_path: Path) -> None:
    port = free_port()
    script = recipe().replace("8000", str(port))  # the one change: a free port
    (tmp_path / ".venv").symlink_to(REPO / ".venv")  # the recipe runs from a checkout's root
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(["bash", "-e", "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=840)
    finally:
        if proc.poll() is None:  # the recipe hung: stop it and its server (its own process group)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
    assert proc.returncode == 0, out[-4000:]

    expected = {q["question"]: q["answer"] for q in json.loads((tmp_path / "media" / "clip.json").read_text())["questions"]}
    answers = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"answer"' in line]
    rest, ws = answers[0], answers[-1]
    assert len(answers) == 2, out[-4000:]
    assert rest["answer"].strip() == expected["What digit was shown most recently?"], out[-4000:]
    assert ws["type"] == "answer" and ws["request_id"] == "q1", ws
    assert ws["answer"].strip() == expected["Where did the cross appear?"], out[-4000:]
    assert rest["evidence"] and ws["evidence"]
    assert "AUTHENTICATION IS OFF" not in out  # the recipe runs with auth on
