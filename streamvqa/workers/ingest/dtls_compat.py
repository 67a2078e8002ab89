"""DTLS for WHIP through the system's OpenSSL 3 when the bundled one cannot take FFmpeg's certificate.

FFmpeg's WHIP muxer (also inside PyAV, on GnuTLS) makes an ECDSA certificate on P-224 unless given
one. aiortc does DTLS with pyOpenSSL, i.e. the OpenSSL built into ``cryptography``; OpenSSL 4 (and
builds without ``tls-deprecated-ec``) has no P-224 TLS group at all, so the handshake ends with
``wrong curve`` and no setting of pyOpenSSL can change that. The system's ``libssl.so.3`` (the one
Python's own ``ssl`` module loads; OpenSSL 3.0-3.x on Debian/Ubuntu) still has the group.

:func:`install` checks at run time that the system library offers P-224 (and P-256) as groups;
only then it gives aiortc's DTLS transport a small ctypes ``Connection`` over that library, the
exact subset of pyOpenSSL's API ``aiortc.rtcdtlstransport`` calls, with pyOpenSSL's own
exception classes, and the same context settings aiortc makes (cipher list, SRTP profiles, peer
certificate required and checked against the SDP fingerprint by aiortc). Otherwise nothing
changes (a P-224 publisher then still fails, with the reason in the log).
"""

from __future__ import annotations

import ctypes
import logging
import ssl  # noqa: F401 - loads the system libssl this module binds to
import types
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

log = logging.getLogger(__name__)

#: our preference order; P-224 last, only for peers (FFmpeg) whose certificate needs it
GROUPS = b"X25519:P-256:P-384:P-521:P-224"
_SSL_CTRL_SET_GROUPS_LIST = 92
_DTLS_CTRL_GET_TIMEOUT = 73
_DTLS_CTRL_HANDLE_TIMEOUT = 74
_SSL_OP_NO_TICKET = 0x00004000
_SSL_VERIFY_PEER, _SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0x01, 0x02
_ERROR_SSL, _ERROR_WANT_READ, _ERROR_WANT_WRITE, _ERROR_SYSCALL, _ERROR_ZERO_RETURN = 1, 2, 3, 5, 6
_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_ACCEPT_ANY = _VERIFY_CB(lambda ok, store: 1)  # aiortc checks the certificate's fingerprint itself

_P = ctypes.c_void_p


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _SrtpProfile(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("id", ctypes.c_ulong)]


