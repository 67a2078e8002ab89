"""The cluster's one hook into the server app: middleware, ``GET /v1/cluster``, and the node's
start/stop around the app's own lifespan (the node stops first: streams are handed over before
the registry closes what is left)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request

from streamvqa.proto import ApiError

from .config import ClusterConfig
from .forward import ClusterMiddleware
from .node import Node


def mount(app: FastAPI, state: Any) -> Node | None:
    """Call between the body-limit and the API-key middlewares (the forwarder needs the caller)."""
    if not state.settings.cluster_redis_url:
        return None
    node = Node(state, ClusterConfig.from_settings(state.settings))
    app.state.cluster = node
    proxies: list[ClusterMiddleware] = []

    class _Middleware(ClusterMiddleware):
        def __init__(self, inner: Any) -> None:
            super().__init__(inner, node)
            proxies.append(self)

    app.add_middleware(_Middleware)

    @app.get("/v1/cluster", tags=["ops"])
    async def cluster_view(request: Request) -> dict[str, Any]:
        """Replicas, their streams and load (admin keys: ``cluster_admin_keys``; any caller with
        auth off). Other keys get ``not_found``: the path does not exist for them."""
        if state.auth.enabled:
            owner = getattr(getattr(request.state, "principal", None), "owner", None)
            if owner is None or owner not in node.cfg.admin_keys:
                raise ApiError("not_found", "Not Found")
        return await cluster_listing(node)

    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as value:
            await node.start()
            try:
                yield value
            finally:
                await node.stop()
                for p in proxies:
                    await p.aclose()

    app.router.lifespan_context = lifespan
    return node


async def cluster_listing(node: Node) -> dict[str, Any]:
    replicas = await node.dir.replicas()
    records = await node.dir.streams()
    out = []
    for r in replicas:
        mine = [s for s in records if s.replica == r.id]
        out.append({
            "id": r.id, "url": r.url, "alive": r.alive, "live_streams": r.streams, "encode_lag_s": r.lag_s,
            "updated_at": r.updated_at,
            "streams": [{"id": s.id, "state": s.state, "method": s.method, "owner": s.owner or None,
                         "epoch": s.epoch, "memory_bytes": s.memory_bytes, **s.adoption} for s in mine],
        })
    return {"replica": node.me, "member": node.member, "lease_s": node.cfg.lease_ms / 1000,
            "replicas": out, "streams": len(records)}
