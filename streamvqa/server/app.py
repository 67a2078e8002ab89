"""``create_app(settings, engine=None) -> FastAPI``: the REST, WebSocket, WHIP and ops endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from streamvqa.cluster import mount as mount_cluster
from streamvqa.engine.protocols import Engine
from streamvqa.proto import (
    AnswerResponse,
    ApiError,
    ErrorBody,
    QuestionRequest,
    StreamCreate,
    StreamInfo,
    StreamList,
)

from .answers import AnswerService
from .auth import ANONYMOUS, PUBLIC_PATHS, READY_PATH, Authenticator, AuthMiddleware, Principal, ws_token
from .console_routes import console_router
from .cors import CorsMiddleware
from .errors import BodyLimitMiddleware, Redactor, install_error_handlers
from .limits import KeyedLimiter
from .mcp_tools import McpTools
from .metrics import ServerMetrics, StreamCollector, render
from .openai_compat import OpenAIErrorShape, install_routes
from .openapi import declare_bearer_security
from .question_tokens import Counter, question_counter
from .registry import StreamEntry, StreamRegistry, failed_stream_error
from .settings import ServerSettings
from .sources import precheck_source
from .urlpolicy import UrlPolicy
from .ws import CLOSE_UNAUTHORIZED, WsConnection

log = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 403, 404, 409, 413, 422, 429, 500, 503, 504)
}


def load_engine(settings: ServerSettings) -> Engine:
    """Build the engine the settings name: in-process (embedded), or the worker processes behind
    an engine-shaped facade (multi; see docs/processes.md). The API code is the same for both."""
    if settings.topology == "multi":
        from streamvqa.workers.multi.facade import MultiEngine

        return MultiEngine(multi_config(settings))
    from streamvqa.engine import EngineConfig
    from streamvqa.engine.engine import Engine as EmbeddedEngine

    return EmbeddedEngine(
        EngineConfig(
            model=settings.model,
            device=settings.device,
            dtype=settings.dtype,
            max_question_chars=settings.max_question_chars,
            max_new_tokens=settings.max_tokens,
            threads=settings.threads,
            store=settings.store_config(),
            answer_engine=settings.answer_engine,
            vllm=settings.vllm_options(),
            encode=settings.encode_config(),
        )
    )


def multi_config(settings: ServerSettings) -> Any:
    """The worker processes' shared configuration, from the server settings."""
    from streamvqa.workers.multi.config import MultiConfig, default_run_dir

    enc = [d.strip() for d in (settings.encoder_device or settings.device).split(",") if d.strip()]
    ans = [d.strip() for d in (settings.answer_device or settings.device).split(",") if d.strip()]
    return MultiConfig(
        model=settings.model,
        dtype=settings.dtype,
        encoder_device=enc[0],
        answer_device=ans[0],
        encoder_devices=enc,
        answer_devices=ans,
        threads=settings.threads,
        max_question_chars=settings.max_question_chars,
        max_new_tokens=settings.max_tokens,
        answer_engine=settings.answer_engine,
        vllm=settings.vllm_options(),
        store=settings.store_config(),
        run_dir=settings.run_dir or default_run_dir(),
        transport=settings.worker_transport,
        tcp_base_port=settings.worker_base_port,
        start_timeout_s=settings.worker_start_timeout_s,
        spawn=settings.worker_spawn,
    )


def question_slots(settings: ServerSettings) -> int:
    """Questions the model works on at once: the setting, else one per answer worker (one
    model lock each), one embedded (more would only interleave tokens under the one lock); with
    vLLM, what its engines decode at once (one vLLM per answer worker in multi)."""
    if settings.question_slots is not None:
        return settings.question_slots
    workers = 1
    if settings.topology == "multi":
        workers = len([d for d in (settings.answer_device or settings.device).split(",") if d.strip()]) or 1
    if settings.answer_engine == "vllm":  # vLLM batches decoding across the questions in flight
        return settings.vllm_max_num_seqs * workers
    return workers


