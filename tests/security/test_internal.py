"""Internal surfaces: nothing unpickled, shared memory owner-only, local bind by default,
malformed video never takes the server down."""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

from streamvqa.server.settings import ServerSettings
from streamvqa.store.shm import create_segment, new_segment_name, release_segment

from .conftest import ALICE, bearer, wait_until

ROOT = Path(__file__).resolve().parents[2] / "streamvqa"
UNSAFE = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}


def test_nothing_unpickles_from_the_network() -> None:
    offenders = []
    files = [p for d in ("server", "proto", "workers") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 10
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                    "__import__", "eval", "exec"):
                names = [node.func.id]
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                          if n in UNSAFE or n in ("__import__", "eval", "exec")]
    assert offenders == []


def test_shared_memory_is_owner_only() -> None:
    seg = create_segment(new_segment_name("svqa-sectest"), 4096)
    try:
        mode = stat.S_IMODE(os.stat(f"/dev/shm/{seg.name.lstrip('/')}").st_mode)
        assert mode == 0o600, oct(mode)
    finally:
        release_segment(seg, unlink=True)


def test_binds_loopback_by_default() -> None:
    s = ServerSettings()
    assert s.host == "127.0.0.1" and s.auth == "on" and not s.allow_private_networks and s.media_root is None


def test_malformed_and_truncated_videos_fail_the_stream_not_the_server(
        secure_client, media: Path, clip: Path) -> None:
    data = clip.read_bytes()
    (media / "random.mp4").write_bytes(bytes((i * 7919 + 13) % 251 for i in range(100_000)))
    (media / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (media / "header_only.mp4").write_bytes(data[:64])
    (media / "empty.mp4").write_bytes(b"")
    (media / "text.mp4").write_text("<html>not a video</html>")
    client = secure_client(engine_override=None)
    a = bearer(ALICE)
    ids = {}
    for name in ("random.mp4", "truncated.mp4", "header_only.mp4", "empty.mp4", "text.mp4"):
        r = client.post("/v1/streams", json={"url": name}, headers=a)
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    final = ("ended", "failed")
    for name, sid in ids.items():
        assert wait_until(lambda sid=sid: client.get(f"/v1/streams/{sid}", headers=a).json()["state"] in final, 30)
        info = client.get(f"/v1/streams/{sid}", headers=a).json()
        if info["state"] == "failed":
            assert info["last_error"]["code"] in ("decode_error", "no_video_stream", "source_unreachable",
                                                  "unsupported_codec"), info
        else:
            assert name == "truncated.mp4", info  # frames before the cut decode, then it ends
    assert client.get("/health").status_code == 200
    good = client.post("/v1/streams", json={"url": "clip.mp4"}, headers=a).json()["id"]
    assert wait_until(lambda: client.get(f"/v1/streams/{good}", headers=a).json()["state"] == "ended", 30)
    assert client.post(f"/v1/streams/{good}/questions", json={"question": "hi"}, headers=a).status_code == 200
