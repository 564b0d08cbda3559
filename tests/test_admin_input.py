"""Validation of /add and /rm bodies: the contract's exact messages, a clear one per mistake."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lbproxy._admin_input import (
    ADD_TOO_MANY_NAMES,
    RM_TOO_MANY_NAMES,
    ScaleRequest,
    parse_add,
    parse_rm,
)
from lbproxy._errors import LbproxyError, RequestError

IN_USE = ["Server-1", "Server-2", "Server-3"]


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def add_error(raw: bytes, in_use: list[str] = IN_USE, current: int = 3, cap: int = 32) -> str:
    with pytest.raises(RequestError) as info:
        parse_add(raw, in_use, current, cap)
    err = info.value
    assert err.status == 400
    assert err.message == str(err)
    assert err.message.startswith("<Error> ")
    return err.message


def rm_error(raw: bytes, in_use: list[str] = IN_USE) -> str:
    with pytest.raises(RequestError) as info:
        parse_rm(raw, in_use)
    err = info.value
    assert err.status == 400
    assert err.message == str(err)
    assert err.message.startswith("<Error> ")
    return err.message


Parser = Any
BOTH = pytest.mark.parametrize("error_of", [add_error, rm_error], ids=["add", "rm"])


# --- the contract's exact messages (docs/api.md) ------------------------------------------------


def test_add_spec_message_for_too_many_names() -> None:
    message = add_error(body({"n": 2, "hostnames": ["S5", "S4", "S10"]}))
    assert message == "<Error> Length of hostname list is more than newly added instances"
    assert message == ADD_TOO_MANY_NAMES


def test_rm_spec_message_for_too_many_names() -> None:
    message = rm_error(body({"n": 1, "hostnames": ["Server-1", "Server-2"]}))
    assert message == "<Error> Length of hostname list is more than removable instances"
    assert message == RM_TOO_MANY_NAMES


def test_too_many_names_is_checked_before_the_names_themselves() -> None:
    # The assignment's clients get its message even when the extra names are also bad.
    assert add_error(body({"n": 1, "hostnames": ["a", "b"]})) == ADD_TOO_MANY_NAMES
    assert rm_error(body({"n": 1, "hostnames": ["nope", "nada"]})) == RM_TOO_MANY_NAMES


# --- valid bodies -------------------------------------------------------------------------------


def test_add_spec_example() -> None:
    req = parse_add(body({"n": 4, "hostnames": ["S5", "S4", "S10", "S11"]}), IN_USE, 3, 32)
    assert req == ScaleRequest(n=4, hostnames=("S5", "S4", "S10", "S11"))


def test_add_without_or_with_fewer_hostnames() -> None:
    assert parse_add(body({"n": 2}), IN_USE, 3, 32) == ScaleRequest(2, ())
    assert parse_add(body({"n": 2, "hostnames": None}), IN_USE, 3, 32) == ScaleRequest(2, ())
    assert parse_add(body({"n": 2, "hostnames": []}), IN_USE, 3, 32) == ScaleRequest(2, ())
    assert parse_add(body({"n": 3, "hostnames": ["S5"]}), IN_USE, 3, 32) == ScaleRequest(3, ("S5",))
    assert parse_add(b'  {"n": 1}\n', IN_USE, 3, 32) == ScaleRequest(1, ())


def test_add_up_to_the_cap() -> None:
    assert parse_add(body({"n": 29}), IN_USE, 3, 32).n == 29


def test_rm_spec_example() -> None:
    in_use = ["Server 1", "S5", "S4", "Server-2"]
    req = parse_rm(body({"n": 3, "hostnames": ["S5", "S4"]}), in_use)
    assert req == ScaleRequest(n=3, hostnames=("S5", "S4"))


def test_rm_names_match_case_insensitively() -> None:
    req = parse_rm(body({"n": 1, "hostnames": ["server-1"]}), IN_USE)
    assert req.hostnames == ("server-1",)


def test_rm_all() -> None:
    assert parse_rm(body({"n": 3}), IN_USE) == ScaleRequest(3, ())


# --- malformed bodies ---------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("raw", [b"", b"   ", b"\n\t"])
def test_empty_body(error_of: Parser, raw: bytes) -> None:
    assert "Request body is empty" in error_of(raw)


@BOTH
@pytest.mark.parametrize("raw", [b"{", b"{'n': 1}", b"n=1", b'{"n": 1,}', b"\xff\xfe\x00", b"nan"])
def test_malformed_json(error_of: Parser, raw: bytes) -> None:
    assert "Request body is not valid JSON" in error_of(raw)


@BOTH
@pytest.mark.parametrize(
    ("value", "kind"),
    [([1, 2], "list"), ("two", "str"), (2, "int"), (1.5, "float"), (None, "NoneType")],
)
def test_body_not_an_object(error_of: Parser, value: Any, kind: str) -> None:
    assert error_of(body(value)) == f"<Error> Request body must be a JSON object, not {kind}"


@BOTH
def test_unknown_field(error_of: Parser) -> None:
    message = error_of(body({"n": 1, "hostname": ["S5"]}))
    assert "Unknown field(s) 'hostname'" in message
    assert "'n', 'hostnames'" in message
    message = error_of(body({"n": 1, "z": 0, "a": 0}))
    assert "'a', 'z'" in message


@BOTH
def test_missing_n(error_of: Parser) -> None:
    assert error_of(body({})) == "<Error> Field 'n' (the number of replicas) is missing"
    assert "Field 'n'" in error_of(body({"hostnames": ["S5"]}))


@BOTH
@pytest.mark.parametrize(
    ("n", "shown"),
    [
        (0, "0"),
        (-1, "-1"),
        (1.5, "1.5"),
        (1.0, "1.0"),
        ("2", '"2"'),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        ([1], "[1]"),
    ],
)
def test_n_not_a_positive_integer(error_of: Parser, n: Any, shown: str) -> None:
    message = error_of(body({"n": n}))
    assert message == f"<Error> Field 'n' must be a positive integer, not {shown}"


@BOTH
@pytest.mark.parametrize(("names", "kind"), [("S5", "str"), ({"S5": 1}, "dict"), (3, "int")])
def test_hostnames_not_a_list(error_of: Parser, names: Any, kind: str) -> None:
    message = error_of(body({"n": 1, "hostnames": names}))
    assert message == f"<Error> Field 'hostnames' must be a list of names, not {kind}"


@BOTH
@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("a", "not a valid container name"),
        ("-x", "not a valid container name"),
        ("has space", "not a valid container name"),
        ("x" * 64, "longer than 63"),
        (5, "not a string"),
        (None, "not a string"),
        (["S5"], "not a string"),
    ],
)
def test_invalid_names(error_of: Parser, name: Any, fragment: str) -> None:
    message = error_of(body({"n": 2, "hostnames": ["Server-1", name]}))
    assert message.startswith("<Error> Hostname ")
    assert fragment in message


@BOTH
def test_duplicate_names_case_insensitive(error_of: Parser) -> None:
    message = error_of(body({"n": 2, "hostnames": ["Server-1", "SERVER-1"]}))
    assert message == "<Error> Hostname 'SERVER-1' is listed twice"


# --- JSON that Python's parser takes, or chokes on, but a strict one refuses -------------------

#: Nested 1,200 levels in about 2.4 KB: Python's own parser raises RecursionError on it.
DEEP_ARRAYS = b'{"n": 1, "hostnames": ' + b"[" * 1200 + b"]" * 1200 + b"}"
DEEP_OBJECTS = b'{"n": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}"
UNCLOSED = b"[" * 5000


@BOTH
@pytest.mark.parametrize(
    "raw", [DEEP_ARRAYS, DEEP_OBJECTS, UNCLOSED], ids=["arrays", "objects", "unclosed"]
)
def test_deep_nesting_is_refused(error_of: Parser, raw: bytes) -> None:
    assert "more than 16 levels deep" in error_of(raw)


@BOTH
def test_brackets_inside_strings_are_not_nesting(error_of: Parser) -> None:
    # Brackets in a string (and an escaped quote before them) count for nothing.
    raw = b'{"n": 1, "hostnames": ["\\"' + b"[{" * 40 + b'"]}'
    assert "more than 16 levels" not in error_of(raw)


@BOTH
@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"n": 1, "n": 2}', "Field 'n' appears twice"),
        (b'{"n": 1, "\\u006e": 2}', "Field 'n' appears twice"),
        (b'{"n": NaN}', "NaN is not a JSON number"),
        (b'{"n": Infinity}', "Infinity is not a JSON number"),
        (b'{"n": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"n": 1e999}', "number out of range: 1e999"),
        (b'{"n": ' + b"9" * 5000 + b"}", "number too large: 999999999999... (5000 digits)"),
        (b'{"n": 123456789012345678901}', "(21 digits)"),
        (b'\xef\xbb\xbf{"n": 1}', "byte order mark"),
        ('{"n": 1}'.encode("utf-16"), "byte order mark"),
        ('{"n": 1}'.encode("utf-16-le"), "Request body is not valid JSON"),
        ('{"n": 1}'.encode("utf-32"), "byte order mark"),
        (b'{"n": 1, "hostnames": ["S\xe9"]}', "not UTF-8 (byte 0xe9 at position 25)"),
        (b'{"n": 1, "hostnames": ["\xed\xa0\x80"]}', "not UTF-8"),
    ],
)
def test_json_oddities_are_refused_clearly(error_of: Parser, raw: bytes, fragment: str) -> None:
    message = error_of(raw)
    assert fragment in message
    assert "set_int_max_str_digits" not in message  # Python's advice is not for clients


def test_largest_sensible_numbers_still_parse() -> None:
    assert "cap of 32" in add_error(body({"n": 10**20 - 1}))
    assert "only 3 exist" in rm_error(body({"n": 10**20 - 1}))


# --- against the running set --------------------------------------------------------------------


def test_add_name_already_in_use() -> None:
    message = add_error(body({"n": 2, "hostnames": ["S9", "server-2"]}))
    assert message == "<Error> Hostname 'server-2' is already in use"


def test_rm_unknown_name() -> None:
    assert rm_error(body({"n": 1, "hostnames": ["S5"]})) == "<Error> No replica named 'S5'"


def test_rm_more_than_exist() -> None:
    message = rm_error(body({"n": 4}))
    assert message == "<Error> Cannot remove 4 replica(s): only 3 exist"
    assert "only 0 exist" in rm_error(body({"n": 1}), [])


def test_add_cap_exceeded() -> None:
    message = add_error(body({"n": 2}), current=31, cap=32)
    assert "33 would exceed the cap of 32" in message
    assert "replicas.max" in message
    assert "cap of 5" in add_error(body({"n": 1}), current=5, cap=5)


def test_request_error_is_an_lbproxy_error() -> None:
    assert issubclass(RequestError, LbproxyError)
    assert RequestError("x", 409).status == 409
