"""`streamvqa models` lists every loadable family with what it needs and how it is verified."""

import json
import subprocess
import sys

import pytest

from streamvqa.models.loading import FAMILIES


@pytest.mark.slow
def test_models_command_lists_every_family_as_json():
    out = subprocess.run([sys.executable, "-m", "streamvqa.cli", "models", "--json"], capture_output=True, text=True,
                         check=True, timeout=120)
    rows = {r["model_type"]: r for r in json.loads(out.stdout)}
    assert set(rows) == set(FAMILIES)
    assert all(r["needs"] and r["verified"] and r["positions"] for r in rows.values())
    assert "test_fidelity" in rows["qwen3_vl"]["verified"] and "DeepStack" in rows["qwen3_vl"]["positions"]
