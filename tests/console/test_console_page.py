"""``/console``: the page and its files, public, same-origin only, shipped in the wheel."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

from streamvqa.server.console_routes import ASSETS

CONSOLE_DIR = Path(__file__).resolve().parents[2] / "streamvqa" / "server" / "console"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_console_files_served_without_key(keyed_client, name: str) -> None:
    client = keyed_client()
    path = "/console/" if name == "index.html" else f"/console/{name}"
    r = client.get(path)  # auth is on: the files are public, the API they call is not
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == ASSETS[name]
    assert r.content == (CONSOLE_DIR / name).read_bytes()
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/v1/streams").status_code == 401


def test_console_redirect_and_unknown_files(keyed_client) -> None:
    client = keyed_client()
    r = client.get("/console", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "console/"
    for path in ("/console/secret.txt", "/console/..%2Fapp.py", "/console/index.htm"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
    assert client.get("/consolex").status_code == 401  # only /console and below are public
    assert "/console/" not in client.get("/openapi.json").json()["paths"]


# a URL with a host in it (scheme://host...): the page must not load or call anything elsewhere
EXTERNAL = re.compile(r"\b[a-z][a-z0-9+.-]*://(?=[A-Za-z0-9\[%])", re.I)
PROTOCOL_RELATIVE = re.compile(r"""(?:src|href|action)\s*=\s*["']//|url\(\s*["']?//|@import""", re.I)


def test_console_files_reference_no_external_url() -> None:
    files = sorted(p for p in CONSOLE_DIR.iterdir() if p.is_file())
    assert {p.name for p in files} == set(ASSETS)  # every shipped file is served, and checked here
    for p in files:
        text = p.read_text()
        assert not EXTERNAL.findall(text), (p.name, EXTERNAL.findall(text))
        assert not PROTOCOL_RELATIVE.findall(text), p.name
    # the checks themselves catch what they are for
    assert EXTERNAL.search('<script src="https://cdn.example.com/x.js">')
    assert EXTERNAL.search("fetch('http://10.0.0.1/v1')") and EXTERNAL.search('new WebSocket("wss://evil.test")')
    assert not EXTERNAL.search('(location.protocol === "https:" ? "wss://" : "ws://") + location.host')
    assert PROTOCOL_RELATIVE.search('<img src="//cdn.example.com/a.png">')


def test_console_files_ship_in_the_wheel() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["streamvqa"]
    for name in ASSETS:
        rel = f"server/console/{name}"
        assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), rel
