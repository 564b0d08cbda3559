"""Which part of a request chooses its replica (``hashing.key`` in config.yaml)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Protocol


class RequestView(Protocol):
    """The parts of an incoming request a key can come from (aiohttp's Request fits)."""

    @property
    def headers(self) -> Mapping[str, str]: ...
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
    attr = {"header": "headers", "cookie": "cookies", "query": "query"}.get(kind)
    if attr is None or not name:
        raise ValueError(f"unknown request key {spec!r}")
    return _from_mapping(attr, name)


def _from_header(name: str) -> KeyFunction:
    raw = name.lower().encode("latin-1")

    def key(request: RequestView) -> tuple[str, bool]:
        # The balancer's own requests keep the first value of each header as parsed
        # (lower-cased name -> bytes): read it there rather than wrap it in a Mapping for
        # every request on the hot path.
        first: dict[bytes, bytes] | None = getattr(request, "first_values", None)
        if first is not None:
            raw_value = first.get(raw)
            value = raw_value.decode("latin-1") if raw_value else None
        else:
            value = request.headers.get(name)
        if value:
            return value, False
        return random_request_id(), True

    return key


def _from_mapping(attr: str, name: str) -> KeyFunction:
    def key(request: RequestView) -> tuple[str, bool]:
        value = getattr(request, attr).get(name)
        if value:
            return value, False
        return random_request_id(), True

    return key
