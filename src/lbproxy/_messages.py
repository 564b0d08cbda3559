"""The JSON answers the balancer gives of its own, in the contract's shape (docs/api.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JSON = "application/json; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete answer of the balancer's own: status, extra headers and a JSON body."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _json(data: Any, status: int, headers: dict[str, str] | None) -> Answer:
    body = json.dumps(data).encode()
    return Answer(status, body, tuple((headers or {}).items()))


def success(message: Any, status: int = 200) -> Answer:
    return _json({"message": message, "status": "successful"}, status, None)


def failure(message: str, status: int = 400, headers: dict[str, str] | None = None) -> Answer:
    """``message`` without the ``<Error> `` prefix, which is added here."""
    return _json({"message": f"<Error> {message}", "status": "failure"}, status, headers)


def failure_as_is(message: str, status: int = 400) -> Answer:
    """A failure whose message already carries its ``<Error> `` prefix (RequestError's)."""
    return _json({"message": message, "status": "failure"}, status, None)


def missing_endpoint(path: str) -> Answer:
    """The contract's exact answer for a path the replicas do not serve."""
    return failure(f"'{path}' endpoint does not exist in server replicas", 400)
