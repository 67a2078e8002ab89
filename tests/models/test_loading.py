"""`--model`: a local directory, a model id from the huggingface_hub cache, a clear error when an
id is not cached and the machine is offline, and unsupported architectures refused by name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from streamvqa.models.loading import ModelLoadError, load_adapter

PROBE = (
    "import sys\n"
    "from streamvqa.models.loading import ModelLoadError, load_adapter\n"
    "try:\n"
    "    a = load_adapter(sys.argv[1])\n"
    "    print('family', a.family)\n"
    "except ModelLoadError as e:\n"
    "    print('error', e.code, e.message)\n"
)


def probe(name: str, cache, **env) -> str:
    full = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache), **env}
    out = subprocess.run([sys.executable, "-c", PROBE, name], capture_output=True, text=True, env=full, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_unsupported_architecture_is_refused_with_its_name(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "mllama", "architectures": ["MllamaForConditionalGeneration"]})
    )
    with pytest.raises(ModelLoadError) as e:
        load_adapter(str(tmp_path))
    assert e.value.code == "model_unsupported"
    assert "MllamaForConditionalGeneration" in e.value.message and "qwen3_vl" in e.value.message


@pytest.mark.parametrize("name", ["./no/such/dir", "tiny:nope"])
def test_unknown_names_are_refused(tmp_path, name):
    with pytest.raises(ModelLoadError) as e:
        load_adapter(name)
    assert e.value.code in ("model_not_found", "model_unsupported")


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError) as e:
        load_adapter(str(tmp_path))
    assert e.value.code == "model_not_found" and "config.json" in e.value.message


@pytest.mark.slow
def test_model_id_resolves_from_the_hub_cache_offline(tiny_dirs, tmp_path):
    """A model id found in the huggingface_hub cache loads with the hub unreachable (offline)."""
    repo = tmp_path / "hub" / "models--acme--tiny-qwen3"
    commit = "0" * 40
    shutil.copytree(tiny_dirs("qwen3_vl"), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert probe("acme/tiny-qwen3", tmp_path / "hub", HF_HUB_OFFLINE="1") == "family qwen3_vl"


@pytest.mark.slow
def test_model_id_not_cached_offline_says_what_to_do(tmp_path):
    line = probe("acme/absent-model", tmp_path, HF_HUB_OFFLINE="1")
    assert line.startswith("error model_offline") and "hf download acme/absent-model" in line


@pytest.mark.slow
def test_model_id_with_the_hub_unreachable_says_what_to_do(tmp_path):
    """Online mode, but the hub does not answer (a closed port on 127.0.0.1)."""
    line = probe("acme/absent-model", tmp_path, HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")
    assert line.startswith("error model_offline") and "could not be reached" in line
