"""TLS termination on the balancer's port (``listen.tls``): the server's SSL context, made
from PEM files, with every problem a ``ConfigError`` naming the field; and the watch that
serves a changed certificate to new connections without a restart."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable

from ._config import TlsConfig
from ._errors import ConfigError

log = logging.getLogger("lbproxy")


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


def _stamp(tls: TlsConfig) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in (tls.cert, tls.key):
        try:
            st = os.stat(path)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((0, 0, 0))
    return tuple(out)


class Certificate:
    """The listening context and the one new handshakes use: a handshake switches to the
    newest context from the SNI callback (OpenSSL calls it for every ClientHello), so a
    reloaded certificate is served without touching a context in use."""

    def __init__(self, tls: TlsConfig, context: ssl.SSLContext) -> None:
        self._tls = tls
        self.listening = context
        self.current = context
        context.sni_callback = self._pick
        #: Changes seen in the files, and those that made a new certificate served.
        self.stamps_seen = 0
        self.reloads = 0

    def _pick(self, sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        if self.current is not context:
            sock.context = self.current

    async def watch(self, interval: Callable[[], float]) -> None:
        """Until cancelled: load the files again when either changes. A change that does not
        make a valid pair (say the certificate written, the key not yet) keeps the old one
        and is tried again at the next change."""
        seen = await asyncio.to_thread(_stamp, self._tls)
        while True:
            await asyncio.sleep(interval())
            stamp = await asyncio.to_thread(_stamp, self._tls)
            if stamp == seen:
                continue
            seen = stamp
            self.stamps_seen += 1
            try:
                self.current = await asyncio.to_thread(server_context, self._tls)
            except ConfigError as e:
                log.error("listen.tls: keeping the certificate being served: %s", e)
                continue
            self.reloads += 1
            log.info("listen.tls: serving the new certificate in %s", self._tls.cert)
