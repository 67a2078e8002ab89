"""DTLS with a P-224 peer certificate (FFmpeg's default): the system-OpenSSL connection aiortc is
given completes the handshake the bundled OpenSSL refuses, and exports the same SRTP keys."""

from __future__ import annotations

import pytest

pytest.importorskip("aiortc", reason="pip install aiortc")

from aiortc.rtcdtlstransport import (  # noqa: E402
    SRTP_AES128_CM_SHA1_80,
    RTCCertificate,
    generate_certificate,
)
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from OpenSSL import SSL  # noqa: E402

from streamvqa.workers.ingest import dtls_compat  # noqa: E402

if not dtls_compat.install():
    pytest.skip("the system OpenSSL has no P-224 TLS group", allow_module_level=True)


def _handshake(server, client) -> None:
    """Pump DTLS records between two connections in memory until both are done (bounded)."""
    done = set()
    for _ in range(20):
        for name, conn in (("client", client), ("server", server)):
            try:
                conn.do_handshake()
                done.add(name)
            except SSL.WantReadError:
                pass
        for a, b in ((client, server), (server, client)):
            while True:
                try:
                    b.bio_write(a.bio_read(65536))
                except SSL.WantReadError:
                    break
        if done == {"client", "server"}:
            return
    raise AssertionError(f"handshake incomplete: {done}")


def _p224() -> RTCCertificate:
    key = ec.generate_private_key(ec.SECP224R1())
    return RTCCertificate(key, generate_certificate(key))


@pytest.mark.parametrize("p224_is_server", [True, False])
def test_p224_peer_handshake_and_keys(p224_is_server: bool) -> None:
    import aiortc.rtcdtlstransport as dtls

    peer, ours = _p224(), RTCCertificate.generateCertificate()
    server_cert, client_cert = (peer, ours) if p224_is_server else (ours, peer)
    SSLShim = dtls.SSL  # what aiortc's transport uses after install()
    server = SSLShim.Connection(server_cert._create_ssl_context([SRTP_AES128_CM_SHA1_80]))
    server.set_accept_state()
    client = SSLShim.Connection(client_cert._create_ssl_context([SRTP_AES128_CM_SHA1_80]))
    client.set_connect_state()
    _handshake(server, client)
    for conn, other in ((server, client_cert), (client, server_cert)):
        assert conn.get_peer_certificate(as_cryptography=True) == other._cert  # aiortc checks its fingerprint
        assert conn.get_selected_srtp_profile() == SRTP_AES128_CM_SHA1_80.openssl_profile
    keys = server.export_keying_material(b"EXTRACTOR-dtls_srtp", 60)
    assert len(keys) == 60 and keys == client.export_keying_material(b"EXTRACTOR-dtls_srtp", 60)
    client.send(b"ping")
    b = client.bio_read(1500)
    server.bio_write(b)
    assert server.recv(1500) == b"ping"
    with pytest.raises(SSL.WantReadError):
        server.recv(1500)  # nothing more buffered
    assert client.DTLSv1_get_timeout() is None or client.DTLSv1_get_timeout() >= 0



def test_refused_handshake_raises_pyopenssl_error_with_reason() -> None:
    """A handshake the system OpenSSL refuses raises pyOpenSSL's ``SSL.Error`` (what aiortc catches)
    with OpenSSL's reason, which the WHIP session logs and keeps as its last error."""
    import aiortc.rtcdtlstransport as dtls
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # aiortc offers ECDSA suites only
    server = dtls.SSL.Connection(RTCCertificate(key, generate_certificate(key))._create_ssl_context(
        [SRTP_AES128_CM_SHA1_80]))
    server.set_accept_state()
    client = dtls.SSL.Connection(RTCCertificate.generateCertificate()._create_ssl_context([SRTP_AES128_CM_SHA1_80]))
    client.set_connect_state()
    with pytest.raises(SSL.Error) as ei:
        _handshake(server, client)
    assert not isinstance(ei.value, SSL.WantReadError)
    assert any("no shared cipher" in r for r in ei.value.args[0]), ei.value
