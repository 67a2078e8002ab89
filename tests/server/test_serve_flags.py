"""`serve` flags for the URL policy: what the README's first server and the docs tell an operator
to use instead of environment variables (`--media-root`, `--allow-loopback-sources`,
`--allow-private-sources`)."""

from __future__ import annotations

import ipaddress

import pytest

from streamvqa.cli import build_parser
from streamvqa.server.cli import _settings
from streamvqa.server.urlpolicy import UrlPolicy


def policy(monkeypatch: pytest.MonkeyPatch, *flags: str, env: dict[str, str] | None = None) -> UrlPolicy:
    for name in ("STREAMVQA_ALLOWED_NETWORKS", "STREAMVQA_ALLOW_PRIVATE_NETWORKS", "STREAMVQA_MEDIA_ROOT"):
        monkeypatch.delenv(name, raising=False)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    return UrlPolicy(_settings(build_parser().parse_args(["serve", *flags])))


LOOPBACK = ipaddress.ip_address("127.0.0.1")
LOOPBACK6 = ipaddress.ip_address("::1")
PRIVATE = ipaddress.ip_address("10.1.2.3")


def test_default_refuses_loopback_and_private_sources(monkeypatch) -> None:
    p = policy(monkeypatch)
    assert not p.address_allowed(LOOPBACK) and not p.address_allowed(PRIVATE) and p.media_root is None


def test_allow_loopback_sources_allows_this_host_only(monkeypatch) -> None:
    p = policy(monkeypatch, "--allow-loopback-sources")
    assert p.address_allowed(LOOPBACK) and p.address_allowed(LOOPBACK6)
    assert not p.address_allowed(PRIVATE)


def test_allow_loopback_sources_adds_to_the_env_networks(monkeypatch) -> None:
    p = policy(monkeypatch, "--allow-loopback-sources", env={"STREAMVQA_ALLOWED_NETWORKS": "10.1.0.0/16"})
    assert p.address_allowed(LOOPBACK) and p.address_allowed(PRIVATE)
    assert not p.address_allowed(ipaddress.ip_address("192.168.1.1"))


def test_allow_private_sources_allows_any_address(monkeypatch) -> None:
    p = policy(monkeypatch, "--allow-private-sources")
    assert p.address_allowed(LOOPBACK) and p.address_allowed(PRIVATE)
    assert p.address_allowed(ipaddress.ip_address("169.254.169.254"))


def test_media_root_flag_serves_files_inside_it_only(monkeypatch, tmp_path) -> None:
    from streamvqa.proto import ApiError

    (tmp_path / "clip.mp4").write_bytes(b"")
    p = policy(monkeypatch, "--media-root", str(tmp_path))
    assert p.check_file("clip.mp4") == str((tmp_path / "clip.mp4").resolve())
    with pytest.raises(ApiError) as e:
        p.check_file("/etc/passwd")
    assert e.value.code == "url_forbidden"
