"""Header rewriting between client and replica (RFC 9110 section 7.6.1)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from lbproxy._headers import (
    CRLF,
    HOP_BY_HOP,
    REWRITTEN,
    SEP,
    decode_wire,
    downstream_headers,
    encode_headers,
    strip_hop_by_hop,
    upstream_headers,
)

HOP = [
    ("Connection", "keep-alive"),
    ("Keep-Alive", "timeout=5"),
    ("Proxy-Authenticate", "Basic"),
    ("Proxy-Authorization", "Basic abc"),
    ("Proxy-Connection", "keep-alive"),
    ("TE", "trailers"),
    ("Trailer", "X-Checksum"),
    ("Transfer-Encoding", "chunked"),
    ("Upgrade", "websocket"),
    ("Expect", "100-continue"),
]
E2E = [("Content-Type", "application/json"), ("Accept", "*/*"), ("Authorization", "Bearer t")]


def names(headers: list[tuple[str, str]]) -> list[str]:
    return [k.lower() for k, _ in headers]


def test_hop_by_hop_set() -> None:
    assert {k.lower() for k, _ in HOP} == HOP_BY_HOP


def test_strip_removes_every_hop_by_hop_header() -> None:
    assert strip_hop_by_hop(HOP + E2E) == E2E
    assert strip_hop_by_hop(E2E) == E2E
    assert strip_hop_by_hop([]) == []


@pytest.mark.parametrize(
    "spelling", ["transfer-encoding", "TRANSFER-ENCODING", "Transfer-encoding"]
)
def test_strip_is_case_insensitive(spelling: str) -> None:
    assert strip_hop_by_hop([(spelling, "chunked"), ("Accept", "*/*")]) == [("Accept", "*/*")]


def test_headers_named_in_connection_are_removed() -> None:
    headers = [
        ("Connection", "close, X-Secret ,  x-debug"),
        ("X-Secret", "1"),
        ("x-DEBUG", "2"),
        ("X-Kept", "3"),
    ]
    assert strip_hop_by_hop(headers) == [("X-Kept", "3")]


def test_connection_tokens_from_several_connection_headers() -> None:
    headers = [
        ("connection", "X-A"),
        ("CONNECTION", "x-b,"),
        ("X-A", "1"),
        ("X-B", "2"),
        ("X-C", "3"),
    ]
    assert strip_hop_by_hop(headers) == [("X-C", "3")]


def test_strip_keeps_repeated_headers_in_order() -> None:
    headers = [("Set-Cookie", "a=1"), ("Connection", "close"), ("Set-Cookie", "b=2")]
    assert strip_hop_by_hop(headers) == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]


def test_upstream_adds_forwarded_headers() -> None:
    out = upstream_headers([("Accept", "*/*")], "10.0.0.1", "http", "lb.example:5000")
    assert out == [
        ("Accept", "*/*"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "lb.example:5000"),
    ]


def test_upstream_appends_to_existing_forwarded_for_chain() -> None:
    headers = [("X-Forwarded-For", "1.1.1.1, 2.2.2.2"), ("Accept", "*/*")]
    out = dict(upstream_headers(headers, "3.3.3.3", "https", None))
    assert out["X-Forwarded-For"] == "1.1.1.1, 2.2.2.2, 3.3.3.3"
    assert out["X-Forwarded-Proto"] == "https"
    assert "X-Forwarded-Host" not in out


def test_upstream_joins_several_forwarded_for_headers() -> None:
    headers = [("x-forwarded-for", "1.1.1.1"), ("X-FORWARDED-FOR", "2.2.2.2")]
    out = upstream_headers(headers, "3.3.3.3", "http", "h")
    assert [v for k, v in out if k.lower() == "x-forwarded-for"] == ["1.1.1.1, 2.2.2.2, 3.3.3.3"]


def test_upstream_without_client_ip() -> None:
    assert "x-forwarded-for" not in names(upstream_headers([], None, "http", "h"))
    out = upstream_headers([("X-Forwarded-For", "1.1.1.1")], None, "http", "h")
    assert ("X-Forwarded-For", "1.1.1.1") in out


def test_upstream_replaces_client_proto_and_host() -> None:
    headers = [("X-Forwarded-Proto", "https"), ("x-forwarded-host", "evil.example"), ("Host", "h")]
    out = upstream_headers(headers, "10.0.0.1", "http", "lb:5000")
    assert [v for k, v in out if k.lower() == "x-forwarded-proto"] == ["http"]
    assert [v for k, v in out if k.lower() == "x-forwarded-host"] == ["lb:5000"]
    # Without a host, the client's X-Forwarded-Host is still not passed on.
    out = upstream_headers(headers, "10.0.0.1", "http", None)
    assert "x-forwarded-host" not in names(out)


def test_upstream_strips_hop_by_hop() -> None:
    headers = [*HOP, ("Connection", "X-Private"), ("X-Private", "p"), *E2E]
    out = upstream_headers(headers, "10.0.0.1", "http", "h")
    assert out[: len(E2E)] == E2E
    assert not (set(names(out)) & (HOP_BY_HOP | {"x-private"}))


def test_upstream_accepts_mapping() -> None:
    headers = CIMultiDict(
        [("Accept", "*/*"), ("Connection", "close"), ("X-Forwarded-For", "9.9.9.9")]
    )
    out = upstream_headers(headers, "10.0.0.1", "http", "h")
    assert ("Accept", "*/*") in out
    assert "connection" not in names(out)
    assert ("X-Forwarded-For", "9.9.9.9, 10.0.0.1") in out
    assert upstream_headers({"Accept": "a"}, None, "http", None) == [
        ("Accept", "a"),
        ("X-Forwarded-Proto", "http"),
    ]


def test_upstream_extra_headers_appended_last() -> None:
    extra = [("X-Request-Id", "132574"), ("X-Other", "1")]
    out = upstream_headers([("Accept", "*/*")], "10.0.0.1", "http", "h", extra)
    assert out[-2:] == extra
    assert out[0] == ("Accept", "*/*")


def test_downstream_strips_hop_by_hop() -> None:
    headers = [
        ("Content-Type", "application/json"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "keep-alive, X-Upstream-Debug"),
        ("X-Upstream-Debug", "on"),
        ("Keep-Alive", "timeout=15"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Content-Length", "10"),
    ]
    assert downstream_headers(headers) == [
        ("Content-Type", "application/json"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Content-Length", "10"),
    ]


def test_headers_without_rewritten_ones_pass_on_as_they_are() -> None:
    # What the hot path relies on: the client's header block, then upstream_headers([]).
    headers = [("Host", "h"), ("X-Request-Id", "1"), ("Accept", "*/*"), ("X-Multi", "a")]
    assert not {k.lower() for k, _ in headers} & REWRITTEN
    extra = [("X-Extra", "1")]
    assert upstream_headers(headers, "10.0.0.1", "http", "h", extra) == [
        *headers,
        *upstream_headers([], "10.0.0.1", "http", "h", extra),
    ]
    lines = [part for k, v in headers for part in (k.encode(), SEP, v.encode(), CRLF)]
    assert b"".join(lines) == encode_headers(headers)
    assert decode_wire(lines) == headers
    assert encode_headers(headers) == b"Host: h\r\nX-Request-Id: 1\r\nAccept: */*\r\nX-Multi: a\r\n"


def test_each_rewritten_header_changes_what_goes_upstream() -> None:
    for name in [*HOP_BY_HOP, "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]:
        assert name in REWRITTEN
        headers = [(name.title(), "v")]
        full = upstream_headers(headers, "10.0.0.1", "http", "h")
        assert full != [*headers, *upstream_headers([], "10.0.0.1", "http", "h")], name


def test_connection_never_removes_the_framing_or_host() -> None:
    headers = [
        ("Connection", "Content-Length, host, X-Hop"),
        ("Content-Length", "41"),
        ("Host", "lb"),
        ("X-Hop", "1"),
    ]
    assert strip_hop_by_hop(headers) == [("Content-Length", "41"), ("Host", "lb")]
    assert downstream_headers(headers) == [("Content-Length", "41"), ("Host", "lb")]


@pytest.mark.parametrize(
    ("codings", "relayed"),
    [
        (b"chunked", True),
        (b"Chunked", True),
        (b" chunked ", True),
        (b",chunked,", True),
        (b"gzip, chunked", False),
        (b"chunked, gzip", False),
        (b"chunked,chunked", False),
        (b"identity", False),
        (b"xchunked", False),
        (b"", False),
    ],
)
def test_only_chunked_is_relayed(codings: bytes, relayed: bool) -> None:
    from lbproxy._headers import only_chunked

    assert only_chunked(codings) is relayed
