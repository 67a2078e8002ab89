"""The typed message layer and the RPC transport, in one process (no workers)."""

from __future__ import annotations

import pickle
import tempfile
import threading
import time

import numpy as np
import pytest
import torch

from streamvqa.proto import ipc
from streamvqa.workers.multi.rpc import RpcClient, RpcServer, WorkerUnavailable


def test_request_round_trip_and_validation():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    ref, raw = ipc.tensor_ref(img, 0)
    req = ipc.Request(id="1", op="enc.frame", body=ipc.dumps(ipc.PushFrame(stream_id="s", t=1.5, image=ref)))
    got, body, atts = ipc.unpack_request([bytes(f) for f in ipc.pack(req, [raw])])
    assert got.op == "enc.frame" and isinstance(body, ipc.PushFrame)
    assert np.array_equal(ipc.to_numpy(body.image, atts), img)


@pytest.mark.parametrize("frames, code", [
    ([b'{"v": 1, "id": "1", "op": "nope", "body": {}}'], "unknown_op"),
    ([b'{"v": 1, "id": "1", "op": "store.put", "body": {"stream_id": "s"}}'], "invalid_message"),
    ([b'{"v": 1, "id": "1", "op": "store.put", "body": {"stream_id": "s", "index": 0, '
      b'"segment": "../etc/passwd", "length": 3}}'], "invalid_message"),
    ([pickle.dumps({"op": "ping"})], "invalid_message"),  # pickles are not messages
    ([b'{"v": 2, "id": "1", "op": "ping", "body": {}}'], "invalid_message"),
])
def test_bad_requests_are_refused(frames, code):
    with pytest.raises(ipc.IpcError) as e:
        ipc.unpack_request(frames)
    assert e.value.code == code


def test_attachment_must_match_its_description():
    ref = ipc.TensorRef(index=0, dtype="float32", shape=[4])
    with pytest.raises(ipc.IpcError):
        ipc.to_tensor(ref, [b"\x00" * 15])
    t = torch.arange(4, dtype=torch.float32)
    ref, raw = ipc.tensor_ref(t, 0)
    assert torch.equal(ipc.to_tensor(ref, [bytes(raw)]), t)


@pytest.fixture
def server():
    gate = threading.Event()

    def ping(body, atts, emit):
        return ipc.Pong(role="test", pid=1)

    def ask(body, atts, emit):
        for k in range(3):
            emit(ipc.TokenMsg(text=f"t{k}", token_id=k, index=k))
        gate.wait(10)
        return ipc.AnswerMsg(text="done", token_ids=[0, 1, 2], evidence=[], timings={}, finish_reason="length")

    def fail(body, atts, emit):
        raise ipc.IpcError("unknown_stream", "no such stream")

    endpoint = f"ipc://{tempfile.mkdtemp(prefix='svq-')}/t.sock"
    srv = RpcServer(endpoint, {"ping": ping, "ans.ask": ask, "enc.close": fail}, threads=2)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield endpoint, gate
    gate.set()
    srv.stop()
    t.join(5)


def test_call_stream_and_errors(server):
    endpoint, gate = server
    client = RpcClient(endpoint, "test")
    assert client.ping().role == "test"
    with pytest.raises(ipc.IpcError) as e:
        client.call("enc.close", ipc.StreamRef(stream_id="s"))
    assert e.value.code == "unknown_stream"
    gate.set()
    events = list(client.stream("ans.ask", ipc.Ask(stream_id="s", method="rekv", question="q")))
    assert [k for k, _ in events] == ["event"] * 3 + ["ok"]
    assert events[-1][1].text == "done"
    client.close()


def test_reset_fails_calls_in_flight(server):
    """A question in flight on a worker the supervisor declared dead errors at once."""
    endpoint, gate = server
    client = RpcClient(endpoint, "test")
    it = client.stream("ans.ask", ipc.Ask(stream_id="s", method="rekv", question="q"))
    assert next(it)[0] == "event"
    threading.Timer(0.2, client.reset).start()
    start = time.monotonic()
    with pytest.raises(WorkerUnavailable):
        list(it)
    assert time.monotonic() - start < 9  # well before the handler would have finished (gate: 10 s)


def test_unreachable_peer():
    client = RpcClient(f"ipc://{tempfile.mkdtemp(prefix='svq-')}/none.sock", "ghost")
    with pytest.raises(WorkerUnavailable):
        client.call("ping", ipc.Ping(), timeout=1)


def test_slow_tier_counts_as_degraded(tmp_path):
    """A tier that answers, but slower than slow_tier_s, is degraded like a dead one."""
    import uuid

    from streamvqa.store import shm
    from streamvqa.workers.multi.config import MultiConfig
    from streamvqa.workers.multi.kvstore import KvStoreService
    from tests.multiproc.conftest import wait_until

    pre = f"svqslow{uuid.uuid4().hex[:6]}"
    cfg = MultiConfig(run_dir=str(tmp_path), slow_tier_s=0.05,
                      store={"tiers": [{"kind": "host", "budget_bytes": 1 << 20, "shm_prefix": pre},
                                       {"kind": "disk", "path": str(tmp_path / "kv"), "budget_bytes": 1 << 20}]})
    service = KvStoreService(cfg, fingerprint="test-0")
    try:
        disk = service.store.tiers[1]
        health = lambda: service.health(ipc.Empty(), [], None)  # noqa: E731
        assert wait_until(lambda: health().tiers.get("disk", {}).get("ping_s") is not None, 10)
        assert health().degraded == []
        disk.ping = lambda: (time.sleep(0.2), True)[1]
        assert wait_until(lambda: "disk" in health().degraded, 10)
        assert health().tiers["disk"]["slow"] is True and health().ok  # still serving from warm tiers
    finally:
        service.close()
    assert not shm.list_segments(pre)
