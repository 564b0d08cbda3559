"""Request keys: which part of a request picks its replica (hashing.key)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
from multidict import CIMultiDict

from lbproxy._keys import REQUEST_ID_HEADER, make_key_function, random_request_id


@dataclass
class FakeRequest:
    """The parts of a request a key can come from (``RequestView``), headers given as a
    case-insensitive mapping for readability."""

    headers: Mapping[str, str] = field(default_factory=CIMultiDict)
    remote: str | None = None
    path: str = "/"
    cookies: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)

    @property
    def first_values(self) -> dict[bytes, bytes]:
        first: dict[bytes, bytes] = {}
        for name, value in self.headers.items():
            first.setdefault(name.lower().encode("latin-1"), value.encode("latin-1"))
        return first


SIX_DIGITS = re.compile(r"[1-9][0-9]{5}")


def assert_generated(result: tuple[str, bool]) -> None:
    key, generated = result
    assert generated is True
    assert SIX_DIGITS.fullmatch(key), key
    assert 100_000 <= int(key) <= 999_999


def test_random_request_id() -> None:
    ids = {random_request_id() for _ in range(200)}
    assert all(SIX_DIGITS.fullmatch(i) for i in ids)
    assert len(ids) > 150


def test_request_id_header_present() -> None:
    assert REQUEST_ID_HEADER == "X-Request-Id"
    f = make_key_function("request_id")
    req = FakeRequest(headers=CIMultiDict({"X-Request-Id": "132574"}))
    assert f(req) == ("132574", False)
    # Header names are case-insensitive, as in aiohttp.
    assert f(FakeRequest(headers=CIMultiDict({"x-request-id": "abc"}))) == ("abc", False)


@pytest.mark.parametrize("headers", [{}, {"X-Request-Id": ""}, {"X-Other": "1"}])
def test_request_id_missing_is_generated(headers: dict[str, str]) -> None:
    f = make_key_function("request_id")
    assert_generated(f(FakeRequest(headers=CIMultiDict(headers))))


def test_generated_ids_vary() -> None:
    f = make_key_function("request_id")
    keys = {f(FakeRequest())[0] for _ in range(100)}
    assert len(keys) > 80


def test_client_ip() -> None:
    f = make_key_function("client_ip")
    assert f(FakeRequest(remote="10.1.2.3")) == ("10.1.2.3", False)
    assert f(FakeRequest(remote="::1")) == ("::1", False)
    assert_generated(f(FakeRequest(remote=None)))
    assert_generated(f(FakeRequest(remote="")))


def test_path() -> None:
    f = make_key_function("path")
    assert f(FakeRequest(path="/home")) == ("/home", False)
    assert f(FakeRequest(path="/")) == ("/", False)
    assert f(FakeRequest(path="/a/b", query={"x": "1"})) == ("/a/b", False)


def test_header_key() -> None:
    f = make_key_function("header:X-User")
    assert f(FakeRequest(headers=CIMultiDict({"X-User": "alice"}))) == ("alice", False)
    assert f(FakeRequest(headers=CIMultiDict({"x-user": "bob"}))) == ("bob", False)
    assert_generated(f(FakeRequest(headers=CIMultiDict({"X-Request-Id": "123456"}))))
    assert_generated(f(FakeRequest(headers=CIMultiDict({"X-User": ""}))))


def test_cookie_key() -> None:
    f = make_key_function("cookie:sid")
    assert f(FakeRequest(cookies={"sid": "s3cr3t", "other": "x"})) == ("s3cr3t", False)
    assert_generated(f(FakeRequest(cookies={"SID": "upper"})))  # cookie names are case-sensitive
    assert_generated(f(FakeRequest(cookies={})))
    # A header of the same name does not count as the cookie.
    assert_generated(f(FakeRequest(headers=CIMultiDict({"sid": "h"}))))


def test_query_key() -> None:
    f = make_key_function("query:user")
    assert f(FakeRequest(query={"user": "42"})) == ("42", False)
    assert_generated(f(FakeRequest(query={"usr": "42"})))
    assert_generated(f(FakeRequest(query={"user": ""})))
    assert_generated(f(FakeRequest(cookies={"user": "42"})))


def test_name_with_colon_in_it() -> None:
    f = make_key_function("query:a:b")
    assert f(FakeRequest(query={"a:b": "v"})) == ("v", False)


@pytest.mark.parametrize("spec", ["", "ip", "param:x", "header:", "cookie:", "query:", "Path"])
def test_unknown_spec_rejected(spec: str) -> None:
    with pytest.raises(ValueError, match="unknown request key"):
        make_key_function(spec)
