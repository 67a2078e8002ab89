"""A method alias (`v-rex`, `vrex`: the V-Rex paper's name for `resv`) is accepted by the API and
recorded as its preset; an unknown name still answers `unknown_method`."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize("alias", ["v-rex", "V-Rex", "vrex"])
def test_api_accepts_v_rex_alias_as_resv(client, clip: Path, alias: str) -> None:
    r = client.post("/v1/streams", json={"url": clip.as_uri(), "fps": 5, "method": alias,
                                         "options": {"memory_tokens": 4096}})
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["method"] == "resv"
    assert client.get(f"/v1/streams/{info['id']}").json()["method"] == "resv"
    assert client.delete(f"/v1/streams/{info['id']}").status_code == 204


def test_unknown_method_is_still_refused(client, clip: Path) -> None:
    r = client.post("/v1/streams", json={"url": clip.as_uri(), "method": "v-rex-2"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_method"
