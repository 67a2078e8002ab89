"""Fixtures shared by every test package (helpers in tests/helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import pytest

from tests.helpers import ServeProcess


@pytest.fixture
def serve_process() -> Iterator[Callable[..., ServeProcess]]:
    """Start ``streamvqa serve`` subprocesses: ``serve_process(args, env)`` -> `ServeProcess`
    (not yet waited on: ``wait_ready(timeout)``). Every one still running is stopped at teardown."""
    started: list[ServeProcess] = []

    def start(args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> ServeProcess:
        server = ServeProcess(args, env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# Fixtures that start processes (redis-server, the RTSP test server, `streamvqa serve`, worker
# clusters) or load the real SmolLM2: every test using one, directly or through another fixture,
# is marked ``slow`` here. Tests that spawn processes themselves carry the marker in their module
# (tests/test_slow_markers.py checks both).
PROCESS_FIXTURES = frozenset({"redis_server", "rtsp_server_ctl", "real_lm", "durable_cluster", "serve_process"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
