"""The vLLM answer process, seen from the server: started from `.venv-vllm`, supervised, talked to.

`VLLMProcess` spawns ``python -m streamvqa.answering.vllm_server`` under vLLM's interpreter (it
cannot share our virtualenv: vLLM pins its own transformers and FastAPI), waits for its socket,
and restarts it when it dies; while it is down `request` raises `Unavailable` (the server's
``503 worker_unavailable``). Each request gets a queue its tokens arrive on.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streamvqa.answering.wire import Channel

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"


class Unavailable(RuntimeError):
    """The vLLM process is starting or restarting."""


class RequestFailed(RuntimeError):
    """vLLM refused a request (its message, for the server log)."""


@dataclass(frozen=True)
class VLLMOptions:
    python: str = str(DEFAULT_PYTHON)
    max_model_len: int = 8192
    max_num_seqs: int = 32
    kv_cache_gib: int = 2  # VLLM_CPU_KVCACHE_SPACE (GiB, an integer)
    start_timeout_s: float = 300.0
    threads: int | None = None


def vllm_python(python: str | None = None) -> Path | None:
    """The interpreter of `.venv-vllm` (or the one named), if it exists."""
    p = Path(python or DEFAULT_PYTHON)
    return p if p.exists() else None


_LOST = object()


def reap(parent: str) -> None:
    """Remove the run directories (socket, KV files) of servers that are gone (killed)."""
    for d in Path(parent).glob("streamvqa-vllm-*-*"):
        try:
            pid = int(d.name.split("-")[2])
            os.kill(pid, 0)
        except (ValueError, IndexError):
            continue
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            continue


class VLLMProcess:
    def __init__(self, model_dir: Path, dtype: str, options: VLLMOptions) -> None:
        self.model_dir = model_dir
        self.dtype = dtype
        self.options = options
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
        reap(shm)
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"streamvqa-vllm-{os.getpid()}-", dir=shm))
        self.socket_path = str(self.run_dir / "engine.sock")
        self.kv_dir = self.run_dir
        self.proc: subprocess.Popen | None = None
        self.channel: Channel | None = None
        self.restarts = 0
        self._queues: dict[str, queue.Queue] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._closed = False
        self._ready = threading.Event()
        self._start()
        threading.Thread(target=self._supervise, name="vllm-supervisor", daemon=True).start()

    # -- lifecycle ---------------------------------------------------------------------------
    def _start(self) -> None:
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
        env["VLLM_CPU_KVCACHE_SPACE"] = str(self.options.kv_cache_gib)
        env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        if self.options.threads:
            env.setdefault("OMP_NUM_THREADS", str(self.options.threads))
        cmd = [self.options.python, "-m", "streamvqa.answering.vllm_server", "--model", str(self.model_dir),
               "--socket", self.socket_path, "--dtype", self.dtype,
               "--max-model-len", str(self.options.max_model_len), "--max-num-seqs", str(self.options.max_num_seqs), "--parent-pid", str(os.getpid())]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, start_new_session=True)

    def _connect(self) -> bool:
        """Wait for the process's socket (it appears once the model is loaded) and connect."""
        deadline = time.monotonic() + self.options.start_timeout_s
        while time.monotonic() < deadline and not self._closed:
            if self.proc is None or self.proc.poll() is not None:
                return False
            if os.path.exists(self.socket_path):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(self.socket_path)
                except OSError:
                    sock.close()
                else:
                    self.channel = Channel(sock)
                    return True
            time.sleep(0.2)
        return False

    def _supervise(self) -> None:
        while not self._closed:
            if not self._connect():
                if self._closed:
                    return
                log.error("vLLM answer process did not come up (exit %s); restarting", self.proc and self.proc.poll())
                self._kill()
                time.sleep(1.0)
                self.restarts += 1
                self._start()
                continue
            self._ready.set()
            log.info("vLLM answer process ready (pid %d)", self.proc.pid)
            try:
                for msg in self.channel.messages():
                    q = self._queues.get(str(msg.get("id")))
                    if q is not None:
                        q.put(msg)
            except (OSError, ValueError):
                pass
            self._ready.clear()
            with self._lock:
                lost, self._queues = list(self._queues.values()), {}
            for q in lost:
                q.put(_LOST)
            if self._closed:
                return
            log.error("vLLM answer process exited (%s); restarting", self.proc.poll())
            self._kill()
            self.restarts += 1
            self._start()

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def close(self) -> None:
        self._closed = True
        if self.channel is not None:
            self.channel.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- requests ----------------------------------------------------------------------------
    def _open(self, msg: dict) -> tuple[str, queue.Queue]:
        if not self._ready.is_set() or self.channel is None:
            raise Unavailable("the vLLM answer process is starting")
        rid = f"q{next(self._ids)}"
        q: queue.Queue = queue.Queue()
        with self._lock:
            self._queues[rid] = q
        try:
            self.channel.send({**msg, "id": rid})
        except OSError:
            with self._lock:
                self._queues.pop(rid, None)
            raise Unavailable("the vLLM answer process is restarting") from None
        return rid, q

    def _close_request(self, rid: str) -> None:
        with self._lock:
            self._queues.pop(rid, None)

    def generate(self, msg: dict) -> Iterator[int]:
        """Token ids of one generation as vLLM produces them; closing the iterator aborts it."""
        rid, q = self._open({**msg, "op": "generate"})
        done = False
        try:
            while True:
                m = q.get()
                if m is _LOST:
                    raise Unavailable("the vLLM answer process exited during the answer")
                if "error" in m:
                    done = True
                    raise RequestFailed(m["error"])
                yield from m["tokens"]
                if m.get("done"):
                    done = True
                    return
        finally:
            self._close_request(rid)
            if not done and self.channel is not None and self._ready.is_set():
                try:
                    self.channel.send({"op": "abort", "id": rid})
                except OSError:
                    pass

    def metrics(self, timeout: float = 5.0) -> str:
        """vLLM's Prometheus text (vllm:* and the connector's); empty while it is down."""
        try:
            rid, q = self._open({"op": "metrics"})
        except Unavailable:
            return ""
        try:
            m = q.get(timeout=timeout)
            return "" if m is _LOST else m.get("metrics", "")
        except queue.Empty:
            return ""
        finally:
            self._close_request(rid)


def python_missing_message(python: str) -> str:
    return (f"the vLLM answer engine needs its own virtualenv ({Path(python).name} not found): "
            f"run `bash tools/setup.sh --vllm`")

