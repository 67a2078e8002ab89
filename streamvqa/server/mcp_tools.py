"""MCP (Model Context Protocol) tools at ``/mcp``: the REST API's streams and questions for agents.

Streamable HTTP transport of the official ``mcp`` SDK, stateless (every POST stands alone: no
session to pin to a replica, nothing to expire) with JSON responses. Each tool calls the same
services as its REST endpoint (stream registry + URL policy, :class:`~.answers.AnswerService`
with its limits and fair queue, the key's question rate). :class:`~.auth.AuthMiddleware` has
already refused a request without a valid key (401) before the SDK sees it; the caller is the
principal it put on the request, so a key sees and asks only its own streams. A tool error is
``is_error`` with the REST error body as text: ``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import functools
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ValidationError
from starlette.routing import Route

from streamvqa.proto import (
    AnswerResponse,
    ApiError,
    ErrorBody,
    EvidenceRange,
    QuestionRequest,
    StreamCreate,
    StreamInfo,
    StreamList,
)

from .auth import ANONYMOUS, Principal
from .errors import new_request_id, public_error, validation_message
from .registry import StreamEntry, failed_stream_error
from .sources import precheck_source

if TYPE_CHECKING:
    from .app import ServerState

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
INSTRUCTIONS = (
    "streamvqa answers questions about live video streams. add_stream starts watching a source URL "
    "(rtsp, rtsps, http, https, file); ask_stream answers about everything the stream showed so far "
    "(or up to stream time `at`); stream_evidence gives the stream time ranges an answer drew on. "
    "Errors carry a stable code: {\"error\": {\"code\", \"message\"}}."
)


class Deleted(BaseModel):
    deleted: str


class Methods(BaseModel):
    methods: list[str]
    default: str


class EvidenceResult(BaseModel):
    """``stream_evidence``: which question and answer the evidence belongs to, and the ranges."""

    question: str
    answer: str
    evidence: list[EvidenceRange]


@dataclass
class _Last:
    """The last answer ``ask_stream`` gave on a stream (dropped with the stream's entry)."""

    entry: weakref.ref[StreamEntry]
    question: str
    response: AnswerResponse


class McpTools:
    """The tools, bound to the app's shared state. ``public_info`` renders a stream as REST does."""

    def __init__(self, state: ServerState, public_info: Callable[[StreamEntry], StreamInfo],
                 redact: Callable[[str], str]) -> None:
        self.state = state
        self.public_info = public_info
        self.redact = redact
        self._last: dict[str, _Last] = {}
        self.server: MCPServer = _quiet_server()
        self._register()
        http = self.server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            stateless_http=True,
            json_response=True,
            max_request_body_size=state.settings.max_body_bytes,
            # The SDK's DNS-rebinding check (Host/Origin must be loopback) on a loopback bind with auth
            # off, where nothing else stops a web page; with keys on, the key is the check (as for
            # REST) and a reverse proxy's Host header is served.
            transport_security=None if not state.auth.enabled else TransportSecuritySettings(
                enable_dns_rebinding_protection=False),
            host=state.settings.host,
        )
        # POST only: stateless, the server never starts a message, so there is no GET event stream
        # to hold open and no session to DELETE; those get the API's 405 ``method_not_allowed``.
        [sdk_route] = [r for r in http.routes if isinstance(r, Route) and r.path == MCP_PATH]
        self.routes: list[Route] = [Route(MCP_PATH, sdk_route.endpoint, methods=["POST"], include_in_schema=False)]

    def lifespan(self) -> Any:
        """The SDK's session manager (its task group serves every request); run it inside the app's lifespan."""
        return self.server.session_manager.run()

    # -- plumbing -----------------------------------------------------------------------------

    def _tool(self, annotations: ToolAnnotations) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
        """Register a tool whose body may raise :class:`ApiError` (and pydantic's ``ValidationError``
        from the API models): the result is then ``is_error`` with exactly the REST error body as
        text (the SDK would prefix a raised error's text). Success: the model as structured content."""

        def register(fn: Callable[..., Awaitable[Any]]) -> Any:
            @functools.wraps(fn)  # the SDK reads the arguments and output schema through __wrapped__
            async def run(*args: Any, **kwargs: Any) -> CallToolResult:
                try:
                    result = await fn(*args, **kwargs)
                except ApiError as e:
                    return self._error(e)
                except ValidationError as e:
                    return self._error(ApiError("invalid_request", validation_message(e.errors())))
                except Exception:  # a bug: as REST, a generic message and an id to find the log entry
                    rid = new_request_id()
                    log.exception("internal_error request_id=%s: MCP tool %s", rid, fn.__name__)
                    return error_result(ErrorBody.of("internal_error", "internal server error", rid))
                data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
                return CallToolResult(content=[TextContent(type="text", text=json.dumps(data))],
                                      structured_content=data)

            self.server.add_tool(run, annotations=annotations)
            return run

        return register

    def _error(self, e: ApiError) -> CallToolResult:
        return error_result(public_error(e.code, e.message, e.status, self.redact)[0])

    def _principal(self, ctx: Context) -> Principal:
        """The caller :class:`~.auth.AuthMiddleware` put on this tool call's HTTP request (none with
        auth on: refused, never every stream's ANONYMOUS)."""
        p = getattr(getattr(ctx.request_context.request, "state", None), "principal", None)
        if isinstance(p, Principal):
            return p
        if self.state.auth.enabled:
            raise ApiError("unauthorized", "a valid API key is required (Authorization: Bearer <key>)")
        return ANONYMOUS

    def _remember(self, entry: StreamEntry, question: str, response: AnswerResponse) -> None:
        self._last = {k: v for k, v in self._last.items() if v.entry() is not None}  # forget deleted streams
        self._last[entry.id] = _Last(weakref.ref(entry), question, response)

    async def _ask(self, principal: Principal, stream_id: str, question: str, at: float | None,
                   max_tokens: int | None) -> AnswerResponse:
        """``POST /v1/streams/{id}/questions``'s path: ownership, the key's rate, AnswerService."""
        state = self.state
        entry = state.require().get(stream_id, principal.owner)
        req = QuestionRequest(question=question, at=at, max_tokens=max_tokens)
        state.take_question(principal)
        try:
            response = await state.answers.answer(entry, req)
        except ApiError as e:
            raise failed_stream_error(entry, e) from None
        self._remember(entry, question, response)
        return response

    # -- the tools ----------------------------------------------------------------------------

    def _register(self) -> None:
        state = self.state
        reads = ToolAnnotations(read_only_hint=True, open_world_hint=False)
        asks = ToolAnnotations(read_only_hint=True, idempotent_hint=False, open_world_hint=False)

        @self._tool(reads)
        async def list_streams(ctx: Context) -> StreamList:
            """The streams of your API key, with their ingest state and counters."""
            entries = state.require().list(self._principal(ctx).owner)
            return StreamList(streams=[self.public_info(e) for e in entries])

        @self._tool(ToolAnnotations(destructive_hint=False, idempotent_hint=False, open_world_hint=True))
        async def add_stream(ctx: Context, url: str, method: str | None = None, fps: float | None = None,
                             name: str | None = None, options: dict[str, Any] | None = None,
                             probe: bool = False) -> StreamInfo:
            """Start watching a video source: rtsp://, rtsps://, http(s):// (MP4, HLS, MJPEG), file:// or a
            path under the server's media root. ``method``: a preset (list_methods; server default if
            omitted); ``fps``: frames sampled per second of stream time; ``options``: the method's options;
            ``probe``: open the source and decode a frame before answering. Returns the stream; its ``id``
            names it in the other tools."""
            streams = state.require()
            req = StreamCreate(url=url, method=method, fps=fps, name=name, options=options)
            precheck_source(req.url, state.policy)
            return self.public_info(await streams.create(req, probe=probe, principal=self._principal(ctx)))

        @self._tool(reads)
        async def get_stream(ctx: Context, stream_id: str) -> StreamInfo:
            """One of your streams: state, frames encoded, newest stream time, memory, last source error."""
            return self.public_info(state.require().get(stream_id, self._principal(ctx).owner))

        @self._tool(asks)
        async def ask_stream(ctx: Context, stream_id: str, question: str, at: float | None = None,
                             max_tokens: int | None = None) -> AnswerResponse:
            """Answer a question about everything the stream showed so far. ``at``: a stream time (s) to
            wait for before answering. The answer carries its evidence: the stream time ranges it drew on."""
            return await self._ask(self._principal(ctx), stream_id, question, at, max_tokens)

        @self._tool(asks)
        async def stream_evidence(ctx: Context, stream_id: str, question: str | None = None,
                                  at: float | None = None) -> EvidenceResult:
            """The evidence (stream time ranges, with source and wall-clock times) of the last answer
            ask_stream gave on this stream, or, given ``question`` (and ``at``), of a new answer to it."""
            principal = self._principal(ctx)
            if question is not None:
                r = await self._ask(principal, stream_id, question, at, None)
                return EvidenceResult(question=question, answer=r.answer, evidence=r.evidence)
            entry = state.require().get(stream_id, principal.owner)
            last = self._last.get(stream_id)
            if last is None or last.entry() is not entry:
                raise ApiError("not_found", f"no answer on stream {stream_id!r} yet: ask_stream first, or pass a question")
            return EvidenceResult(question=last.question, answer=last.response.answer, evidence=last.response.evidence)

        @self._tool(ToolAnnotations(destructive_hint=True, idempotent_hint=False, open_world_hint=False))
        async def delete_stream(ctx: Context, stream_id: str) -> Deleted:
            """Stop watching a stream and free its memory."""
            await state.require().delete(stream_id, self._principal(ctx).owner)
            self._last.pop(stream_id, None)
            return Deleted(deleted=stream_id)

        @self._tool(reads)
        async def list_methods() -> Methods:
            """The method presets add_stream accepts, and the default."""
            streams = state.require()
            return Methods(methods=list(state.engine.methods()), default=streams.resolve_method(None))


def error_result(body: ErrorBody) -> CallToolResult:
    """A tool error: ``is_error`` with the REST error body as its text."""
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(body.model_dump()))], is_error=True)


class _Server(MCPServer):
    """The SDK server, with arguments that fail the tool's input schema reported as REST reports a
    bad body (``invalid_request``: field and reason, never the value) instead of the SDK's text."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as e:
            if isinstance(e, UnexpectedToolError) or not isinstance(e.__cause__, ValidationError):
                raise
            return error_result(ErrorBody.of("invalid_request", validation_message(e.__cause__.errors())))


def _quiet_server() -> MCPServer:
    """The SDK server, without the ``logging.basicConfig`` its constructor runs: the server's
    logging stays as the CLI / embedding application configured it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return _Server("streamvqa", version="0.1.0", instructions=INSTRUCTIONS)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
