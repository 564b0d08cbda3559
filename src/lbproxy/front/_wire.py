"""Answers the connection writes by itself, before or instead of any request's."""

from __future__ import annotations

from .._headers import encode_headers
from .._messages import JSON, Answer, failure
from ._answer import REASONS

BUSY = failure("The balancer has too many client connections", 503, {"Retry-After": "1"})


def plain_answer(answer: Answer) -> bytes:
    """``answer`` whole, ending the connection (no request to answer it for)."""
    head = encode_headers(
        [
            ("Content-Type", JSON),
            ("Content-Length", str(len(answer.body))),
            *answer.headers,
            ("Connection", "close"),
        ]
    )
    status = f"HTTP/1.1 {answer.status} {REASONS.get(answer.status, '')}\r\n"
    return status.encode("latin-1") + head + b"\r\n" + answer.body
