"""Schemathesis against the generated OpenAPI: no input gives a 5xx (bounded: 25 examples per
operation, a time budget for the whole run). Needs ``schemathesis`` (skipped without it)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamvqa.server.app import create_app
from streamvqa.server.main import BackgroundServer
from tests.server.doubles import EngineDouble

from .conftest import ALICE, bearer, secure_settings

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")



@schemathesis.serializer("application/sdp")
def _sdp(_: object, value: object) -> bytes:
    """WHIP offers (``POST /v1/whip`` declares an ``application/sdp`` body): sent as text."""
    return (value if isinstance(value, str) else str(value)).encode("utf-8", "surrogatepass")


MAX_EXAMPLES = 25
BUDGET_S = 240.0
#: 503 only as ``not_ready`` would be allowed; the engine is attached, so no 5xx at all
ALLOWED_5XX: set[int] = set()


@pytest.fixture
def fuzz_server(tmp_path: Path, clip: Path) -> Iterator[BackgroundServer]:
    (tmp_path / "clip.mp4").write_bytes(clip.read_bytes())
    settings = secure_settings(tmp_path, host="127.0.0.1", port=0, log_level="warning", open_timeout_s=1.0,
                               max_streams=4, key_questions_per_minute=10_000)
    server = BackgroundServer(create_app(settings, engine=EngineDouble()), settings).start()
    try:
        yield server
    finally:
        server.stop()


def test_fuzz_openapi_no_5xx(fuzz_server: BackgroundServer) -> None:
    import httpx
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    spec = httpx.get(f"{fuzz_server.url}/openapi.json", headers=bearer(ALICE), timeout=10).json()
    schema = schemathesis.openapi.from_dict(spec)
    deadline = time.monotonic() + BUDGET_S
    failures: list[str] = []
    calls = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    def check(op, strategy) -> None:
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def run(data: st.DataObject) -> None:
            nonlocal calls
            if time.monotonic() > deadline:
                return
            case = data.draw(strategy)
            for headers in (bearer(ALICE), {}):
                resp = case.call(base_url=fuzz_server.url, headers=headers, timeout=15)
                calls += 1
                if resp.status_code >= 500 and resp.status_code not in ALLOWED_5XX:
                    failures.append(f"{op.method.upper()} {op.path}: {resp.status_code} {resp.text[:300]} "
                                    f"<- {case.path_parameters} {case.query} {str(case.body)[:200]}")
                if not headers and op.path not in ("/health", "/ready"):
                    assert resp.status_code == 401, (op.path, resp.status_code)

        run()

    for op in operations:
        check(op, op.as_strategy())
    print(f"fuzz: {calls} calls over {len(operations)} operations")
    assert calls >= 4 * len(operations), calls
    assert not failures, "\n".join(failures[:20])
    assert httpx.get(f"{fuzz_server.url}/health", timeout=5).status_code == 200
