"""A request's head as key functions and the proxy read it (``_keys.RequestView``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, unquote

from mypy_extensions import trait

from .._headers import decode_wire


class Headers(Mapping[str, str]):
    """A request's headers as a case-insensitive mapping (first value of a repeated name)."""

    __slots__ = ("_first",)

    def __init__(self, first: dict[bytes, bytes]) -> None:
        self._first = first  # lower-cased name -> value, as parsed

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower().encode("latin-1")].decode("latin-1")

    def get(self, name: str, default: Any = None) -> Any:
        value = self._first.get(name.lower().encode("latin-1"))
        return default if value is None else value.decode("latin-1")

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower().encode("latin-1") in self._first

    def __iter__(self) -> Iterator[str]:
        return (k.decode("latin-1") for k in self._first)

    def __len__(self) -> int:
        return len(self._first)


@trait  # compiled (mypyc), ``Request`` may have only one base that is not a trait
class HeadView:
    """The parsed head, decoded on demand (the hot path reads none of it)."""

    __slots__ = ()

    target: str
    #: Wire lines (``_headers.SEP``), passed on as they are when nothing needs rewriting.
    header_lines: list[bytes]
    #: Lower-cased name -> first value, as parsed (what header keys read).
    first_values: dict[bytes, bytes]

    @property
    def headers(self) -> Headers:
        return Headers(self.first_values)

    @property
    def header_items(self) -> list[tuple[str, str]]:
        return decode_wire(self.header_lines)

    @property
    def raw_path(self) -> str:
        """The request target without its query, as sent (not decoded)."""
        return self.target.partition("?")[0]

    @property
    def path(self) -> str:
        return unquote(self.raw_path)

    @property
    def query(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in parse_qsl(self.target.partition("?")[2], keep_blank_values=True):
            out.setdefault(k, v)
        return out

    @property
    def cookies(self) -> dict[str, str]:
        cookie: SimpleCookie = SimpleCookie()
        for k, v in self.header_items:
            if k.lower() == "cookie":
                with contextlib.suppress(CookieError):
                    cookie.load(v)
        return {k: m.value for k, m in cookie.items()}
