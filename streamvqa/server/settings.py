"""Server settings: pydantic-settings models, filled from ``STREAMVQA_*`` environment variables
(`ServerSettings.from_env`) or flags.

The variable for field ``x`` is ``STREAMVQA_X``; for field ``x`` of the nested `StoreSettings` it
is ``STREAMVQA_STORE_X`` (the names operators have always used). A new setting is one field
declaration here (``name: type = Field(default, description=...)``); a new store setting goes into
`StoreSettings` (its field ``x`` is read from ``STREAMVQA_STORE_X``). Empty variables count as
unset. Constructing a model directly (``ServerSettings(port=1)``) reads no environment: only
`from_env` does, so tests and embedders are not changed by the shell they run in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

ENV_PREFIX = "STREAMVQA_"


class _Settings(BaseSettings):
    """Init values only: the environment is read by `ServerSettings.from_env`, explicitly."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return (init_settings,)


class StoreSettings(_Settings):
    """The KV store's tiers (docs/store.md "Server settings", streamvqa/store/config.py):
    ``STREAMVQA_STORE_<FIELD>``. `tiered_config` turns them into `TieredStoreConfig` fields."""

    # extra="ignore": an unknown STREAMVQA_STORE_* variable is ignored, as any other unknown one
    model_config = SettingsConfigDict(extra="ignore")

    host_bytes: int | None = Field(
        None, ge=1 << 20,
        description="host-RAM (shared memory) tier budget; None: embedded min(2 GiB, RAM/4, /dev/shm/2), multi 2 GiB",
    )
    disk_path: str | None = Field(
        None, description="disk tier directory (None: multi none; embedded spills to $STREAMVQA_CACHE/kv-spill/<pid>)")
    disk_bytes: int = Field(16 << 30, ge=1 << 20, description="disk tier budget")
    redis_url: str | None = Field(None, description="Redis cold tier, redis://host:port/db (None: none)")
    redis_bytes: int = Field(64 << 30, ge=1 << 20, description="Redis tier budget")
    redis_ttl_s: int | None = Field(None, ge=1, description="expiry of blocks in Redis (None: none)")
    redis_timeout_s: float = Field(2.0, gt=0, description="Redis socket timeout; slower is 'down'")
    durable: bool = Field(False, description="acknowledge a block only once it is in disk/Redis")
    write_behind_bytes: int = Field(256 << 20, ge=1 << 20, description="writes queued for a cold tier")
    shm_prefix: str = Field("streamvqa", pattern=r"^[A-Za-z0-9_]{1,24}$",
                            description="name prefix of shared-memory segments (one per deployment)")
    spill_path: str | None = Field(None, description="durable: blocks go here while the durable tier is "
                                   "down (None: multi uses <run_dir>/spill, embedded has none)")
    spill_bytes: int = Field(1 << 30, ge=1 << 20, description="bound of the spill area")

    def tiered_config(self, topology: str) -> dict[str, Any]:
        """`TieredStoreConfig` fields (no fingerprint); with nothing configured, embedded gets a
        bounded host tier and a scratch disk spill."""
        if self.host_bytes is None and not self.disk_path and not self.redis_url and not self.durable:
            if topology == "embedded":  # bounded by default: host RAM, then a scratch spill to disk
                from streamvqa.engine.spill import default_host_bytes, spill_dir

                return {"tiers": [{"kind": "host", "budget_bytes": default_host_bytes(), "shm_prefix": self.shm_prefix},
                                  {"kind": "disk", "path": str(spill_dir()), "budget_bytes": self.disk_bytes}],
                        "recover": False, "persist_on_close": False,
                        "write_behind": {"max_bytes": self.write_behind_bytes}}
        tiers: list[dict[str, Any]] = [
            {"kind": "host", "budget_bytes": self.host_bytes or (2 << 30), "shm_prefix": self.shm_prefix}
        ]
        if self.disk_path:
            tiers.append({"kind": "disk", "path": self.disk_path, "budget_bytes": self.disk_bytes})
        if self.redis_url:
            tiers.append({"kind": "redis", "url": self.redis_url, "budget_bytes": self.redis_bytes,
                          "ttl_s": self.redis_ttl_s, "socket_timeout_s": self.redis_timeout_s})
        return {
            "tiers": tiers,
            "durable": self.durable,
            "write_behind": {"max_bytes": self.write_behind_bytes},
            **({"spill": {"path": self.spill_path, "budget_bytes": self.spill_bytes}}
               if self.durable and self.spill_path else {}),
        }