def _loaded(name: str) -> str | None:
    """Path of a shared library already mapped into this process (``ssl`` loaded it)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rsplit(None, 1)[-1]
                if f"/{name}.so" in path and "site-packages" not in path:
                    return path
    except OSError:
        return None
    return None


def _bind() -> tuple[Any, Any]:
    ssl_path, crypto_path = _loaded("libssl"), _loaded("libcrypto")
    if ssl_path is None or crypto_path is None:
        raise OSError("no system libssl/libcrypto loaded")
    libcrypto, libssl = ctypes.CDLL(crypto_path), ctypes.CDLL(ssl_path)
    sigs: dict[str, tuple[Any, list[Any]]] = {
        "DTLS_method": (_P, []), "SSL_CTX_new": (_P, [_P]), "SSL_CTX_free": (None, [_P]),
        "SSL_CTX_set_options": (ctypes.c_uint64, [_P, ctypes.c_uint64]),
        "SSL_CTX_set_verify": (None, [_P, ctypes.c_int, _VERIFY_CB]),
        "SSL_CTX_use_certificate": (ctypes.c_int, [_P, _P]), "SSL_CTX_use_PrivateKey": (ctypes.c_int, [_P, _P]),
        "SSL_CTX_set_cipher_list": (ctypes.c_int, [_P, ctypes.c_char_p]),
        "SSL_CTX_set_tlsext_use_srtp": (ctypes.c_int, [_P, ctypes.c_char_p]),
        "SSL_CTX_ctrl": (ctypes.c_long, [_P, ctypes.c_int, ctypes.c_long, _P]),
        "SSL_new": (_P, [_P]), "SSL_free": (None, [_P]), "SSL_set_bio": (None, [_P, _P, _P]),
        "SSL_set_accept_state": (None, [_P]), "SSL_set_connect_state": (None, [_P]),
        "SSL_do_handshake": (ctypes.c_int, [_P]), "SSL_get_error": (ctypes.c_int, [_P, ctypes.c_int]),
        "SSL_read": (ctypes.c_int, [_P, _P, ctypes.c_int]), "SSL_write": (ctypes.c_int, [_P, _P, ctypes.c_int]),
        "SSL_shutdown": (ctypes.c_int, [_P]), "SSL_ctrl": (ctypes.c_long, [_P, ctypes.c_int, ctypes.c_long, _P]),
        "SSL_get1_peer_certificate": (_P, [_P]),
        "SSL_get_selected_srtp_profile": (ctypes.POINTER(_SrtpProfile), [_P]),
        "SSL_export_keying_material": (ctypes.c_int, [_P, _P, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
                                                      _P, ctypes.c_size_t, ctypes.c_int]),
    }
    crypto_sigs: dict[str, tuple[Any, list[Any]]] = {
        "BIO_s_mem": (_P, []), "BIO_new": (_P, [_P]), "BIO_read": (ctypes.c_int, [_P, _P, ctypes.c_int]),
        "BIO_write": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_int]),
        "d2i_X509": (_P, [_P, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long]), "X509_free": (None, [_P]),
        "i2d_X509": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_void_p)]),
        "d2i_AutoPrivateKey": (_P, [_P, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long]),
        "EVP_PKEY_free": (None, [_P]), "ERR_get_error": (ctypes.c_ulong, []), "ERR_clear_error": (None, []),
        "ERR_error_string_n": (None, [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_size_t]),
        "CRYPTO_free": (None, [_P, ctypes.c_char_p, ctypes.c_int]),
    }
    for lib, table in ((libssl, sigs), (libcrypto, crypto_sigs)):
        for name, (res, args) in table.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
    return libssl, libcrypto


def _errors(libcrypto: Any) -> list[str]:
    out = []
    while code := libcrypto.ERR_get_error():
        buf = ctypes.create_string_buffer(256)
        libcrypto.ERR_error_string_n(code, buf, 256)
        out.append(buf.value.decode(errors="replace"))
    return out


class _Context:
    """What ``RTCCertificate._create_ssl_context`` returns: an ``SSL_CTX`` of the system library."""

    def __init__(self, libs: tuple[Any, Any], cert: x509.Certificate, key: Any, srtp: bytes) -> None:
        self.libssl, self.libcrypto = libs
        self.ctx = self.libssl.SSL_CTX_new(self.libssl.DTLS_method())
        if not self.ctx:
            raise SSL.Error(_errors(self.libcrypto))
        lib = self.libssl
        lib.SSL_CTX_set_options(self.ctx, _SSL_OP_NO_TICKET)
        lib.SSL_CTX_set_verify(self.ctx, _SSL_VERIFY_PEER | _SSL_VERIFY_FAIL_IF_NO_PEER_CERT, _ACCEPT_ANY)
        der = cert.public_bytes(serialization.Encoding.DER)
        p = ctypes.c_char_p(der)
        x = self.libcrypto.d2i_X509(None, ctypes.byref(p), len(der))
        kder = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
        kp = ctypes.c_char_p(kder)
        pkey = self.libcrypto.d2i_AutoPrivateKey(None, ctypes.byref(kp), len(kder))
        try:
            ok = (x and pkey and lib.SSL_CTX_use_certificate(self.ctx, x) == 1
                  and lib.SSL_CTX_use_PrivateKey(self.ctx, pkey) == 1
                  and lib.SSL_CTX_set_cipher_list(self.ctx, b"ECDHE-ECDSA-AES128-GCM-SHA256:"
                                                  b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:"
                                                  b"ECDHE-ECDSA-AES256-SHA") == 1
                  and lib.SSL_CTX_set_tlsext_use_srtp(self.ctx, srtp) == 0
                  and lib.SSL_CTX_ctrl(self.ctx, _SSL_CTRL_SET_GROUPS_LIST, 0, ctypes.c_char_p(GROUPS)) == 1)
        finally:
            if x:
                self.libcrypto.X509_free(x)
            if pkey:
                self.libcrypto.EVP_PKEY_free(pkey)
        if not ok:
            errs = _errors(self.libcrypto)
            lib.SSL_CTX_free(self.ctx)
            self.ctx = None
            raise SSL.Error(errs)

    def __del__(self) -> None:
        if getattr(self, "ctx", None):
            self.libssl.SSL_CTX_free(self.ctx)
            self.ctx = None


class _Connection:
    """The pyOpenSSL ``Connection`` methods aiortc's DTLS transport uses, over memory BIOs."""

    def __init__(self, context: _Context) -> None:
        self._context = context  # keeps the SSL_CTX alive
        self.libssl, self.libcrypto = context.libssl, context.libcrypto
        self.ssl = self.libssl.SSL_new(context.ctx)
        if not self.ssl:
            raise SSL.Error(_errors(self.libcrypto))
        self.rbio = self.libcrypto.BIO_new(self.libcrypto.BIO_s_mem())
        self.wbio = self.libcrypto.BIO_new(self.libcrypto.BIO_s_mem())
        self.libssl.SSL_set_bio(self.ssl, self.rbio, self.wbio)  # the SSL owns both now

    def __del__(self) -> None:
        if getattr(self, "ssl", None):
            self.libssl.SSL_free(self.ssl)
            self.ssl = None

    def _raise(self, ret: int) -> None:
        err = self.libssl.SSL_get_error(self.ssl, ret)
        if err == _ERROR_WANT_READ:
            raise SSL.WantReadError()
        if err == _ERROR_WANT_WRITE:
            raise SSL.WantWriteError()
        if err == _ERROR_ZERO_RETURN:
            raise SSL.ZeroReturnError()
        errors = _errors(self.libcrypto)
        if err == _ERROR_SYSCALL and not errors:
            raise SSL.SysCallError(-1, "unexpected EOF")
        raise SSL.Error(errors)

    def set_accept_state(self) -> None:
        self.libssl.SSL_set_accept_state(self.ssl)

    def set_connect_state(self) -> None:
        self.libssl.SSL_set_connect_state(self.ssl)

    def do_handshake(self) -> None:
        self.libcrypto.ERR_clear_error()
        ret = self.libssl.SSL_do_handshake(self.ssl)
        if ret <= 0:
            self._raise(ret)

    def bio_read(self, bufsiz: int) -> bytes:
        buf = ctypes.create_string_buffer(bufsiz)
        n = self.libcrypto.BIO_read(self.wbio, buf, bufsiz)
        if n <= 0:
            raise SSL.WantReadError()
        return buf.raw[:n]

    def bio_write(self, data: bytes) -> int:
        return int(self.libcrypto.BIO_write(self.rbio, bytes(data), len(data)))

    def recv(self, bufsiz: int) -> bytes:
        self.libcrypto.ERR_clear_error()
        buf = ctypes.create_string_buffer(bufsiz)
        n = self.libssl.SSL_read(self.ssl, buf, bufsiz)
        if n <= 0:
            self._raise(n)
        return buf.raw[:n]

    def send(self, data: bytes) -> int:
        self.libcrypto.ERR_clear_error()
        data = bytes(data)
        n = self.libssl.SSL_write(self.ssl, ctypes.c_char_p(data), len(data))
        if n <= 0:
            self._raise(n)
        return int(n)

    def shutdown(self) -> bool:
        self.libcrypto.ERR_clear_error()
        ret = self.libssl.SSL_shutdown(self.ssl)
        if ret < 0:
            self._raise(ret)
        return ret > 0

    def DTLSv1_get_timeout(self) -> float | None:  # noqa: N802 - pyOpenSSL's name
        tv = _Timeval()
        if self.libssl.SSL_ctrl(self.ssl, _DTLS_CTRL_GET_TIMEOUT, 0, ctypes.byref(tv)):
            return tv.tv_sec + tv.tv_usec / 1e6
        return None

    def DTLSv1_handle_timeout(self) -> bool:  # noqa: N802 - pyOpenSSL's name
        ret = self.libssl.SSL_ctrl(self.ssl, _DTLS_CTRL_HANDLE_TIMEOUT, 0, None)
        if ret < 0:
            self._raise(int(ret))
        return bool(ret)

    def get_peer_certificate(self, *, as_cryptography: bool = False) -> x509.Certificate | None:
        x = self.libssl.SSL_get1_peer_certificate(self.ssl)
        if not x:
            return None
        try:
            out = ctypes.c_void_p()
            n = self.libcrypto.i2d_X509(x, ctypes.byref(out))
            if n <= 0:
                raise SSL.Error(_errors(self.libcrypto))
            der = ctypes.string_at(out, n)
            self.libcrypto.CRYPTO_free(out, b"dtls_compat", 0)
        finally:
            self.libcrypto.X509_free(x)
        return x509.load_der_x509_certificate(der)

    def get_selected_srtp_profile(self) -> bytes:
        p = self.libssl.SSL_get_selected_srtp_profile(self.ssl)
        return p.contents.name if p else b""

    def export_keying_material(self, label: bytes, olen: int, context: bytes | None = None) -> bytes:
        out = ctypes.create_string_buffer(olen)
        ctx = ctypes.c_char_p(context) if context is not None else None
        ok = self.libssl.SSL_export_keying_material(self.ssl, out, olen, label, len(label), ctx,
                                                    len(context or b""), int(context is not None))
        if ok != 1:
            raise SSL.Error(_errors(self.libcrypto))
        return out.raw


