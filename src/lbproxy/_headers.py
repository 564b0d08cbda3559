"""Header rewriting between client and replica (RFC 9110 section 7.6.1)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: Headers that describe one connection, never forwarded. Expect is answered by the balancer's
#: own server (100-continue) and must not make the upstream client wait for it again.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)


#: Request headers that ``upstream_headers`` rewrites. For headers with none of them (the
#: usual case) the result is the headers themselves followed by
#: ``upstream_headers([], ...)``, which the hot path uses to pass the client's header
#: block on as it came, without decoding it.
REWRITTEN = HOP_BY_HOP | {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}


#: Headers that ``Connection`` cannot make hop-by-hop. Content-Length frames the message (a
#: proxy that drops it but sends the body on lets the next hop read the body as a request
#: of its own: request smuggling), and Host routes it. Transfer-Encoding is hop-by-hop anyway
#: and is written afresh for each hop from the framing the balancer parsed.
NEVER_HOP_BY_HOP = frozenset({"content-length", "host"})


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def strip_hop_by_hop(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The end-to-end headers: hop-by-hop ones and those named in Connection removed (never
    the framing or Host: ``NEVER_HOP_BY_HOP``)."""
    items = list(headers)
    drop = HOP_BY_HOP | (_connection_tokens(items) - NEVER_HOP_BY_HOP)
    return [(k, v) for k, v in items if k.lower() not in drop]


def upstream_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    client_ip: str | None,
    scheme: str,
    host: str | None,
    extra: Iterable[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    """Headers for the request to a replica: end-to-end ones plus X-Forwarded-*.

    X-Forwarded-For is appended to (the chain of proxies is kept); -Proto and -Host are set
    to what this balancer saw, since it is the one that terminated the client's connection.
    """
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: list[tuple[str, str]] = []
    prior_for: list[str] = []
    for k, v in strip_hop_by_hop(items):
        low = k.lower()
        if low == "x-forwarded-for":
            prior_for.append(v)
        elif low not in ("x-forwarded-proto", "x-forwarded-host"):
            out.append((k, v))
    if client_ip:
        prior_for.append(client_ip)
    if prior_for:
        out.append(("X-Forwarded-For", ", ".join(prior_for)))
    out.append(("X-Forwarded-Proto", scheme))
    if host:
        out.append(("X-Forwarded-Host", host))
    out.extend(extra)
    return out


def downstream_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers of a replica's response as sent on to the client."""
    return strip_hop_by_hop(headers)


def only_chunked(codings: bytes) -> bool:
    """Whether a Transfer-Encoding (all its lines, joined by commas) is exactly "chunked":
    the one transfer coding relayed as it is (RFC 9112 section 6.1; any other would be
    undone or lost on the way). Empty list elements and spaces are allowed (RFC 9110 section
    5.6.1)."""
    return [c for c in codings.lower().replace(b" ", b"").split(b",") if c] == [b"chunked"]


def encode_headers(headers: Iterable[tuple[str, str]]) -> bytes:
    """Header lines as they go on the wire (each ends with CRLF)."""
    return "".join([f"{k}: {v}\r\n" for k, v in headers]).encode("latin-1")


#: Parsers keep headers as *wire lines*, a flat list of ``name, SEP, value, CRLF`` for each
#: header as it came, so the block that passes on unchanged is one ``b"".join`` away.
SEP = b": "
CRLF = b"\r\n"


def decode_wire(lines: list[bytes]) -> list[tuple[str, str]]:
    """(name, value) of each header in wire lines, decoded."""
    return [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in zip(lines[0::4], lines[2::4], strict=True)
    ]
