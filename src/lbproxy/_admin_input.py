"""Validation of /add and /rm bodies. Pure: returns what to do or raises RequestError."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from ._errors import RequestError
from ._names import name_problem

ADD_TOO_MANY_NAMES = "<Error> Length of hostname list is more than newly added instances"
RM_TOO_MANY_NAMES = "<Error> Length of hostname list is more than removable instances"
_FIELDS = frozenset({"n", "hostnames"})


@dataclass(frozen=True, slots=True)
class ScaleRequest:
    n: int
    hostnames: tuple[str, ...]


def _err(message: str) -> RequestError:
    return RequestError(f"<Error> {message}")


def _parse(raw: bytes, too_many: str) -> ScaleRequest:
    if not raw.strip():
        raise _err('Request body is empty; expected a JSON object such as {"n": 1}')
    try:
        body: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise _err(f"Request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise _err(f"Request body must be a JSON object, not {type(body).__name__}")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise _err(f"Unknown field(s) {', '.join(map(repr, unknown))}; expected 'n', 'hostnames'")
    if "n" not in body:
        raise _err("Field 'n' (the number of replicas) is missing")
    n = body["n"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise _err(f"Field 'n' must be a positive integer, not {json.dumps(n)}")
    names = body.get("hostnames")
    if names is None:
        names = []
    if not isinstance(names, list):
        raise _err(f"Field 'hostnames' must be a list of names, not {type(names).__name__}")
    if len(names) > n:
        raise RequestError(too_many)
    for name in names:
        problem = name_problem(name)
        if problem:
            raise _err(problem[0].upper() + problem[1:])
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise _err(f"Hostname {name!r} is listed twice")
        seen.add(name.lower())
    return ScaleRequest(n=n, hostnames=tuple(names))


def parse_add(raw: bytes, in_use: Collection[str], current: int, cap: int) -> ScaleRequest:
    """A valid /add body, checked against the names in use and the replica cap."""
    req = _parse(raw, ADD_TOO_MANY_NAMES)
    lowered = {h.lower() for h in in_use}
    for name in req.hostnames:
        if name.lower() in lowered:
            raise _err(f"Hostname {name!r} is already in use")
    if current + req.n > cap:
        raise _err(
            f"Cannot add {req.n} replica(s): {current + req.n} would exceed the cap of {cap} "
            "(replicas.max in config.yaml)"
        )
    return req


def parse_rm(raw: bytes, in_use: Collection[str]) -> ScaleRequest:
    """A valid /rm body, checked against the replicas that exist."""
    req = _parse(raw, RM_TOO_MANY_NAMES)
    lowered = {h.lower() for h in in_use}
    for name in req.hostnames:
        if name.lower() not in lowered:
            raise _err(f"No replica named {name!r}")
    if req.n > len(in_use):
        raise _err(f"Cannot remove {req.n} replica(s): only {len(in_use)} exist")
    return req
