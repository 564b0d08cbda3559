"""Validation of /add and /rm bodies. Pure: returns what to do or raises RequestError."""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from ._errors import RequestError
from ._names import name_problem

ADD_TOO_MANY_NAMES = "<Error> Length of hostname list is more than newly added instances"
RM_TOO_MANY_NAMES = "<Error> Length of hostname list is more than removable instances"
_FIELDS = frozenset({"n", "hostnames"})
#: A valid body is 2 levels deep; far deeper is refused before parsing (Python's parser would
#: hit its recursion limit on a couple of KiB of brackets).
MAX_DEPTH = 16
#: More digits than any count could need (Python would parse up to 4300).
MAX_DIGITS = 20
_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


@dataclass(frozen=True, slots=True)
class ScaleRequest:
    n: int
    hostnames: tuple[str, ...]


def _err(message: str) -> RequestError:
    return RequestError(f"<Error> {message}")


def _depth(text: str) -> int:
    """How deeply arrays and objects nest in ``text`` (brackets in strings not counted)."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _err(f"Field {key!r} appears twice in the request body")
        seen[key] = value
    return seen


def _no_constant(name: str) -> Any:
    raise _err(f"Request body is not valid JSON: {name} is not a JSON number")


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_DIGITS:
        raise _err(f"Request body has a number too large: {digits[:12]}... ({len(digits)} digits)")
    return int(digits)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _err(f"Request body has a number out of range: {text[:24]}")
    return value


def _decode(raw: bytes) -> Any:
    """The JSON value of ``raw``: strict UTF-8 JSON (RFC 8259) and nothing that Python's
    parser would take beyond it (NaN, a byte order mark, UTF-16) or choke on (depth)."""
    if raw.startswith(_BOMS):
        raise _err(
            "Request body is not valid JSON: it starts with a byte order mark "
            "(send UTF-8 without one)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _err(
            f"Request body is not valid JSON: not UTF-8 (byte 0x{raw[e.start]:02x} at "
            f"position {e.start})"
        ) from None
    if not text.strip():
        raise _err('Request body is empty; expected a JSON object such as {"n": 1}')
    # The scan only when the brackets could nest too deeply: a usual body skips it.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise _err(f"Request body nests arrays or objects more than {MAX_DEPTH} levels deep")
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_int=_bounded_int,
            parse_float=_finite_float,
        )
    except (ValueError, RecursionError) as e:
        raise _err(f"Request body is not valid JSON: {e}") from None


def _parse(raw: bytes, too_many: str) -> ScaleRequest:
    body = _decode(raw)
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


def parse_kill(raw: bytes, in_use: Collection[str]) -> ScaleRequest:
    """A valid /kill body: /rm's shape, the named replicas plus others at random up to n."""
    return parse_rm(raw, in_use)
