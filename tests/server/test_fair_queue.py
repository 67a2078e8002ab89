"""The fair queue in front of the model: turns go round-robin across keys, in order (no clocks)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamvqa.server.fair_queue import FairQueue
from streamvqa.server.limits import RetryLater
from tests.server.conftest import wait_stream, wait_until
from tests.server.doubles import EngineDouble


async def _run(queue: FairQueue, key: str, served: list[str], release: asyncio.Event, cap: int | None = None):
    async with queue.turn(key, cap):
        served.append(key)
        await release.wait()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_backlog_of_one_key_waits_behind_another_keys_question() -> None:
    async def main() -> list[str]:
        queue, served, gates = FairQueue(1), [], [asyncio.Event() for _ in range(5)]
        tasks = [asyncio.create_task(_run(queue, "a", served, gates[i])) for i in range(4)]  # a1 runs, 3 queue
        await _settle()
        tasks.append(asyncio.create_task(_run(queue, "b", served, gates[4])))
        await _settle()
        assert (queue.running, queue.queued, queue.in_flight("a"), queue.in_flight("b")) == (1, 4, 4, 1)
        for g in [gates[0], gates[4], gates[1], gates[2], gates[3]]:  # end each turn in grant order
            g.set()
            await _settle()
        await asyncio.gather(*tasks)
        assert queue.in_flight("a") == queue.in_flight("b") == queue.running == queue.queued == 0
        return served

    # b's question is served after the one question of a that held the turn, before a's backlog
    assert asyncio.run(main()) == ["a", "b", "a", "a", "a"]


def test_three_keys_rotate() -> None:
    async def main() -> list[str]:
        queue, served, release = FairQueue(1), [], asyncio.Event()
        release.set()
        hold = asyncio.Event()
        first = asyncio.create_task(_run(queue, "a", served, hold))
        await _settle()
        tasks = [asyncio.create_task(_run(queue, k, served, release)) for k in "aaabbc"]
        await _settle()
        hold.set()
        await asyncio.gather(first, *tasks)
        return served

    assert asyncio.run(main()) == ["a", "b", "c", "a", "b", "a", "a"]


def test_cap_on_questions_in_flight_and_cancelled_waiters() -> None:
    async def main() -> None:
        queue, served, release = FairQueue(1), [], asyncio.Event()
        t1 = asyncio.create_task(_run(queue, "a", served, release, cap=2))
        t2 = asyncio.create_task(_run(queue, "a", served, release, cap=2))
        await _settle()
        with pytest.raises(RetryLater) as e:
            async with queue.turn("a", cap=2):
                pass
        assert (e.value.code, e.value.status) == ("too_many_questions", 429) and e.value.retry_after_s >= 1
        t2.cancel()  # a client that gives up while queued frees its place and its count
        await _settle()
        assert (queue.in_flight("a"), queue.queued) == (1, 0)
        release.set()
        await t1
        assert served == ["a"] and queue.running == 0

    asyncio.run(main())


def test_two_slots() -> None:
    async def main() -> None:
        queue, served, release = FairQueue(2), [], asyncio.Event()
        tasks = [asyncio.create_task(_run(queue, k, served, release)) for k in "aab"]
        await _settle()
        assert served == ["a", "a"] and queue.queued == 1
        release.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())


def test_auth_off_queues_per_stream(make_client, clip: Path) -> None:
    """With auth off there are no keys: each stream is its own queue, so one stream's backlog
    does not hold up a question on another stream (REST and WebSocket, through the server)."""
    double = EngineDouble()
    client = make_client(engine_override=double)
    sids = []
    for _ in range(2):
        r = client.post("/v1/streams", json={"url": clip.as_uri()})
        assert r.status_code == 201, r.text
        sids.append(r.json()["id"])
        wait_stream(client, sids[-1], lambda s: s["state"] == "ended")
    queue = client.app.state.server.answers.queue
    double.gate.clear()
    with client.websocket_connect(f"/v1/streams/{sids[0]}/ws") as ws_a, \
            client.websocket_connect(f"/v1/streams/{sids[1]}/ws") as ws_b:
        for i in range(3):
            ws_a.send_json({"type": "question", "request_id": f"a{i}", "question": "hi"})
        assert wait_until(lambda: queue.running == 1 and queue.queued == 2, 10)
        ws_b.send_json({"type": "question", "request_id": "b0", "question": "hi"})
        assert wait_until(lambda: queue.queued == 3, 10)
        double.gate.set()
        answers_a = [m for m in (ws_a.receive_json() for _ in range(12)) if m["type"] == "answer"]
        answers_b = [m for m in (ws_b.receive_json() for _ in range(4)) if m["type"] == "answer"]
    assert len(answers_a) == 3 and len(answers_b) == 1
    a, b = f"stream:{sids[0]}", f"stream:{sids[1]}"
    assert list(queue.order)[-4:] == [a, b, a, a]
