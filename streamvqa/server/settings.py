"""Server settings: one pydantic model, filled from ``STREAMVQA_*`` environment variables or flags."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ServerSettings(BaseModel):
    """Everything ``streamvqa serve`` can be told. Env var for field ``x`` is ``STREAMVQA_X``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    model: str = Field("default", description='"default", "tiny:<family>" or a local HF directory')
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    topology: Literal["embedded", "multi"] = Field(
        "embedded", description='"embedded" (one process); "multi" is reserved (not implemented yet)'
    )
    max_streams: int = Field(16, ge=1)
    max_question_chars: int = Field(2000, ge=1)
    max_tokens: int = Field(512, ge=1, description="upper bound on max_tokens per question")
    default_max_tokens: int = Field(64, ge=1)
    max_body_bytes: int = Field(1 << 20, ge=1024, description="HTTP request body limit")
    max_ws_message_bytes: int = Field(64 << 10, ge=256, description="WebSocket message limit")
    ws_send_queue: int = Field(256, ge=4, description="messages buffered per WebSocket connection")
    ws_max_concurrent_questions: int = Field(8, ge=1)
    ws_send_timeout_s: float = Field(30.0, gt=0, description="a reader this slow is disconnected")
    default_method: str | None = Field(None, description="None: the engine's first method")
    default_fps: float = Field(1.0, gt=0, le=120)
    open_timeout_s: float = Field(10.0, gt=0, description="ingest connect + probe deadline")
    read_timeout_s: float = Field(10.0, gt=0)
    max_retries: int = Field(5, ge=0)
    realtime_files: bool = Field(
        True, description="play file/HTTP sources at their own pace, like a live stream (else as fast as decoded)"
    )
    ingest_queue_size: int = Field(8, ge=1, description="sampled frames buffered per stream before dropping")
    at_wait_timeout_s: float = Field(60.0, gt=0, description="longest a question waits for ``at``")
    whip_connect_timeout_s: float = Field(30.0, gt=0)
    threads: int | None = Field(None, ge=1, description="torch CPU threads")
    log_level: str = "info"
    # -- security (docs/security.md) ---------------------------------------------------------
    auth: Literal["on", "off"] = Field(
        "on", description='"on": every endpoint but /health needs an API key; "off": no keys (demo, tests)'
    )
    api_keys_file: str | None = Field(
        None, description="file of API keys: `name:hash` lines or JSON (see `streamvqa keys hash`)"
    )
    api_keys: str | None = Field(None, description="API keys inline: `name:hash` entries, comma-separated, or JSON")
    metrics_key_hash: str | None = Field(None, description="hash of a key that alone may read /metrics")
    metrics_public: bool = Field(False, description="/metrics without a key (only behind a trusted network)")
    key_max_streams: int | None = Field(None, ge=1, description="streams per API key (None: max_streams)")
    key_questions_per_minute: int | None = Field(120, ge=1, description="questions per minute per API key")
    key_max_memory_bytes: int | None = Field(
        None, ge=1, description="KV bytes a key's streams may hold before its new streams are refused"
    )
    media_root: str | None = Field(None, description="file:// sources only inside this directory (None: none)")
    allow_private_networks: bool = Field(
        False, description="let rtsp/http sources reach private, loopback, link-local addresses (SSRF)"
    )
    allowed_networks: str = Field("", description="CIDRs (comma-separated) allowed even when not public")
    max_redirects: int = Field(3, ge=0, le=10, description="HTTP redirects followed (each re-checked)")
    max_questions_per_stream: int = Field(8, ge=1, description="concurrent questions per stream (REST + WS)")
    ws_messages_per_minute: int = Field(600, ge=1, description="client messages per WebSocket per minute")
    max_decode_width: int = Field(3840, ge=16, le=65536, description="wider sources fail resolution_too_large")
    max_decode_height: int = Field(2160, ge=16, le=65536, description="taller sources fail resolution_too_large")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> ServerSettings:
        """Settings from ``STREAMVQA_<FIELD>`` variables, then ``overrides`` (None values ignored).

        Raises ``ValueError`` with a one-line reason on a bad value.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(f"STREAMVQA_{name.upper()}")
            if raw is not None and raw != "":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"invalid setting {loc}: {err['msg']}") from None
