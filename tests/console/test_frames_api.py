"""``/v1/streams/{id}/frames...``: the owner's key only, 404 for others and unknown, the budget held."""

from __future__ import annotations

import io
from types import SimpleNamespace

from PIL import Image

from .conftest import ALICE, BOB, bearer, wait_stream

ALICE_H, BOB_H = bearer(ALICE), bearer(BOB)


def _file_stream(client, fps: float = 5) -> str:
    r = client.post("/v1/streams", json={"url": "clip.mp4", "fps": fps}, headers=ALICE_H)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    info = wait_stream(SimpleNamespace(get=lambda url: client.get(url, headers=ALICE_H)), sid, lambda s: s["state"] == "ended")
    assert info["state"] == "ended" and info["frames_delivered"] == 15, info
    return sid


def test_frames_owner_only_and_jpeg(keyed_client) -> None:
    client = keyed_client(thumbnail_max_side=64)
    sid = _file_stream(client)
    r = client.get(f"/v1/streams/{sid}/frames/latest.jpg", headers=ALICE_H)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert float(r.headers["x-frame-time"]) == 2.8  # the clip's last frame at 5 fps of 10
    assert "no-store" in r.headers["cache-control"]
    assert Image.open(io.BytesIO(r.content)).size == (64, 48)
    r = client.get(f"/v1/streams/{sid}/frames/at.jpg", params={"t": 1.05}, headers=ALICE_H)
    assert r.status_code == 200 and float(r.headers["x-frame-time"]) == 1.0
    index = client.get(f"/v1/streams/{sid}/frames", headers=ALICE_H).json()
    assert [f["t"] for f in index["frames"]] == [round(0.2 * i, 1) for i in range(15)]
    assert index["bytes"] == index["total_bytes"] <= index["budget_bytes"]
    for path in ("frames", "frames/latest.jpg", "frames/at.jpg?t=1"):
        other = client.get(f"/v1/streams/{sid}/{path}", headers=BOB_H)  # another key: as if unknown
        assert other.status_code == 404 and other.json()["error"]["code"] == "unknown_stream", path
        assert client.get(f"/v1/streams/{sid}/{path}").status_code == 401  # no key
        unknown = client.get(f"/v1/streams/s_nope/{path}", headers=ALICE_H)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_stream"
    bad = client.get(f"/v1/streams/{sid}/frames/at.jpg", params={"t": "soon"}, headers=ALICE_H)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
    assert client.delete(f"/v1/streams/{sid}", headers=ALICE_H).status_code == 204
    assert client.app.state.server.streams.thumbnails.nbytes == 0  # forgotten with the stream


def test_frames_budget_bound(keyed_client) -> None:
    client = keyed_client(thumbnail_budget_bytes=4000, thumbnail_max_side=64)
    sids = [_file_stream(client) for _ in range(2)]
    total = 0
    for sid in sids:
        index = client.get(f"/v1/streams/{sid}/frames", headers=ALICE_H).json()
        assert index["total_bytes"] <= 4000 and index["budget_bytes"] == 4000
        assert 1 <= len(index["frames"]) < 15 and index["frames"][-1]["t"] == 2.8  # thinned, latest kept
        total += index["bytes"]
    assert total == index["total_bytes"] <= 4000


def test_frames_none_kept_is_not_found(keyed_client) -> None:
    client = keyed_client(thumbnail_budget_bytes=0)
    sid = _file_stream(client)
    r = client.get(f"/v1/streams/{sid}/frames/latest.jpg", headers=ALICE_H)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.get(f"/v1/streams/{sid}/frames", headers=ALICE_H).json()["frames"] == []


def test_evidence_frames_are_cited(keyed_client) -> None:
    client = keyed_client()
    sid = _file_stream(client)
    r = client.post(f"/v1/streams/{sid}/questions", json={"question": "What is shown?", "max_tokens": 2},
                    headers=ALICE_H)
    assert r.status_code == 200, r.text
    starts = {e["t_start"] for e in r.json()["evidence"]}
    assert starts
    cited = {f["t"] for f in client.get(f"/v1/streams/{sid}/frames", headers=ALICE_H).json()["frames"] if f["cited"]}
    assert cited == starts  # each evidence range's first frame is kept as its picture
    for t in starts:
        r = client.get(f"/v1/streams/{sid}/frames/at.jpg", params={"t": t}, headers=ALICE_H)
        assert float(r.headers["x-frame-time"]) == t
