from streamvqa.store import bench


def test_bench_quick_reports_every_tier(redis_url, shm_guard, capsys):
    out = bench.run(quick=True, redis_url=redis_url)
    assert out["block_bytes"] > 1 << 20 and out["blocks"] > 0
    for name in ("memcpy", "format", "shm", "shm_map", "disk", "redis", "tiered_host"):
        rates = out["results"][name]
        assert rates and all(v > 0 for v in rates.values()), name
    assert out["results"]["durable_redis"]["spilled"] == 0
    assert out["results"]["durable_spill"]["spilled"] == out["blocks"]  # Redis down: all spilled
    assert "MB/s" in capsys.readouterr().out