@dataclass
class ServerState:
    """What the endpoints share; ``engine``/``streams`` are None until the model has loaded."""

    settings: ServerSettings
    metrics: ServerMetrics
    registry: CollectorRegistry
    answers: AnswerService
    auth: Authenticator
    policy: UrlPolicy
    question_limiter: KeyedLimiter = field(default_factory=KeyedLimiter)
    engine: Engine | None = None
    streams: StreamRegistry | None = None
    load_error: str | None = None
    owns_engine: bool = False
    loaded: asyncio.Event = field(default_factory=asyncio.Event)

    def token_counter(self, engine: Engine) -> Counter:
        """The question token counter (multi: loads the tokenizer; call off the event loop)."""
        return question_counter(engine.tokenizer(), self.settings.model, self.settings.topology == "multi")

    def attach(self, engine: Engine, count_tokens: Counter | None = None) -> None:
        self.engine = engine
        self.streams = StreamRegistry(engine, self.settings, self.policy)
        self.streams.start_reaper()
        self.answers.count_tokens = count_tokens or self.token_counter(engine)
        engine.observers.append(self.metrics)
        self.registry.register(StreamCollector(self.streams, lambda: self.device, self.metrics.encode_drops))
        for collector in engine.collectors():  # topology-specific (multi: workers)
            self.registry.register(collector)
        self.loaded.set()

    @property
    def device(self) -> str:
        info = self.model_info()
        return str(info.get("device") or self.settings.device)

    def model_info(self) -> dict[str, Any]:
        if self.engine is None:
            return {}
        try:
            return dict(self.engine.model_info())
        except Exception:
            return {}

    def require(self) -> StreamRegistry:
        if self.streams is None:
            msg = self.load_error or "the model is still loading"
            raise ApiError("not_ready", msg)
        return self.streams

    def take_question(self, principal: Principal) -> None:
        """Count one question against the key's per-minute rate; ``rate_limited`` when spent."""
        if principal.owner is not None and not self.question_limiter.take(
            principal.owner, principal.questions_per_minute
        ):
            raise ApiError(
                "rate_limited", f"at most {principal.questions_per_minute} questions per minute for this API key"
            )


def principal_of(request: Request) -> Principal:
    """The caller :class:`~.auth.AuthMiddleware` identified (ANONYMOUS with auth off)."""
    p = getattr(request.state, "principal", None)
    return p if isinstance(p, Principal) else ANONYMOUS


