"""Three replicas sharing one Redis (issue 21): any replica answers for any stream (REST and
WebSocket, the same answers as the owner), placement spreads new streams, other keys reach
nothing, the directory survives a Redis restart with its AOF and is rebuilt without one (nothing
adopted), and a `kill -9` of the owner of two live streams (RTSP and a real-time file) moves both
to survivors, which answer a question about an event before the kill from the dead replica's
blocks. The tests run in file order on one cluster (the last one kills r1)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from streamvqa.cluster.local import LocalRedis

from .conftest import KEY_A, KEY_ADMIN, KEY_B, KEY_C, LEASE_S, LocalReplica, auth, wait_until

pytestmark = pytest.mark.slow


def create(rep: LocalReplica, key: str, body: dict[str, Any], pin: bool = False) -> tuple[str, str]:
    """(stream id, replica that took it); ``pin``: served by ``rep`` itself (no placement)."""
    headers = auth(key) | ({"X-Streamvqa-Forwarded": "test"} if pin else {})
    r = httpx.post(rep.url + "/v1/streams", json=body, headers=headers, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.headers["x-streamvqa-replica"]


def info(rep: LocalReplica, sid: str, key: str = KEY_A) -> httpx.Response:
    return httpx.get(f"{rep.url}/v1/streams/{sid}", headers=auth(key), timeout=30)


def ask(rep: LocalReplica, sid: str, question: str, key: str = KEY_A) -> httpx.Response:
    return httpx.post(f"{rep.url}/v1/streams/{sid}/questions", headers=auth(key), timeout=120,
                      json={"question": question, "temperature": 0})


def ask_ws(rep: LocalReplica, sid: str, question: str, key: str = KEY_A) -> dict[str, Any]:
    url = rep.url.replace("http", "ws", 1) + f"/v1/streams/{sid}/ws"
    with connect(url, additional_headers=auth(key), open_timeout=30) as ws:
        try:
            ws.send(json.dumps({"type": "question", "request_id": "q1", "question": question, "temperature": 0}))
            for _ in range(1000):
                msg = json.loads(ws.recv(timeout=120))
                if msg["type"] != "token":
                    return msg
        except ConnectionClosed as e:  # refused at connect: the close says why
            assert e.rcvd is not None
            return {"type": "closed", "code": e.rcvd.code, "reason": e.rcvd.reason}
    raise AssertionError("no answer")


def directory(url: str) -> dict[str, dict[str, str]]:
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        return {k.split(":", 2)[2]: r.hgetall(k) for k in r.scan_iter("svqa-cluster:stream:*")}
    finally:
        r.close()


def adoptions(rep: LocalReplica) -> float:
    text = httpx.get(rep.url + "/metrics", headers=auth(KEY_A), timeout=30).text
    return sum(float(v) for v in re.findall(r'^vqa_cluster_adoptions_total\{result="adopted"\} (\S+)$', text, re.M))


def test_any_replica_serves_any_stream(cluster: list[LocalReplica], needle: dict[str, Any]) -> None:
    r1, r2, r3 = cluster
    made = [create(r1, KEY_A, {"url": needle["short"], "fps": 1}) for _ in range(3)]
    assert sorted(rep for _, rep in made) == ["r1", "r2", "r3"]  # placement: one per replica
    ids = [sid for sid, _ in made]
    for sid in ids:  # the short needle file plays in real time: 14 s
        assert wait_until(lambda s=sid: info(r2, s).json().get("state") == "ended", 90), info(r2, sid).text
    for sid, owner in made:
        direct = next(r for r in cluster if r.name == owner)
        ref = ask(direct, sid, needle["question"])
        assert ref.status_code == 200, ref.text
        assert ref.json()["answer"].lower() == needle["answer"]
        for rep in cluster:
            got = ask(rep, sid, needle["question"])
            assert got.headers["x-streamvqa-replica"] == owner
            assert (got.json()["answer"], got.json()["evidence"]) == (ref.json()["answer"], ref.json()["evidence"])
            ws = ask_ws(rep, sid, needle["question"])
            assert ws["type"] == "answer", ws
            assert (ws["answer"], ws["evidence"]) == (ref.json()["answer"], ref.json()["evidence"])
    # every replica lists the key's streams of every replica; none of another key's
    for rep in cluster:
        listed = {s["id"] for s in httpx.get(rep.url + "/v1/streams", headers=auth(KEY_A), timeout=30).json()["streams"]}
        assert set(ids) <= listed
        assert not httpx.get(rep.url + "/v1/streams", headers=auth(KEY_B), timeout=30).json()["streams"]
    # another key reaches nothing, through any replica: 404 as for an id that does not exist
    for rep in cluster:
        for sid in ids:
            assert info(rep, sid, KEY_B).json()["error"]["code"] == "unknown_stream"
            assert ask(rep, sid, needle["question"], KEY_B).status_code == 404
            assert httpx.delete(f"{rep.url}/v1/streams/{sid}", headers=auth(KEY_B), timeout=30).status_code == 404
            assert httpx.delete(f"{rep.url}/v1/whip/{sid}", headers=auth(KEY_B), timeout=30).status_code == 404
            err = ask_ws(rep, sid, needle["question"], KEY_B)
            # the error message, or (when the close overtakes our question) the close reason
            assert (err["error"]["code"] if err["type"] == "error" else err["reason"]) == "unknown_stream", err
    # the admin view and the replica id on metrics
    view = httpx.get(r3.url + "/v1/cluster", headers=auth(KEY_ADMIN), timeout=30).json()
    assert {r["id"] for r in view["replicas"] if r["alive"]} == {"r1", "r2", "r3"}
    assert sorted(s["id"] for r in view["replicas"] for s in r["streams"]) == sorted(ids)
    assert httpx.get(r3.url + "/v1/cluster", headers=auth(KEY_A), timeout=30).status_code == 404
    assert 'vqa_replica_info{replica="r2"' in httpx.get(r2.url + "/metrics", headers=auth(KEY_A), timeout=30).text
    # a body over max_body_bytes is refused before it is held for forwarding
    big = httpx.post(r1.url + "/v1/streams", content=b" " * (2 << 20), timeout=30,
                     headers=auth(KEY_A) | {"Content-Type": "application/json"})
    assert (big.status_code, big.json()["error"]["code"]) == (413, "payload_too_large")
    # delete through a replica that does not own the stream
    sid, owner = made[0]
    other = next(r for r in cluster if r.name != owner)
    assert httpx.delete(f"{other.url}/v1/streams/{sid}", headers=auth(KEY_A), timeout=30).status_code == 204
    for rep in cluster:
        assert info(rep, sid).status_code == 404


def test_quotas_hold_across_replicas(cluster: list[LocalReplica], needle: dict[str, Any]) -> None:
    """Key c may hold one live stream and ask two questions a minute, whichever replicas it uses."""
    r1, r2, r3 = cluster
    sid, _ = create(r1, KEY_C, {"url": needle["short"], "fps": 1})
    for rep in (r2, r3):  # placed on another replica than the first: still over the key's quota
        second = httpx.post(rep.url + "/v1/streams", json={"url": needle["short"]}, headers=auth(KEY_C), timeout=60)
        assert (second.status_code, second.json()["error"]["code"]) == (429, "quota_exceeded"), second.text
    codes = [ask(rep, sid, needle["question"], KEY_C).status_code for rep in (r1, r2, r3)]
    assert 429 not in codes[:2] and codes[2] == 429, codes
    assert httpx.delete(f"{r2.url}/v1/streams/{sid}", headers=auth(KEY_C), timeout=30).status_code == 204
    assert create(r3, KEY_C, {"url": needle["short"], "fps": 1})  # the slot is free again


def test_directory_survives_redis_restart_with_aof(cluster: list[LocalReplica], redis_aof: LocalRedis) -> None:
    before = directory(redis_aof.url)
    assert before
    time.sleep(1.5)  # AOF fsyncs every second
    redis_aof.restart(persist=True)
    assert directory(redis_aof.url) == before or {k: v["replica"] for k, v in directory(redis_aof.url).items()} \
        == {k: v["replica"] for k, v in before.items()}
    time.sleep(2 * LEASE_S)  # long enough for a wrong adoption to happen
    after = directory(redis_aof.url)
    assert {k: (v["replica"], v["epoch"]) for k, v in after.items()} == \
        {k: (v["replica"], v["epoch"]) for k, v in before.items()}
    assert all(r.ready() for r in cluster)


def test_redis_restart_without_persistence_adopts_nothing(cluster: list[LocalReplica], redis_aof: LocalRedis) -> None:
    before = directory(redis_aof.url)
    adopted = [adoptions(r) for r in cluster]
    r = redis.Redis.from_url(redis_aof.url)
    r.set("svqa-test:marker", "1")  # the replicas may republish before we look: a key only we write
    r.close()
    redis_aof.restart(persist=False)
    r = redis.Redis.from_url(redis_aof.url)
    assert r.get("svqa-test:marker") is None  # Redis came back empty
    r.close()
    # the replicas take their leases again and publish their streams again: same owners, same epochs
    assert wait_until(lambda: {k: (v["replica"], v["epoch"]) for k, v in directory(redis_aof.url).items()}
                      == {k: (v["replica"], v["epoch"]) for k, v in before.items()}, 6 * LEASE_S)
    time.sleep(2 * LEASE_S)
    assert [adoptions(r) for r in cluster] == adopted
    assert wait_until(lambda: all(r.ready() for r in cluster), 3 * LEASE_S)
    redis_aof.restart(persist=True)  # back to AOF for the next test (its directory is rebuilt too)
    assert wait_until(lambda: len(directory(redis_aof.url)) == len(before), 6 * LEASE_S)


def test_kill_9_of_an_owner_moves_its_live_streams(cluster: list[LocalReplica], needle: dict[str, Any],
                                                   rtsp_url: str, redis_aof: LocalRedis) -> None:
    r1, r2, r3 = cluster
    s_file, _ = create(r1, KEY_A, {"url": needle["file"], "fps": 1}, pin=True)
    s_rtsp, _ = create(r1, KEY_A, {"url": rtsp_url, "fps": 1}, pin=True)
    # past the needle (t 3..8 s) and a few blocks of the RTSP stream, both seen through r2
    assert wait_until(lambda: info(r2, s_file).json()["frames_encoded"] >= 11, 60), info(r2, s_file).text
    assert wait_until(lambda: info(r2, s_rtsp).json()["frames_encoded"] >= 3, 60), info(r2, s_rtsp).text
    before = {sid: info(r2, sid).json() for sid in (s_file, s_rtsp)}
    r1.kill()
    killed = time.monotonic()

    def moved() -> bool:
        for sid in (s_file, s_rtsp):
            r = info(r2, sid)
            if r.status_code != 200 or r.headers["x-streamvqa-replica"] not in ("r2", "r3"):
                return False
            if r.json()["state"] != "running" or r.json()["frames_encoded"] < 1:
                return False
        return True

    assert wait_until(moved, 30), [info(r2, s).text for s in (s_file, s_rtsp)]
    took = time.monotonic() - killed
    recs = directory(redis_aof.url)
    print(f"failover: both streams running on survivors {took:.1f}s after kill -9 (lease {LEASE_S}s); "
          f"resumed {recs[s_file].get('adopted_gap_s')}s (file), {recs[s_rtsp].get('adopted_gap_s')}s (rtsp) "
          "of stream time after the last stored block")
    assert {recs[s]["replica"] for s in (s_file, s_rtsp)} <= {"r2", "r3"}
    assert [recs[s]["epoch"] for s in (s_file, s_rtsp)] == ["1", "1"]  # adopted exactly once
    assert sum(adoptions(r) for r in (r2, r3)) >= 2
    # a question about the event before the kill, through the replica that does not own it
    owner = recs[s_file]["replica"]
    asker = r3 if owner == "r2" else r2
    ans = ask(asker, s_file, needle["question"])
    assert ans.status_code == 200, ans.text
    assert ans.json()["answer"].lower() == needle["answer"]
    lo, hi = needle["evidence"]
    killed_t = before[s_file]["last_frame_t"]
    ev = [(e["t_start"], e["t_end"]) for e in ans.json()["evidence"]]
    assert any(a < hi and lo < b for a, b in ev), ev
    assert all(b <= killed_t + 1.0 for a, b in ev if a < hi and lo < b), (ev, killed_t)
    # the memory of before the kill is still there, joined with new blocks
    after = info(asker, s_file).json()
    assert after["memory_blocks"]["redis"] >= before[s_file]["memory_blocks"]["redis"] > 0


def test_sigterm_hands_streams_over_without_waiting_for_the_lease(cluster: list[LocalReplica],
                                                                 redis_aof: LocalRedis) -> None:
    """A replica stopped gracefully (a rolling update, a drain) gives up its lease: the survivor
    adopts its live streams at once, each exactly once more."""
    _, r2, r3 = cluster
    before = directory(redis_aof.url)
    mine = {r.name: [s for s, v in before.items() if v["replica"] == r.name and v["state"] == "running"]
            for r in (r2, r3)}
    victim, heir = (r2, r3) if len(mine["r2"]) >= len(mine["r3"]) else (r3, r2)
    moving_ids = mine[victim.name]
    assert moving_ids, before
    stopped = time.monotonic()
    victim.stop()  # SIGTERM

    def moved() -> bool:
        recs = directory(redis_aof.url)
        return all(recs[s]["replica"] == heir.name and info(heir, s).json()["state"] == "running"
                   for s in moving_ids)

    assert wait_until(moved, 30), directory(redis_aof.url)
    print(f"hand-over: {len(moving_ids)} streams running on {heir.name} "
          f"{time.monotonic() - stopped:.1f}s after SIGTERM (lease {LEASE_S}s)")
    after = directory(redis_aof.url)
    assert [int(after[s]["epoch"]) for s in moving_ids] == [int(before[s]["epoch"]) + 1 for s in moving_ids]
