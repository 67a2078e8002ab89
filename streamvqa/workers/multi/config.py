"""Configuration shared by the processes of the multi-process topology, validated at the edge.

The supervisor writes it as JSON into the run directory and starts each worker with its path
(`streamvqa worker <role> --config FILE`); containers can write the same file themselves.

The run directory holds the unix sockets (no authentication: only this user may connect) and the
config (it may hold a Redis URL with a password): the directory is kept 0700 (an existing one is
tightened), the config written 0600 and atomically, and sockets whose listener is gone are
removed at start and at shutdown (`sweep_sockets`).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

ROLES = ("kvstore", "encoder", "answer")  # the kinds; several encoders/answers are encoder-1, answer-1, ...
ROLE_RE = re.compile(r"^(kvstore|encoder(-[1-9][0-9]?)?|answer(-[1-9][0-9]?)?)$")


class MultiConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = "default"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    encoder_device: str = "cpu"
    answer_device: str = "cpu"
    encoder_devices: list[str] | None = Field(
        None, min_length=1, max_length=16, description="one encoder worker per device (None: [encoder_device])"
    )
    answer_devices: list[str] | None = Field(
        None, min_length=1, max_length=16, description="one answer worker per device (None: [answer_device])"
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads per model worker")
    max_question_chars: int = Field(2000, ge=1)
    max_new_tokens: int = Field(512, ge=1)
    answer_engine: Literal["transformers", "vllm"] = Field(
        "transformers", description="who decodes in the answer workers: their model, or one vLLM process "
        "each (docs/vllm.md); encoders always answer with transformers")
    vllm: dict[str, Any] = Field(default_factory=dict, description="VLLMOptions fields (answering/vllm_process.py)")
    store: dict[str, Any] = Field(
        description="TieredStoreConfig fields without the fingerprint; the first tier must be host (shm)"
    )
    run_dir: str = Field(description="unix sockets and the config file live here")
    transport: Literal["ipc", "tcp"] = "ipc"
    tcp_host: str = "127.0.0.1"
    tcp_base_port: int = Field(7650, ge=1024, le=65000, description="kvstore, encoder, answer: +0, +1, +2")
    spawn: bool = Field(True, description="the supervisor starts the workers; False: they run on their own "
                                          "(containers) and are only watched")
    lease_ttl_s: float = Field(30.0, gt=0, description="how long an answer worker may hold mapped blocks")
    start_timeout_s: float = Field(300.0, gt=0, description="a worker that is not serving by then failed")
    restart_backoff_s: float = Field(0.5, gt=0, description="first wait before a restart; doubles, max 30 s")
    frame_timeout_s: float = Field(300.0, gt=0, description="longest a frame may wait for its unit's encode")
    put_timeout_s: float = Field(120.0, gt=0, description="longest an encoder retries a block write")
    answer_idle_timeout_s: float = Field(300.0, gt=0, description="longest gap between two answer events")
    ingest_poll_s: float = Field(0.2, gt=0, le=10, description="how often the server polls an encoder-side ingest")
    slow_tier_s: float = Field(0.5, gt=0, description="a tier whose ping takes longer counts as down (degraded)")
    janitor_interval_s: float = Field(10.0, gt=0, description="kvstore: reclaim staging segments of dead writers")

    @model_validator(mode="after")
    def _check(self) -> MultiConfig:
        tiers = self.store.get("tiers") or []
        if not tiers or tiers[0].get("kind", "host") != "host":
            raise ValueError("multi topology: the store's first tier must be a host (shared-memory) tier")
        return self

    def answer_threads(self) -> int:
        """RPC threads of an answer worker: one per question vLLM may decode at once (each waits
        on its tokens), plus a few for pings and forgets; the transformers engine answers one
        question at a time under its model lock."""
        if self.answer_engine != "vllm":
            return 8
        from streamvqa.answering.vllm_process import VLLMOptions

        return int(self.vllm.get("max_num_seqs", VLLMOptions.max_num_seqs)) + 4

    @property
    def shm_prefix(self) -> str:
        return str(self.store["tiers"][0].get("shm_prefix", "streamvqa"))

    def roles(self) -> list[str]:
        """Every worker: kvstore, encoder[, encoder-1 ...], answer[, answer-1 ...]."""
        enc = self.encoder_devices or [self.encoder_device]
        ans = self.answer_devices or [self.answer_device]
        return (["kvstore"] + ["encoder" + (f"-{i}" if i else "") for i in range(len(enc))]
                + ["answer" + (f"-{i}" if i else "") for i in range(len(ans))])

    def device_of(self, role: str) -> str:
        kind, _, n = role.partition("-")
        devices = (self.encoder_devices or [self.encoder_device]) if kind == "encoder" else \
            (self.answer_devices or [self.answer_device])
        return devices[int(n or 0)]

    def endpoint(self, role: str) -> str:
        roles = self.roles()
        if role not in roles:
            raise ValueError(f"unknown role {role!r}; this topology has {', '.join(roles)}")
        if self.transport == "ipc":
            return f"ipc://{Path(self.run_dir) / (role + '.sock')}"
        return f"tcp://{self.tcp_host}:{self.tcp_base_port + roles.index(role)}"

    def prepare_run_dir(self) -> Path:
        """The run directory, created 0700; an existing one of ours is tightened to 0700."""
        d = Path(self.run_dir)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = d.stat()
        if st.st_uid != os.getuid():
            log.warning("run directory %s belongs to uid %d, not to us: its mode is left as it is", d, st.st_uid)
        elif stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(d, 0o700)
        return d

    def write(self) -> Path:
        """Write the config into the run directory: mode 0600, atomically (temp file + rename)."""
        path = self.prepare_run_dir() / "config.json"
        tmp = path.with_name(f".config.json.tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a leftover temp file
            os.write(fd, self.model_dump_json(indent=1).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return path

    def sweep_sockets(self) -> tuple[list[str], list[str]]:
        """Remove this topology's unix sockets whose listener is gone (a killed worker or
        server leaves them); returns (removed, live). Nothing to do for tcp."""
        removed: list[str] = []
        live: list[str] = []
        if self.transport != "ipc":
            return removed, live
        for role in self.roles():
            path = self.endpoint(role).removeprefix("ipc://")
            try:
                if not stat.S_ISSOCK(os.lstat(path).st_mode):
                    continue
            except FileNotFoundError:
                continue
            if _listening(path):
                live.append(role)
                continue
            try:
                os.unlink(path)
                removed.append(path)
            except FileNotFoundError:
                pass
        return removed, live

    @classmethod
    def read(cls, path: str | Path) -> MultiConfig:
        return cls.model_validate_json(Path(path).read_text())


def _listening(path: str) -> bool:
    """Something accepts connections on this unix socket (ECONNREFUSED: its owner is gone)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
            return True
        except OSError as e:
            return e.errno not in (errno.ECONNREFUSED, errno.ENOENT)


def default_run_dir() -> str:
    # unix socket paths are limited to ~107 bytes: keep the directory short
    return tempfile.mkdtemp(prefix="svq-")