def create_app(settings: ServerSettings | None = None, engine: Engine | None = None) -> FastAPI:
    """The streamvqa API. With ``engine=None`` the engine is built from ``settings`` in the
    background at startup (``/health`` answers meanwhile, ``/ready`` says 503 until loaded);
    a given engine is used as is and not closed on shutdown."""
    settings = settings or ServerSettings()
    registry = CollectorRegistry(auto_describe=True)
    metrics = ServerMetrics(registry, settings.model)
    auth = Authenticator(settings)  # ValueError on unreadable / malformed keys
    # auth off is announced once by the caller (`serve`'s banner, `demo`'s line), not here
    answers = AnswerService(settings, metrics, in_flight_cap=auth.in_flight_cap, slots=question_slots(settings))
    state = ServerState(settings, metrics, registry, answers, auth, UrlPolicy(settings))

    async def _load() -> None:
        try:
            eng = await asyncio.to_thread(load_engine, settings)
            counter = await asyncio.to_thread(state.token_counter, eng)
        except Exception as e:
            log.exception("engine failed to load")
            state.load_error = f"model failed to load ({type(e).__name__}; the server log has the detail)"
            state.loaded.set()
            return
        state.owns_engine = True
        state.attach(eng, counter)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = None
        if engine is not None:
            state.attach(engine)
        else:
            loader = asyncio.create_task(_load())
        try:
            async with mcp.lifespan():  # the MCP transport's task group; ends before streams close
                yield
        finally:
            if loader is not None and not loader.done():
                loader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await loader
            if state.streams is not None:
                await state.streams.close_all()
            if state.engine is not None:
                if metrics in state.engine.observers:
                    state.engine.observers.remove(metrics)
                if state.owns_engine:
                    await asyncio.to_thread(state.engine.close)

    app = FastAPI(
        title="streamvqa",
        version="0.1.0",
        summary="Question answering over live video streams",
        lifespan=lifespan,
    )
    app.state.server = state
    redact = Redactor(settings.media_root)
    install_error_handlers(app, redact)
    if auth.enabled:
        public = set(PUBLIC_PATHS) | ({"/metrics"} if settings.metrics_public else set())
        declare_bearer_security(app, public=public, optional={READY_PATH})

    def public_info(entry: StreamEntry) -> StreamInfo:
        """``StreamInfo`` with the source's last error free of media-root paths."""
        info = entry.info()
        if info.last_error is not None:
            info.last_error.message = redact(info.last_error.message)
        return info

    mcp = McpTools(state, public_info, redact)  # /mcp: the same services, keys and owners as REST
    app.router.routes.extend(mcp.routes)
    app.state.mcp = mcp
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    mount_cluster(app, state)  # replicas sharing a Redis (docs/scaling.md); nothing unless configured
    app.add_middleware(AuthMiddleware, auth=auth)  # nothing runs for a caller without a key
    app.add_middleware(OpenAIErrorShape)  # the OpenAI paths' 401/413/405 in OpenAI's error shape
    if settings.cors_allow_origins:  # outermost: preflights need no key
        app.add_middleware(CorsMiddleware, allow_origins=settings.cors_allow_origins,
                           allow_headers=settings.cors_allow_headers, max_age_s=settings.cors_max_age_s)
    install_routes(app, state, redact)  # /v1/chat/completions, /v1/models (OpenAI-compatible)
    app.include_router(console_router(state))  # /console and the frame thumbnails it shows

    # -- streams --------------------------------------------------------------------------------

    @app.post("/v1/streams", status_code=201, response_model=StreamInfo, responses=ERRORS, tags=["streams"])
    async def create_stream(
        request: Request,
        body: StreamCreate,
        probe: Annotated[bool, Query(description="open the source and decode a frame first")] = False,
    ) -> StreamInfo:
        """Start watching a stream (rtsp, rtsps, http, https, file). WebRTC: ``POST /v1/whip``.
        The URL must pass the URL policy (``url_forbidden``); the caller's key owns the stream.
        A URL that does not parse, an unsupported scheme or a missing file is refused at once."""
        streams = state.require()
        precheck_source(body.url, state.policy)
        entry = await streams.create(body, probe=probe, principal=principal_of(request))
        return public_info(entry)

    @app.get("/v1/streams", response_model=StreamList, responses=ERRORS, tags=["streams"])
    async def list_streams(request: Request) -> StreamList:
        """The caller's streams (every stream with auth off)."""
        return StreamList(streams=[public_info(e) for e in state.require().list(principal_of(request).owner)])

    @app.get("/v1/streams/{stream_id}", response_model=StreamInfo, responses=ERRORS, tags=["streams"])
    async def get_stream(request: Request, stream_id: str) -> StreamInfo:
        return public_info(state.require().get(stream_id, principal_of(request).owner))

    @app.delete("/v1/streams/{stream_id}", status_code=204, responses=ERRORS, tags=["streams"])
    async def delete_stream(request: Request, stream_id: str) -> Response:
        await state.require().delete(stream_id, principal_of(request).owner)
        return Response(status_code=204)

    @app.get("/v1/methods", responses=ERRORS, tags=["streams"])
    async def list_methods() -> dict[str, Any]:
        """Method presets the engine offers, and the default."""
        streams = state.require()
        return {"methods": list(state.engine.methods()), "default": streams.resolve_method(None)}

    # -- questions ------------------------------------------------------------------------------

    @app.post(
        "/v1/streams/{stream_id}/questions", response_model=AnswerResponse, responses=ERRORS, tags=["questions"]
    )
    async def ask(request: Request, stream_id: str, body: QuestionRequest) -> AnswerResponse:
        """Answer a question about everything the stream showed so far."""
        principal = principal_of(request)
        entry = state.require().get(stream_id, principal.owner)
        state.take_question(principal)
        try:
            return await state.answers.answer(entry, body)
        except ApiError as e:
            raise failed_stream_error(entry, e) from None

    @app.websocket("/v1/streams/{stream_id}/ws")
    async def ws(websocket: WebSocket, stream_id: str) -> None:
        """Many questions per connection; see :mod:`streamvqa.server.ws`. The API key comes in the
        ``Authorization`` header, a ``bearer.<key>`` subprotocol (browsers) or ``?token=``."""
        token, subprotocol = ws_token(websocket.scope)
        principal = auth.check(token)
        if principal is None:
            await websocket.accept(subprotocol)
            await websocket.send_json({"type": "error", "request_id": None,
                                       "error": {"code": "unauthorized", "message": "a valid API key is required"}})
            await websocket.close(CLOSE_UNAUTHORIZED, "unauthorized")
            return
        if state.streams is None:
            await websocket.accept(subprotocol)
            await websocket.send_json(
                {"type": "error", "request_id": None, "error": {"code": "not_ready", "message": "loading"}}
            )
            await websocket.close(1013)
            return
        await WsConnection(
            websocket, stream_id, state.streams, state.answers, principal=principal,
            take_question=state.take_question, subprotocol=subprotocol, redact=redact,
        ).run()

    # -- WHIP (RFC 9725) ------------------------------------------------------------------------

    @app.post(
        "/v1/whip",
        status_code=201,
        responses={201: {"content": {"application/sdp": {}}}, **ERRORS,
                   415: {"model": ErrorBody, "description": "the offer is not `application/sdp`"}},
        tags=["whip"],
        openapi_extra={"requestBody": {"required": True, "content": {"application/sdp": {"schema": {"type": "string"}}}}},
    )
    async def whip_publish(
        request: Request,
        method: str | None = None,
        fps: Annotated[float | None, Query(gt=0, le=120)] = None,
        name: str | None = None,
    ) -> Response:
        """WebRTC ingest: SDP offer in (``application/sdp``) -> ``201`` SDP answer + ``Location``."""
        streams = state.require()
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/sdp":
            raise ApiError("unsupported_media_type", "a WHIP offer must be sent as application/sdp")
        offer = (await request.body()).decode("utf-8", "replace")
        entry, answer = await streams.create_whip(
            offer, method=method, fps=fps, name=name, principal=principal_of(request)
        )
        return Response(
            answer,
            status_code=201,
            media_type="application/sdp",
            headers={"Location": f"/v1/whip/{entry.id}", "X-Stream-Id": entry.id},
        )

    @app.delete("/v1/whip/{stream_id}", responses=ERRORS, tags=["whip"])
    async def whip_delete(request: Request, stream_id: str) -> Response:
        """End a WHIP session: the stream stays, ``ended`` and answerable, until its owner deletes it
        (``DELETE /v1/streams/{id}``) or it is reaped; again on an ended session: 200."""
        await state.require().end_whip(stream_id, principal_of(request).owner)
        return Response(status_code=200)

    @app.patch("/v1/whip/{stream_id}", status_code=405, responses={405: {"model": ErrorBody}}, tags=["whip"])
    async def whip_patch(stream_id: str) -> JSONResponse:
        """Trickle ICE / ICE restart are not supported (non-trickle answers carry every candidate)."""
        raise ApiError("method_not_allowed", "trickle ICE is not supported", 405)

    # -- ops ------------------------------------------------------------------------------------

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def prometheus_metrics() -> Response:
        body = await asyncio.to_thread(render, registry, _collector(state))
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        """Liveness: the process and its event loop respond."""
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"])
    async def ready(request: Request) -> JSONResponse:
        """Readiness: model loaded, store reachable; degraded parts listed (still ready).
        With auth on and no valid key: only ``{"ready": bool}`` (for load-balancer probes)."""
        bare = auth.enabled and not isinstance(getattr(request.state, "principal", None), Principal)
        checks: dict[str, Any] = {}
        degraded: list[str] = []
        ok = state.engine is not None
        checks["model"] = {"ok": ok, **state.model_info()} if ok else {
            "ok": False, "error": state.load_error or "loading"}
        if state.engine is not None:
            store = _store_health(state.engine)
            checks["store"] = store
            if not store.get("ok", True):
                ok = False
            degraded += [f"store.{d}" for d in store.get("degraded", [])]
        if bare:  # exactly {"ready": bool}: no detail for callers without a key
            return JSONResponse({"ready": ok}, status_code=200 if ok else 503)
        body: dict[str, Any] = {"ready": ok, "degraded": degraded, "checks": checks}
        if not ok:
            body["error"] = {"code": "not_ready", "message": state.load_error or "not ready"}
        return JSONResponse(body, status_code=200 if ok else 503)

    return app


def _collector(state: ServerState) -> StreamCollector:
    if state.streams is None:
        return StreamCollector(StreamRegistry(None, state.settings, state.policy), lambda: state.settings.device)
    return StreamCollector(state.streams, lambda: state.device)


def _store_health(engine: Engine) -> dict[str, Any]:
    """The engine's store health (``engine.health()``); a failing probe is not ready."""
    try:
        h = dict(engine.health())
    except Exception as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    h.setdefault("ok", True)
    h.setdefault("degraded", [])
    return h
