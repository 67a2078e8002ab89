"""API keys: hashing, loading, checking, and the ASGI middleware that requires them.

A key is a bearer token (``Authorization: Bearer <key>``). Only hashes are stored:

* ``sha256$<hex>`` — for generated keys (``streamvqa keys new``: 32 random bytes, so a plain
  hash cannot be brute-forced and checking stays cheap);
* ``pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>`` — for keys people chose.

Keys come from ``settings.api_keys_file`` (``STREAMVQA_API_KEYS_FILE``) and/or
``settings.api_keys`` (``STREAMVQA_API_KEYS``). Either holds ``name:hash`` entries (one per line
or comma-separated; ``#`` comments) or JSON: ``[{"name", "hash", "max_streams"?,
"questions_per_minute"?, "max_memory_bytes"?, "max_questions_in_flight"?}]`` (or
``{"keys": [...]}``) for per-key quotas.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from streamvqa.proto import ApiError, ErrorBody

from .settings import ServerSettings

log = logging.getLogger(__name__)

PBKDF2_ITERATIONS = 200_000
#: paths anyone may call; ``/ready`` answers without details to callers without a key. The API
#: description (``/openapi.json``, Swagger UI, ReDoc) holds no secrets and every call from it
#: still needs a key (docs/security.md)
DOCS_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
PUBLIC_PATHS = frozenset({"/health"}) | DOCS_PATHS
READY_PATH = "/ready"
#: the web console's static files (no data in them; every call they make needs a key)
CONSOLE_PATH = "/console"
METRICS_PATH = "/metrics"
#: WebSocket subprotocol carrying the key for browsers: ``Sec-WebSocket-Protocol: bearer.<key>``
WS_TOKEN_PREFIX = "bearer."


def new_key() -> str:
    """A fresh random API key (``svqa_`` + 43 url-safe characters, 256 bits)."""
    return "svqa_" + secrets.token_urlsafe(32)


def hash_key(key: str, scheme: str = "sha256", iterations: int = PBKDF2_ITERATIONS) -> str:
    """The stored form of ``key``: ``sha256$...`` or salted ``pbkdf2_sha256$...``."""
    if not key:
        raise ValueError("empty key")
    if scheme == "sha256":
        return "sha256$" + hashlib.sha256(key.encode()).hexdigest()
    if scheme == "pbkdf2_sha256":
        salt = secrets.token_bytes(16)
        digest = hashlib.pbkdf2_hmac("sha256", key.encode(), salt, iterations)
        return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"
    raise ValueError(f"unknown hash scheme {scheme!r} (sha256 or pbkdf2_sha256)")


def check_hash_format(stored: str) -> None:
    """Raise ``ValueError`` unless ``stored`` is a hash :func:`verify_key` understands."""
    parts = stored.split("$")
    try:
        if parts[0] == "sha256" and len(parts) == 2:
            if len(bytes.fromhex(parts[1])) == 32:
                return
        elif parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            if int(parts[1]) >= 1000 and bytes.fromhex(parts[2]) and len(bytes.fromhex(parts[3])) == 32:
                return
    except ValueError:
        pass
    raise ValueError("not a key hash (expected sha256$<64 hex> or pbkdf2_sha256$<iter>$<salt>$<hash>)")


def verify_key(key: str, stored: str) -> bool:
    """Whether ``key`` hashes to ``stored`` (constant-time comparison)."""
    parts = stored.split("$")
    try:
        if parts[0] == "sha256" and len(parts) == 2:
            digest = hashlib.sha256(key.encode()).digest()
            return hmac.compare_digest(digest, bytes.fromhex(parts[1]))
        if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            digest = hashlib.pbkdf2_hmac("sha256", key.encode(), bytes.fromhex(parts[2]), int(parts[1]))
            return hmac.compare_digest(digest, bytes.fromhex(parts[3]))
    except ValueError:
        return False
    return False


@dataclass(frozen=True)
class ApiKey:
    """One configured key: its name (the owner of its streams), hash and quotas (None: defaults)."""

    name: str
    hash: str
    max_streams: int | None = None
    questions_per_minute: int | None = None
    max_memory_bytes: int | None = None
    max_questions_in_flight: int | None = None


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``owner`` is None with auth off (sees every stream, no per-key quotas)."""

    name: str
    owner: str | None
    max_streams: int | None = None
    questions_per_minute: int | None = None
    max_memory_bytes: int | None = None
    max_questions_in_flight: int | None = None


