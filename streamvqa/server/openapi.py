"""The OpenAPI document's security: an HTTP bearer scheme on every keyed operation, so Swagger
UI's *Authorize* button sends the API key (``/docs`` and ``/openapi.json`` themselves need no
key; see docs/security.md)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from fastapi import FastAPI

BEARER = "bearerAuth"
SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "an API key (`streamvqa keys new`): `Authorization: Bearer <key>`",
}


def declare_bearer_security(app: FastAPI, public: Collection[str], optional: Collection[str]) -> None:
    """Wrap ``app.openapi`` so the document declares :data:`SCHEME` and requires it on every
    operation but those under ``public`` paths (none) and ``optional`` ones (key or none)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()  # FastAPI caches it in app.openapi_schema
            schema.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER] = SCHEME
            for path, operations in schema.get("paths", {}).items():
                if path in public:
                    continue
                for op in operations.values():
                    op["security"] = [{BEARER: []}, {}] if path in optional else [{BEARER: []}]
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
