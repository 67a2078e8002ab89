"""The engine boundary (`streamvqa/engine/protocols.py`): the embedded engine, the multi-process
facade and the server's test double all implement `Engine` / `Session`, member for member and
with the same signatures, so one cannot drift from the other."""

from __future__ import annotations

import ast
import asyncio
import inspect
import textwrap
import threading
from collections.abc import Generator

import numpy as np
import pytest

from streamvqa.engine import protocols
from streamvqa.engine.engine import Engine
from streamvqa.engine.errors import EngineError
from streamvqa.engine.session import StreamSession
from streamvqa.engine.types import Answer, TokenEvent
from streamvqa.workers.multi.facade import MultiEngine, RemoteSession
from tests.server.doubles import EngineDouble, SessionDouble

IMPLEMENTATIONS = [
    (protocols.Engine, Engine),
    (protocols.Engine, MultiEngine),
    (protocols.Engine, EngineDouble),
    (protocols.Session, StreamSession),
    (protocols.Session, RemoteSession),
    (protocols.Session, SessionDouble),
]
IDS = [impl.__name__ for _, impl in IMPLEMENTATIONS]


def _methods(proto: type) -> dict[str, object]:
    return {n: v for n, v in vars(proto).items() if not n.startswith("_") and inspect.isfunction(v)}


def _params(fn: object) -> list[tuple[str, object, object]]:
    """Name, kind and default of every parameter (annotations differ: a concrete class returns
    its own session type where the protocol says `Session`)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]  # type: ignore[arg-type]


def _instance_attributes(cls: type) -> set[str]:
    """Attributes a class sets on `self` in `__init__`, its class attributes and properties."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls.__init__)))
    assigned = {
        t.attr for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign))
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
    }
    return assigned | {n for c in cls.__mro__ for n in vars(c)}


def test_protocols_name_the_boundary() -> None:
    assert set(_methods(protocols.Session)) == {"push_frame", "stats", "events", "answer", "ask", "close"}
    assert set(protocols.Session.__annotations__) == {"stream_id", "method", "closed"}
    assert set(_methods(protocols.Engine)) == {"methods", "model_info", "open_stream", "get", "close_stream",
                                               "health", "collectors", "tokenizer", "close"}
    assert set(protocols.Engine.__annotations__) == {"observers"}


@pytest.mark.parametrize(("proto", "impl"), IMPLEMENTATIONS, ids=IDS)
def test_methods_have_the_protocols_signatures(proto: type, impl: type) -> None:
    for name, fn in _methods(proto).items():
        assert callable(getattr(impl, name, None)), f"{impl.__name__}.{name} is missing"
        assert _params(getattr(impl, name)) == _params(fn), f"{impl.__name__}.{name} differs from {proto.__name__}"


@pytest.mark.parametrize(("proto", "impl"), IMPLEMENTATIONS, ids=IDS)
def test_attributes_are_set(proto: type, impl: type) -> None:
    missing = set(proto.__annotations__) - _instance_attributes(impl)
    assert not missing, f"{impl.__name__} does not set {sorted(missing)}"


def test_instances_satisfy_the_protocols(engine: Engine) -> None:
    """runtime_checkable on live objects: the embedded engine and session, a remote session
    handle (not opened: no worker needed), the test doubles."""
    assert isinstance(engine, protocols.Engine)
    session = engine.open_stream("proto-check")
    try:
        assert isinstance(session, protocols.Session)
        assert isinstance(engine.get("proto-check"), protocols.Session)
    finally:
        engine.close_stream("proto-check")
    assert isinstance(RemoteSession(None, "s", "rekv", {}, "encoder"), protocols.Session)  # type: ignore[arg-type]
    double = EngineDouble()
    assert isinstance(double, protocols.Engine)
    assert isinstance(double.open_stream("s"), protocols.Session)


def test_embedded_capabilities(engine: Engine) -> None:
    """What the server asks of an engine instead of probing it: the in-process store has
    nothing to report, no extra collectors, the model's own tokenizer."""
    assert engine.health() == {"ok": True, "degraded": [], "note": "in-process store"}
    assert engine.collectors() == []
    assert engine.tokenizer() is engine.adapter.tokenizer


@pytest.mark.parametrize("cls", [StreamSession, RemoteSession], ids=lambda c: c.__name__)
def test_abandoned_ask_closes_its_events(cls: type) -> None:
    """Both sessions' `ask` is the one wrapper (`stream_in_thread`): a question abandoned after
    its first token closes the blocking iterator (the remote one cancels the worker's answer)."""
    closed = threading.Event()

    def events(question: str, **kwargs: object) -> Generator[TokenEvent | Answer, None, None]:
        try:
            for k in range(100):
                yield TokenEvent(f"t{k}", k, k)
        finally:
            closed.set()

    session = cls.__new__(cls)  # only `ask` runs: no model, no worker
    session.events = events

    async def abandon() -> TokenEvent:
        it = session.ask("q", max_tokens=100)
        first = await it.__anext__()
        await it.aclose()
        return first

    assert asyncio.run(abandon()) == TokenEvent("t0", 0, 0)
    assert closed.is_set()


def test_stream_in_thread_yields_everything_in_order() -> None:
    async def read() -> list[int]:
        return [x async for x in protocols.stream_in_thread(iter_gen(5))]

    def iter_gen(n: int) -> Generator[int, None, None]:
        yield from range(n)

    assert asyncio.run(read()) == [0, 1, 2, 3, 4]


def test_final_answer() -> None:
    answer = Answer("a", [1], [(0.0, 1.0)], {}, "stop")
    assert protocols.final_answer([TokenEvent("a", 1, 0), answer]) is answer
    with pytest.raises(EngineError) as e:
        protocols.final_answer([TokenEvent("a", 1, 0)])
    assert e.value.code == "internal_error"


def test_embedded_session_answers_through_the_protocol(engine: Engine) -> None:
    """`answer` is the last event of `events`, token for token (the tiny model, greedy)."""
    session = engine.open_stream("proto-answer")
    try:
        rng = np.random.default_rng(0)
        for i in range(4):
            session.push_frame(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), float(i))
        evs = list(session.events("what is shown?", max_tokens=4))
        tokens = [e.token_id for e in evs if isinstance(e, TokenEvent)]
        final = evs[-1]
        assert isinstance(final, Answer) and final.token_ids == tokens
        assert session.answer("what is shown?", max_tokens=4).token_ids == tokens
    finally:
        engine.close_stream("proto-answer")


def test_remote_ingest_does_not_import_the_facade() -> None:
    """The handle needs only `IngestHost` (which `RemoteSession` implements): no import cycle."""
    import streamvqa.workers.multi.remote_ingest as remote_ingest

    tree = ast.parse(inspect.getsource(remote_ingest))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "streamvqa.workers.multi.facade" not in imported
    host = RemoteSession(None, "s", "rekv", {}, "encoder")  # type: ignore[arg-type]
    for name in ("stream_id", "encoder"):
        assert hasattr(host, name)
    for name, fn in _methods(remote_ingest.IngestHost).items():
        assert _params(getattr(RemoteSession, name)) == _params(fn)