ANONYMOUS = Principal("anonymous", None)
#: per-key quota fields of the JSON keys format
QUOTAS = ("max_streams", "questions_per_minute", "max_memory_bytes", "max_questions_in_flight")


def _key_from_obj(obj: Any) -> ApiKey:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not isinstance(obj.get("hash"), str):
        raise ValueError('each JSON key needs "name" and "hash" strings')
    extra = set(obj) - {"name", "hash", *QUOTAS}
    if extra:
        raise ValueError(f"unknown key fields: {', '.join(sorted(extra))}")
    quotas = {}
    for field in QUOTAS:
        v = obj.get(field)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"{field} must be a positive integer")
        quotas[field] = v
    return ApiKey(obj["name"], obj["hash"], **quotas)


def parse_keys(text: str) -> list[ApiKey]:
    """Keys from ``name:hash`` lines / comma-separated entries, or JSON. ``ValueError`` if bad."""
    text = text.strip()
    if not text:
        return []
    if text[0] in "[{":
        data = json.loads(text)
        if isinstance(data, dict):
            data = data.get("keys")
        if not isinstance(data, list):
            raise ValueError('JSON keys must be a list or {"keys": [...]}')
        keys = [_key_from_obj(o) for o in data]
    else:
        keys = []
        for raw in text.replace(",", "\n").splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            name, sep, stored = line.partition(":")
            if not sep:
                raise ValueError("a key entry must be name:hash")
            keys.append(ApiKey(name.strip(), stored.strip()))
    names: set[str] = set()
    for k in keys:
        if not k.name or any(c.isspace() for c in k.name):
            raise ValueError(f"bad key name {k.name!r}")
        if k.name in names:
            raise ValueError(f"duplicate key name {k.name!r}")
        names.add(k.name)
        check_hash_format(k.hash)
    return keys


def load_keys(settings: ServerSettings) -> list[ApiKey]:
    """Keys from ``api_keys_file`` and ``api_keys``; ``ValueError`` with a one-line reason."""
    keys: list[ApiKey] = []
    if settings.api_keys_file:
        path = Path(settings.api_keys_file)
        try:
            text = path.read_text()
        except OSError as e:
            raise ValueError(f"cannot read api_keys_file {path}: {e.strerror}") from None
        try:
            keys += parse_keys(text)
        except ValueError as e:
            raise ValueError(f"api_keys_file {path}: {e}") from None
        if path.stat().st_mode & 0o077:
            log.warning("api_keys_file %s is readable by group/others; chmod 600 it", path)
    if settings.api_keys:
        try:
            keys += parse_keys(settings.api_keys)
        except ValueError as e:
            raise ValueError(f"api_keys: {e}") from None
    if len({k.name for k in keys}) != len(keys):
        raise ValueError("duplicate key name across api_keys_file and api_keys")
    if settings.metrics_key_hash:
        try:
            check_hash_format(settings.metrics_key_hash)
        except ValueError as e:
            raise ValueError(f"metrics_key_hash: {e}") from None
    return keys


