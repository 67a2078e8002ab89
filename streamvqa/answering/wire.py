"""Newline-delimited JSON over a Unix socket: the answer engine's link to the vLLM process.

Standard library only (both interpreters import it). Server -> vLLM:
``{"op": "generate", "id", "prompt": [ids], "kv": KVSpec | null, "max_tokens", "temperature",
"top_p", "seed", "stop": [ids]}``, ``{"op": "abort", "id"}``, ``{"op": "metrics", "id"}``.
vLLM -> server: ``{"id", "tokens": [new ids], "done", "finish"}``, ``{"id", "error"}``,
``{"id", "metrics": text}``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator


class Channel:
    """One connected socket: `send` is thread-safe, `messages` yields until the peer closes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._file = sock.makefile("rb")

    def send(self, msg: dict) -> None:
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        with self._send_lock:
            self.sock.sendall(data)

    def messages(self) -> Iterator[dict]:
        for line in self._file:
            if line.strip():
                yield json.loads(line)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
