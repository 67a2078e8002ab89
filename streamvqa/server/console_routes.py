"""The web console (``/console``: static files shipped in the package) and the frame pictures it
shows (``/v1/streams/{id}/frames...``: thumbnails kept by :mod:`.thumbnails`).

The console's files are public (they hold no data; everything they show comes from the keyed
API); a Content-Security-Policy keeps the page to this origin, so nothing is fetched from
elsewhere at run time. The frame endpoints follow the streams' rules: the owner's key only, a
stream of another key is ``unknown_stream`` like one that does not exist.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse

from streamvqa.proto import ApiError, ErrorBody

from .auth import ANONYMOUS, Principal

#: the console's files and their media types (anything else under /console is 404)
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
#: same origin only: scripts, styles, API calls and WebSockets ('self' covers ws(s) of this host),
#: pictures from blob: URLs (thumbnails are fetched with the key), the camera preview as a stream
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' blob: data:; "
       "media-src 'self' blob: mediastream:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
ASSET_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
JPEG_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}}, "description": "the JPEG; `X-Frame-Time`: its stream time (s)"},
    **{status: {"model": ErrorBody} for status in (401, 404, 422, 503)},
}


def load_assets() -> dict[str, bytes]:
    root = resources.files("streamvqa.server") / "console"
    return {name: (root / name).read_bytes() for name in ASSETS}


def _owner(request: Request) -> str | None:
    p = getattr(request.state, "principal", None)
    return (p if isinstance(p, Principal) else ANONYMOUS).owner


def _jpeg(thumb: Any) -> Response:
    return Response(thumb.jpeg, media_type="image/jpeg",
                    headers={"X-Frame-Time": f"{thumb.t:.3f}", "Cache-Control": "private, no-store"})


def console_router(state: Any) -> APIRouter:
    """The console and the frame endpoints; ``state``: the app's ``ServerState``."""
    router = APIRouter()
    assets = load_assets()

    @router.get("/console", include_in_schema=False)
    async def console_root() -> Response:
        return RedirectResponse("console/", status_code=307)  # relative: works behind a path prefix

    @router.get("/console/", include_in_schema=False)
    async def console_index() -> Response:
        return Response(assets["index.html"], media_type=ASSETS["index.html"], headers=ASSET_HEADERS)

    @router.get("/console/{name}", include_in_schema=False)
    async def console_asset(name: str) -> Response:
        if name not in ASSETS:
            raise ApiError("not_found", "no such console file")
        return Response(assets[name], media_type=ASSETS[name], headers=ASSET_HEADERS)

    def thumbnails_of(request: Request, stream_id: str) -> Any:
        entry = state.require().get(stream_id, _owner(request))  # unknown_stream for another key's
        return entry.thumbnails

    @router.get("/v1/streams/{stream_id}/frames", tags=["streams"],
                responses={status: {"model": ErrorBody} for status in (401, 404, 503)})
    async def list_frames(request: Request, stream_id: str) -> dict[str, Any]:
        """The stream times of the thumbnails kept (``cited``: an answer's evidence), and the
        bytes they and all streams' take against ``thumbnail_budget_bytes``."""
        store = thumbnails_of(request, stream_id)
        frames = store.index(stream_id) if store is not None else []
        return {"frames": frames, "bytes": sum(int(f["bytes"]) for f in frames),
                "total_bytes": store.nbytes if store is not None else 0,
                "budget_bytes": store.budget_bytes if store is not None else 0}

    @router.get("/v1/streams/{stream_id}/frames/latest.jpg", tags=["streams"], response_class=Response,
                responses=JPEG_RESPONSES)
    async def latest_frame(request: Request, stream_id: str) -> Response:
        """A small JPEG of the stream's latest delivered frame (``not_found`` before the first)."""
        store = thumbnails_of(request, stream_id)
        thumb = store.latest(stream_id) if store is not None else None
        if thumb is None:
            raise ApiError("not_found", "no frame of this stream is kept (yet)")
        return _jpeg(thumb)

    @router.get("/v1/streams/{stream_id}/frames/at.jpg", tags=["streams"], response_class=Response,
                responses=JPEG_RESPONSES)
    async def frame_at(
        request: Request, stream_id: str,
        t: Annotated[float, Query(ge=0, le=1e9, description="stream time (s), e.g. an evidence range's t_start")],
    ) -> Response:
        """The kept thumbnail nearest stream time ``t`` (``X-Frame-Time`` says which)."""
        store = thumbnails_of(request, stream_id)
        thumb = store.nearest(stream_id, t) if store is not None else None
        if thumb is None:
            raise ApiError("not_found", "no frame of this stream is kept (yet)")
        return _jpeg(thumb)

    return router
