"""TLS termination on the balancer's port (``listen.tls``): the server's SSL context, made
from PEM files, with every problem a ``ConfigError`` naming the field."""

from __future__ import annotations

import ssl

from ._config import TlsConfig
from ._errors import ConfigError


def _read(field: str, path: str, marker: bytes, what: str) -> None:
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 20)
    except OSError as e:
        raise ConfigError(f"{field}: cannot read {path}: {e.strerror or e}") from None
    if marker not in text:
        raise ConfigError(f"{field}: {path} holds no PEM {what}")


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """An SSL context serving ``tls.cert`` (with its chain) and ``tls.key``; reads files, so
    call it off the event loop (``asyncio.to_thread``)."""
    _read("listen.tls.cert", tls.cert, b"-----BEGIN CERTIFICATE-----", "certificate")
    _read("listen.tls.key", tls.key, b"PRIVATE KEY-----", "private key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # HTTP/1.1 only: the front speaks nothing else (a client offering h2 falls back).
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except ssl.SSLError as e:
        raise ConfigError(
            f"listen.tls.key: {tls.key} is not the private key of listen.tls.cert "
            f"({tls.cert}), or one of them is damaged: {e.reason or e}"
        ) from None
    return context