class Authenticator:
    """Checks bearer keys. Successful and failed checks are cached by the key's SHA-256 so
    salted (slow) hashes are computed once per distinct key, not once per request."""

    CACHE = 1024

    def __init__(self, settings: ServerSettings, keys: list[ApiKey] | None = None) -> None:
        self.settings = settings
        self.enabled = settings.auth == "on"
        self.keys = load_keys(settings) if keys is None else keys
        self._by_name = {k.name: k for k in self.keys}
        self.metrics_hash = settings.metrics_key_hash
        self._cache: OrderedDict[bytes, Principal | None] = OrderedDict()
        if self.enabled and not self.keys:
            log.error("auth is on but no API keys are configured: every request but /health is refused")

    def principal(self, key: ApiKey) -> Principal:
        s = self.settings
        return Principal(
            key.name,
            key.name,
            max_streams=key.max_streams or s.key_max_streams,
            questions_per_minute=key.questions_per_minute or s.key_questions_per_minute,
            max_memory_bytes=key.max_memory_bytes or s.key_max_memory_bytes,
            max_questions_in_flight=key.max_questions_in_flight or s.key_max_questions_in_flight,
        )

    def in_flight_cap(self, owner: str) -> int | None:
        """The cap on questions queued or running of the key named ``owner``."""
        key = self._by_name.get(owner)
        if key is None:
            return self.settings.key_max_questions_in_flight
        return self.principal(key).max_questions_in_flight

    def check(self, token: str | None) -> Principal | None:
        """The caller for ``token``; None if it is not a valid key. ANONYMOUS with auth off."""
        if not self.enabled:
            return ANONYMOUS
        if not token:
            return None
        fp = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        if fp in self._cache:
            self._cache.move_to_end(fp)
            return self._cache[fp]
        found = None
        for key in self.keys:
            if verify_key(token, key.hash):
                found = self.principal(key)
                break
        self._cache[fp] = found
        if len(self._cache) > self.CACHE:
            self._cache.popitem(last=False)
        return found

    def check_metrics(self, token: str | None) -> bool:
        """``/metrics``: public, or the metrics key if one is set, else any API key."""
        if not self.enabled or self.settings.metrics_public:
            return True
        if not token:
            return False
        if self.metrics_hash:
            return verify_key(token, self.metrics_hash)
        return self.check(token) is not None

    def require(self, token: str | None) -> Principal:
        """Like :meth:`check`, raising ``unauthorized``."""
        p = self.check(token)
        if p is None:
            raise ApiError("unauthorized", "a valid API key is required (Authorization: Bearer <key>)")
        return p


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def ws_token(scope: Scope) -> tuple[str | None, str | None]:
    """A WebSocket's key: ``Authorization`` header, ``bearer.<key>`` subprotocol or ``?token=``.

    Returns ``(token, subprotocol to echo)``; the echoed subprotocol is the client's other
    offer (e.g. ``streamvqa``) if it made one, else the ``bearer.`` one (browsers require an echo).
    """
    headers = scope.get("headers", [])
    token = bearer_token(headers)
    offered: list[str] = list(scope.get("subprotocols") or [])
    chosen = None
    for proto in offered:
        if proto.startswith(WS_TOKEN_PREFIX):
            token = token or proto[len(WS_TOKEN_PREFIX):]
            others = [p for p in offered if not p.startswith(WS_TOKEN_PREFIX)]
            chosen = others[0] if others else proto
            break
    if token is None:
        qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        values = qs.get("token")
        if values and values[0]:
            token = values[0]
    return token, chosen


class AuthMiddleware:
    """Requires an API key on every HTTP request but ``/health``, the API docs and the console's
    files (``/ready`` answers a bare ``{"ready": ...}`` without one; ``/metrics`` follows
    :meth:`Authenticator.check_metrics`).
    Sets ``scope["state"]["principal"]``. WebSockets are checked by their endpoint (so the
    client gets a JSON error before the close)."""

    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            ErrorBody.of("unauthorized", "a valid API key is required (Authorization: Bearer <key>)").model_dump()
        ).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b'Bearer realm="streamvqa"')]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.auth.enabled:
            if scope["type"] == "http":
                scope.setdefault("state", {})["principal"] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        token = bearer_token(scope.get("headers", []))
        state = scope.setdefault("state", {})
        if path in PUBLIC_PATHS or path == CONSOLE_PATH or path.startswith(CONSOLE_PATH + "/"):
            state["principal"] = None
        elif path == METRICS_PATH:
            if not self.auth.check_metrics(token):
                await self._reject(send)
                return
            state["principal"] = None
        elif path == READY_PATH:
            state["principal"] = self.auth.check(token)  # None: a bare answer
        else:
            principal = self.auth.check(token)
            if principal is None:
                await self._reject(send)
                return
            state["principal"] = principal
        await self.app(scope, receive, send)


def keys_main(args: Any) -> int:
    """``streamvqa keys new|hash``: print a new key and its hash, or the hash of a given key."""
    import getpass
    import sys

    scheme = "pbkdf2_sha256" if getattr(args, "pbkdf2", False) else "sha256"
    if args.keys_command == "new":
        key = new_key()
        stored = hash_key(key, scheme)
        name = getattr(args, "name", None) or "NAME"
        print(f"key:  {key}")
        print(f"hash: {stored}")
        print(f"line for STREAMVQA_API_KEYS_FILE: {name}:{stored}", file=sys.stderr)
        return 0
    key = getattr(args, "key", None)
    if key is None or key == "-":
        key = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("API key: ")
    if not key:
        print("streamvqa keys hash: empty key", file=sys.stderr)
        return 2
    print(hash_key(key, scheme))
    return 0

