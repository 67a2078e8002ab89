"""vqa_inter_token_latency_seconds counts gaps between consecutive tokens only (vLLM's ITL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import wait_stream
from .test_metrics_ready import samples

ITL_COUNT = "vqa_inter_token_latency_seconds_count"


def test_itl_counts_only_gaps_between_tokens(client, clip: Path) -> None:
    sid = client.post("/v1/streams", json={"url": clip.as_uri()}).json()["id"]
    wait_stream(client, sid, lambda s: s["state"] == "ended")
    one = client.post(f"/v1/streams/{sid}/questions", json={"question": "what?", "max_tokens": 1}).json()
    assert one["tokens"] == 1
    s = samples(client.get("/metrics").text)
    assert s[ITL_COUNT] == 0  # a one-token answer has no gap between tokens
    assert s["vqa_time_to_first_token_seconds_count"] == 1
    more = client.post(f"/v1/streams/{sid}/questions", json={"question": "what?", "max_tokens": 4}).json()
    assert samples(client.get("/metrics").text)[ITL_COUNT] == max(0, more["tokens"] - 1)


class TokenGaps:
    """An engine observer that records the ITL samples the engine reports."""

    def __init__(self) -> None:
        self.gaps: list[float] = []

    def on_token(self, stream_id: str, seconds_since_prev: float) -> None:
        self.gaps.append(seconds_since_prev)

    def on_answer(self, stream_id: str, answer: object) -> None:
        pass

    def on_unit_encoded(self, stream_id: str, seconds: float, frames: int) -> None:
        pass


@pytest.mark.slow
def test_itl_in_the_multi_topology(tmp_path_factory) -> None:
    """The multi facade reports the same: n-1 gaps for n tokens (real worker processes)."""
    from tests.multiproc.conftest import frames, prefix, start_cluster, stop_cluster

    store = {"tiers": [{"kind": "host", "budget_bytes": 64 << 20, "shm_prefix": prefix("itl")}]}
    cluster = start_cluster(store)
    gaps = TokenGaps()
    cluster.observers.append(gaps)
    try:
        session = cluster.open_stream("itl", "rekv", {})
        for i, f in enumerate(frames(4, seed=2)):
            session.push_frame(f, i * 0.5)
        assert len(session.answer("what is shown?", max_tokens=1).token_ids) == 1
        assert gaps.gaps == []
        n = len(session.answer("what is shown?", max_tokens=4).token_ids)
        assert len(gaps.gaps) == max(0, n - 1)
    finally:
        stop_cluster(cluster)
