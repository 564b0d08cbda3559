"""What a request goes upstream with: its routing key and its header block (``X-Forwarded-*``
added, hop-by-hop ones dropped, the upgrade ones kept when it asks to upgrade)."""

from __future__ import annotations

from collections.abc import Callable

from ._config import Config
from ._exchange import Exchange
from ._headers import encode_headers, upstream_headers
from ._keys import REQUEST_ID_HEADER, KeyFunction


class UpstreamHeads:
    def __init__(
        self, config: Callable[[], Config], key_function: Callable[[], KeyFunction]
    ) -> None:
        self._config = config
        self._key_function = key_function
        #: Encoded X-Forwarded-* lines by (client address, Host): the same for every request
        #: on a connection, so built once rather than per request.
        self._forwarded: dict[tuple[str | None, str | None], bytes] = {}

    def prepare(self, request: Exchange) -> tuple[str, bytes]:
        """The request's routing key and the (encoded) headers it goes upstream with.

        Made once per request (``request.prepared`` keeps them for the general path): a
        request without a key gets one random id, whichever path serves it.
        """
        if request.prepared is not None:
            return request.prepared
        key, generated = self._key_function()(request)
        # A generated request id goes upstream too, so the replica's logs can be correlated.
        extra = (
            [(REQUEST_ID_HEADER, key)]
            if generated and self._config().hashing.key == "request_id"
            else []
        )
        if request.upgrade is not None:
            # Hop-by-hop, but this hop is asked for them: the replica decides to switch.
            extra += [("Connection", "Upgrade"), ("Upgrade", request.upgrade)]
        if request.end_to_end:  # the usual case: the client's headers go on as they came
            headers = b"".join(request.header_lines) + self._forwarded_lines(request, extra)
        else:
            headers = encode_headers(
                upstream_headers(
                    request.header_items, request.remote, request.scheme, request.host, extra
                )
            )
        request.prepared = prepared = (key, headers)
        return prepared

    def _forwarded_lines(self, request: Exchange, extra: list[tuple[str, str]]) -> bytes:
        """``upstream_headers([], ...)`` encoded: what goes after the client's own headers."""
        if extra:
            return encode_headers(
                upstream_headers([], request.remote, request.scheme, request.host, extra)
            )
        where = (request.remote, request.host)
        lines = self._forwarded.get(where)
        if lines is None:
            if len(self._forwarded) >= 4096:
                self._forwarded.clear()
            lines = encode_headers(
                upstream_headers([], request.remote, request.scheme, request.host)
            )
            self._forwarded[where] = lines
        return lines
