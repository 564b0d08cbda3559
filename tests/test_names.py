"""Replica hostnames: Docker container-name rules and random names for new replicas."""

from __future__ import annotations

import re
import string

import pytest

from lbproxy._names import MAX_NAME_LENGTH, name_problem, random_name


@pytest.mark.parametrize(
    "name",
    [
        "S5",
        "S10",
        "server-1",
        "a.b_c-d",
        "ab",
        "9lives",
        "web_1.internal",
        "A" * 63,
        "x" + "-" * 62,
        "UPPER",
    ],
)
def test_valid_names(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a",
        "-x",
        "_x",
        ".x",
        "has space",
        "Server 1",
        "tab\there",
        "new\nline",
        "slash/name",
        "colon:name",
        "at@name",
        "\u00e9t\u00e9",
        "S5 ",
        "x" * 64,
        "y" * 200,
    ],
)
def test_invalid_names(name: str) -> None:
    problem = name_problem(name)
    assert problem is not None
    assert problem.startswith("hostname ")


@pytest.mark.parametrize("name", [None, 5, 1.5, b"S5", ["S5"], {"n": 1}, True])
def test_non_string_names(name: object) -> None:
    assert name_problem(name) == f"hostname {name!r} is not a string"


def test_problem_messages_say_what_is_wrong() -> None:
    assert MAX_NAME_LENGTH == 63
    long = name_problem("x" * 64)
    assert long is not None
    assert "longer than 63 characters" in long
    bad = name_problem("Server 1")
    assert bad is not None
    assert "'Server 1'" in bad
    assert "not a valid container name" in bad


def test_random_name_format() -> None:
    for _ in range(50):
        name = random_name("server", [])
        assert re.fullmatch(r"server-[a-z0-9]{6}", name)
        assert name_problem(name) is None
    assert re.fullmatch(r"web-[a-z0-9]{10}", random_name("web", [], length=10))


def test_random_names_vary() -> None:
    names = {random_name("server", []) for _ in range(50)}
    assert len(names) > 45


def test_random_name_avoids_taken_names_case_insensitively() -> None:
    alphabet = string.ascii_lowercase + string.digits
    free = "q"
    # Every one-character name but one is taken, spelled in upper case.
    taken = [f"wEB-{c}".upper() for c in alphabet if c != free]
    for _ in range(20):
        assert random_name("Web", taken, length=1) == f"Web-{free}"
    lower = [f"web-{c}" for c in alphabet if c != free]
    for _ in range(20):
        assert random_name("WEB", lower, length=1) == f"WEB-{free}"


def test_random_name_avoids_taken_in_any_collection() -> None:
    alphabet = string.ascii_lowercase + string.digits
    taken = frozenset(f"p-{a}{b}" for a in alphabet for b in alphabet if (a, b) != ("z", "9"))
    assert random_name("p", taken, length=2) == "p-z9"
