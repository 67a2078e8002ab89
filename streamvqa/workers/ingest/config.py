"""Per-stream ingest configuration, validated once at the edge (API request or CLI)."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .errors import IngestError
from .urls import SourceUrl, parse_source_url


class IngestConfig(BaseModel):
    """How one stream is opened, sampled and buffered.

    An unsupported URL scheme fails validation with the pydantic error type
    ``unsupported_scheme`` (the same code as :class:`~.errors.IngestError`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="rtsp://, rtsps://, http://, https://, file:// URL or a local path")
    address: str | None = Field(
        None, description="IP the server's URL policy checked for the URL's host; ingest connects "
        "there instead of resolving the name again (DNS pinning)"
    )
    fps: float = Field(1.0, gt=0, le=120, description="sampling rate, frames per second of stream time")
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    open_timeout_s: float = Field(10.0, gt=0, le=300, description="connect + probe deadline")
    read_timeout_s: float = Field(10.0, gt=0, le=300, description="deadline for any single read")
    max_retries: int = Field(5, ge=0, le=1000, description="consecutive failed reconnects before failing")
    backoff_initial_s: float = Field(0.5, ge=0, le=60)
    backoff_max_s: float = Field(10.0, ge=0, le=600)
    max_width: int = Field(1280, ge=16, le=16384, description="frames wider are downscaled (aspect kept)")
    max_height: int = Field(720, ge=16, le=16384, description="frames taller are downscaled (aspect kept)")
    max_decode_width: int = Field(
        7680, ge=16, le=65536, description="wider sources fail resolution_too_large"
    )
    max_decode_height: int = Field(
        4320, ge=16, le=65536, description="taller sources fail resolution_too_large"
    )
    queue_size: int = Field(8, ge=1, le=10000, description="sampled frames buffered for the encoder")
    realtime: bool = Field(
        False, description="pace file/HTTP sources at their timestamps (live sources always are)"
    )

    @field_validator("url")
    @classmethod
    def _check_scheme(cls, url: str) -> str:
        try:
            parse_source_url(url)
        except IngestError as e:
            raise PydanticCustomError(e.code, e.message) from None
        return url.strip()

    @field_validator("address")
    @classmethod
    def _check_address(cls, address: str | None) -> str | None:
        return None if address is None else str(ipaddress.ip_address(address))

    @model_validator(mode="after")
    def _check_ranges(self) -> IngestConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        if self.max_decode_width < self.max_width or self.max_decode_height < self.max_height:
            raise ValueError("max_decode_width/height must be >= max_width/height")
        return self

    @property
    def source(self) -> SourceUrl:
        """The parsed URL (kind and what to hand to PyAV)."""
        return parse_source_url(self.url, self.address)

    def backoff_s(self, attempt: int) -> float:
        """Delay before reconnect attempt ``attempt`` (1-based): exponential, capped."""
        return min(self.backoff_max_s, self.backoff_initial_s * (2 ** max(0, attempt - 1)))