class ServerSettings(_Settings):
    """Everything ``streamvqa serve`` can be told. Env var for field ``x`` is ``STREAMVQA_X``."""

    model_config = SettingsConfigDict(extra="forbid", protected_namespaces=(), env_prefix=ENV_PREFIX,
                                      env_ignore_empty=True, env_nested_delimiter="_", env_nested_max_split=1)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    model: str = Field("default", description='"default", "tiny:<family>" or a local HF directory')
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    topology: Literal["embedded", "multi"] = Field(
        "embedded",
        description='"embedded": one process; "multi": kvstore, encoder and answer worker processes (docs/processes.md)',
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
    whip_ice_addresses: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="addresses the WHIP answer offers as ICE candidates (comma-separated "
        "IPs; `host`: this machine's own, loopback excluded); empty: `host`",
    )
    thumbnail_budget_bytes: int = Field(
        32 << 20, ge=0, description="JPEG bytes of frame thumbnails kept for all streams (console, evidence); 0: none"
    )
    thumbnail_max_side: int = Field(192, ge=16, le=1024, description="longer side of a frame thumbnail, pixels")

    @field_validator("whip_ice_addresses", mode="before")
    @classmethod
    def _ice_addresses(cls, v: Any) -> list[str]:
        from ipaddress import ip_address

        items = [a.strip() for a in v.split(",") if a.strip()] if isinstance(v, str) else list(v or [])
        for a in items:
            if a != "host":
                try:
                    ip_address(a)
                except ValueError:
                    raise ValueError(f"{a!r} is not an IP address (or `host`)") from None
        return items
    threads: int | None = Field(None, ge=1, description="torch CPU threads")
    # the encode scheduler (engine/encode_scheduler.py; docs/architecture.md, "Many streams")
    encode_batch: int = Field(8, ge=1, description="frames of different streams encoded in one batch; 1: one at a time")
    encode_batch_tokens: int = Field(8192, ge=1, description="decoder tokens per batched encode forward")
    encode_batch_wait_s: float = Field(0.01, ge=0, le=1, description="how long a batch waits for encodes on their way")
    encode_max_lag_s: float | None = Field(10.0, gt=0, description="under overload, frames older than this are shed")
    encode_shed: Literal["furthest_behind", "none"] = Field(
        "furthest_behind", description="overload rule: the stream furthest behind loses its frame first; none: never")
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
    key_max_streams: int | None = Field(
        4, ge=1, description="live streams per API key (None: max_streams); failed/ended ones do not count"
    )
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
    # -- CORS (docs/api.md "CORS") ------------------------------------------------------------
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="origins browsers may call from (comma-separated or JSON; "
        "`*`: any); empty: no CORS headers",
    )
    cors_allow_headers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["Authorization", "Content-Type"], description="request headers a preflight allows",
    )
    cors_max_age_s: int = Field(600, ge=0, description="how long browsers may cache a preflight")

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _origins(cls, v: Any) -> list[str]:
        from .cors import parse_origins

        return parse_origins(v)

    @field_validator("cors_allow_headers", mode="before")
    @classmethod
    def _headers(cls, v: Any) -> Any:
        return [h.strip() for h in v.split(",") if h.strip()] if isinstance(v, str) else v

    # -- fairness, probes, stream lifetime (docs/api.md "Limits") --------------------------------
    max_question_tokens: int = Field(
        512, ge=1, description="question length in the model's tokens (question_too_long beyond)"
    )
    question_slots: int | None = Field(
        None, ge=1, description="questions the model works on at once, the rest queue fairly per key "
        "(None: 1 embedded, one per answer device multi)",
    )
    key_max_questions_in_flight: int | None = Field(
        4, ge=1, description="questions an API key may have queued or running (None: no cap)"
    )
    probe_workers: int = Field(4, ge=1, le=64, description="source probes (?probe=true) run at once")
    probe_timeout_s: float = Field(
        15.0, gt=0, description="a probe (waiting for a worker included) slower than this is probe_timeout"
    )
    stream_retention_s: float = Field(
        600.0, gt=0, description="failed/ended streams (and their memory) are deleted this long after"
    )

    # -- KV store tiers: STREAMVQA_STORE_<NAME> (StoreSettings below) -------------------------
    store: StoreSettings = Field(default_factory=StoreSettings)
    # -- multi topology ------------------------------------------------------------------------
    run_dir: str | None = Field(None, description="multi: worker sockets, config and logs (None: a temp dir)")
    encoder_device: str | None = Field(
        None, description="multi: encoder device(s), comma-separated: one encoder worker each (None: device)"
    )
    answer_device: str | None = Field(
        None, description="multi: answer device(s), comma-separated: one answer worker each (None: device)"
    )
    worker_transport: Literal["ipc", "tcp"] = Field("ipc", description="multi: unix sockets or tcp")
    worker_base_port: int = Field(7650, ge=1024, le=65000, description="multi tcp: kvstore/encoder/answer ports")
    worker_spawn: bool = Field(True, description="multi: start the workers (False: containers run them)")
    worker_start_timeout_s: float = Field(300.0, gt=0, description="multi: a worker must serve by then")
    # -- cluster of replicas (docs/scaling.md) ------------------------------------------------
    cluster_redis_url: str | None = Field(
        None, description="Redis of the stream directory, redis://host:port/db (None: one replica, no cluster)"
    )
    replica_id: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,64}$",
                                   description="this replica's name in the directory (None: the host name)")
    advertise_url: str | None = Field(None, description="URL the other replicas reach this one at "
                                      "(None: http://<host name>:<port>)")
    cluster_lease_s: float = Field(5.0, ge=1.0, le=300.0, description="a replica silent this long loses its "
                                   "streams to the others")
    cluster_admin_keys: str = Field("", description="API key names (comma-separated) that may read /v1/cluster")

    @model_validator(mode="after")
    def _check_cluster(self) -> ServerSettings:
        if self.cluster_redis_url:
            from streamvqa.cluster.config import check_settings

            check_settings(self)  # ValueError: what a replica needs for failover is missing
        return self

    @model_validator(mode="before")
    @classmethod
    def _flat_store_fields(cls, data: Any) -> Any:
        """``store_<name>=...`` (flags, older callers) is ``store=StoreSettings(<name>=...)``."""
        if not isinstance(data, dict):
            return data
        flat = {k: k.removeprefix("store_") for k in data
                if k.startswith("store_") and k.removeprefix("store_") in StoreSettings.model_fields}
        if not flat:
            return data
        store = data.get("store") or {}
        store = store.model_dump(exclude_unset=True) if isinstance(store, StoreSettings) else dict(store)
        store.update({name: data[k] for k, name in flat.items()})
        return {**{k: v for k, v in data.items() if k not in flat}, "store": store}
    # -- answer engine (docs/vllm.md) ----------------------------------------------------------
    answer_engine: Literal["transformers", "vllm"] = Field(
        "transformers", description="who decodes answers: the model in this process, or a vLLM process "
        "(`bash tools/setup.sh --vllm`; multi: one vLLM process per answer worker)")
    vllm_python: str | None = Field(None, description="vLLM's interpreter (None: .venv-vllm/bin/python)")
    vllm_max_num_seqs: int = Field(32, ge=1, description="questions vLLM decodes at once (continuous batching)")
    vllm_kv_cache_gib: int = Field(2, ge=1, description="vLLM's paged KV cache on CPU (VLLM_CPU_KVCACHE_SPACE)")
    vllm_max_model_len: int = Field(8192, ge=256, description="memory + question + answer tokens per question")

    def vllm_options(self) -> dict[str, Any]:
        """`VLLMOptions` fields (streamvqa/answering/vllm_process.py) from the vllm_* settings."""
        return {"max_num_seqs": self.vllm_max_num_seqs, "kv_cache_gib": self.vllm_kv_cache_gib,
                "max_model_len": self.vllm_max_model_len, "start_timeout_s": self.worker_start_timeout_s,
                **({"python": self.vllm_python} if self.vllm_python else {})}

    @model_validator(mode="after")
    def _check_store(self) -> ServerSettings:
        cfg = self.store_config()
        if cfg is not None:
            from streamvqa.store.config import TieredStoreConfig

            try:
                TieredStoreConfig.model_validate({**cfg, "fingerprint": "check-0"})
            except ValidationError as e:
                err = e.errors()[0]
                loc = ".".join(str(p) for p in err["loc"])
                msg = str(err["msg"]).removeprefix("Value error, ")
                raise ValueError(f"store: {loc + ': ' if loc else ''}{msg}") from None
        return self

    def encode_config(self) -> dict[str, Any]:
        """The engine's `SchedulerConfig` fields."""
        return {"max_batch": self.encode_batch, "max_tokens": self.encode_batch_tokens,
                "wait_s": self.encode_batch_wait_s, "max_lag_s": self.encode_max_lag_s, "shed": self.encode_shed}

    def store_config(self) -> dict[str, Any] | None:
        """`EngineConfig.store` / `TieredStoreConfig` fields (no fingerprint) from the store
        settings; with nothing configured, embedded gets a bounded host tier and a disk spill."""
        return self.store.tiered_config(self.topology)

    @classmethod
    def env_values(cls, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The raw values ``STREAMVQA_*`` variables give, by field (``store``: a dict)."""
        source = EnvSettingsSource(cls)
        source.env_vars = parse_env_vars(os.environ if env is None else env, source.case_sensitive,
                                         source.env_ignore_empty, source.env_parse_none_str)
        return source()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ServerSettings:
        """Settings from ``STREAMVQA_<FIELD>`` variables, then ``overrides`` (None values ignored).

        Raises ``ValueError`` with a one-line reason on a bad value.
        """
        try:
            values = cls.env_values(env)
            values.update({k: v for k, v in overrides.items() if v is not None})
            return cls.model_validate(values)
        except ValidationError as e:
            err = e.errors()[0]
            loc = "_".join(str(p) for p in err["loc"])  # store.host_bytes: as its variable, store_host_bytes
            msg = str(err["msg"]).removeprefix("Value error, ")
            raise ValueError(f"invalid setting {loc}: {msg}" if loc else f"invalid settings: {msg}") from None
        except ValueError as e:  # a complex value that is not JSON (pydantic-settings' SettingsError)
            raise ValueError(f"invalid settings: {e}") from None


def env_names() -> dict[str, tuple[str, ...]]:
    """Every variable the settings read, with the field it sets: ``STREAMVQA_PORT`` ->
    ``("port",)``, ``STREAMVQA_STORE_HOST_BYTES`` -> ``("store", "host_bytes")``."""
    out: dict[str, tuple[str, ...]] = {}
    for name in ServerSettings.model_fields:
        if name == "store":
            out.update({f"{ENV_PREFIX}STORE_{sub.upper()}": ("store", sub) for sub in StoreSettings.model_fields})
        else:
            out[f"{ENV_PREFIX}{name.upper()}"] = (name,)
    return out
