"""vqa_inter_token_latency_seconds counts gaps between consecutive tokens only (vLLM's ITL)."""

from __future__ import annotations

from pathlib import Path

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