_installed: bool | None = None


def install() -> bool:
    """Route aiortc's DTLS through the system OpenSSL if it offers the P-224 group; True if so.
    Idempotent; a library without it leaves aiortc as it is."""
    global _installed
    if _installed is not None:
        return _installed
    _installed = False
    try:
        libs = _bind()
        probe = libs[0].SSL_CTX_new(libs[0].DTLS_method())
        ok = probe and libs[0].SSL_CTX_ctrl(probe, _SSL_CTRL_SET_GROUPS_LIST, 0, ctypes.c_char_p(GROUPS)) == 1
        if probe:
            libs[0].SSL_CTX_free(probe)
        if not ok:
            raise OSError("the system OpenSSL has no P-224 TLS group")
    except (OSError, AttributeError) as e:
        log.info("WHIP DTLS: aiortc's own OpenSSL (%s); publishers with P-224 certificates (FFmpeg's default) "
                 "will fail", e)
        return False
    import aiortc.rtcdtlstransport as dtls

    def create_ssl_context(self: Any, srtp_profiles: list[Any]) -> _Context:
        return _Context(libs, self._cert, self._key, b":".join(p.openssl_profile for p in srtp_profiles))

    shim = types.SimpleNamespace(**{k: v for k, v in vars(SSL).items() if not k.startswith("__")})
    shim.Connection = _Connection
    dtls.SSL = shim
    dtls.RTCCertificate._create_ssl_context = create_ssl_context  # noqa: SLF001 - aiortc's hook, replaced
    _installed = True
    log.info("WHIP DTLS: the system OpenSSL (P-224 certificates accepted, as FFmpeg makes by default)")
    return True
