"""Engine configuration, validated at the edge."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from streamvqa.engine.encode_scheduler import SchedulerConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field("default", description='"default", "tiny:<family>" or a local HF directory')
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_question_chars: int = Field(2000, ge=1)
    max_new_tokens: int = Field(512, ge=1)
    store: dict | None = Field(
        None, description="TieredStoreConfig fields (tiers, durable, ...) without the fingerprint; None: host RAM only"
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads; None leaves torch's default")
    answer_engine: Literal["transformers", "vllm"] = Field(
        "transformers", description="who decodes answers: this process's model, or a vLLM process (docs/vllm.md)")
    vllm: dict = Field(default_factory=dict, description="VLLMOptions fields (streamvqa/answering/vllm_process.py)")
    encode: SchedulerConfig = Field(default_factory=SchedulerConfig,
                                    description="the encode scheduler: batching across streams, load shedding")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]
