"""Which part of a request chooses its replica (``hashing.key`` in config.yaml)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Protocol


class RequestView(Protocol):
    """The parts of an incoming request a key can come from."""

    @property
    def first_values(self) -> Mapping[bytes, bytes]:
        """Each header's first value as received, by its lower-cased name (latin-1 bytes):
        read as is, rather than wrapped in a case-insensitive mapping per request."""
        ...

    @property
    def remote(self) -> str | None: ...
    @property
    def path(self) -> str: ...
    @property
    def cookies(self) -> Mapping[str, str]: ...
    @property
    def query(self) -> Mapping[str, str]: ...


REQUEST_ID_HEADER = "X-Request-Id"

KeyFunction = Callable[[RequestView], tuple[str, bool]]
"""Returns (key, generated): generated is True when the request carried no key of its own."""

_rng = random.SystemRandom()


def random_request_id() -> str:
    """A random 6-digit request id, as the assignment assumes for its clients."""
    return str(_rng.randint(100_000, 999_999))


def make_key_function(spec: str) -> KeyFunction:
    """The key function for a validated ``hashing.key`` spec.

    A request without the named part gets a random 6-digit id, spreading such requests
    over all replicas the way the assignment's random request ids do.
    """
    if spec == "request_id":
        return _from_header(REQUEST_ID_HEADER)
    if spec == "client_ip":
        return lambda r: (r.remote, False) if r.remote else (random_request_id(), True)
    if spec == "path":
        return lambda r: (r.path, False)
    kind, _, name = spec.partition(":")
    if kind == "header" and name:
        return _from_header(name)
    if kind == "cookie" and name:
        return _from_value(lambda r: r.cookies.get(name))
    if kind == "query" and name:
        return _from_value(lambda r: r.query.get(name))
    raise ValueError(f"unknown request key {spec!r}")


def _from_header(name: str) -> KeyFunction:
    raw = name.lower().encode("latin-1")

    def key(request: RequestView) -> tuple[str, bool]:
        value = request.first_values.get(raw)
        if value:
            return value.decode("latin-1"), False
        return random_request_id(), True

    return key


def _from_value(part: Callable[[RequestView], str | None]) -> KeyFunction:
    def key(request: RequestView) -> tuple[str, bool]:
        value = part(request)
        if value:
            return value, False
        return random_request_id(), True

    return key
