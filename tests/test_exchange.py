"""The Exchange protocol: the proxy reads nothing of a request that it does not declare, and
the front's request provides everything it declares. Checked on the sources and classes
(the suite runs no type checker), so an undeclared use fails here, not in production."""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType
from typing import Protocol

import lbproxy._proxy
import lbproxy._recording
import lbproxy._relay
import lbproxy._upstream_heads
from lbproxy._exchange import Exchange
from lbproxy.front import Request


def protocol_members(protocol: type) -> set[str]:
    """The names a Protocol class declares, its bases' included (attributes and methods)."""
    names: set[str] = set()
    for cls in protocol.__mro__:
        if cls in (object, Protocol) or not getattr(cls, "_is_protocol", False):
            continue
        declared = set(vars(cls)) | set(vars(cls).get("__annotations__", {}))
        names |= {n for n in declared if not n.startswith("_")}
    return names


def source_of(module: ModuleType) -> str:
    """The Python source of ``module``, also where the compiled one is imported (setup.py)."""
    assert module.__file__ is not None
    return Path(module.__file__).with_name(module.__name__.rpartition(".")[2] + ".py").read_text()


def attributes_read_on(source: str, variable: str) -> set[str]:
    """Every ``<variable>.<name>`` in ``source``."""
    return {
        node.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == variable
    }


def test_the_protocol_declares_the_request_head_body_and_response() -> None:
    members = protocol_members(Exchange)
    for name in ("method", "target", "first_values", "read", "answer", "start", "write", "done"):
        assert name in members


def test_the_proxy_reads_only_what_the_protocol_declares() -> None:
    source = source_of(lbproxy._proxy)
    used = attributes_read_on(source, "request")
    assert {"method", "spawn", "answer"} <= used  # the scan sees the proxy's uses
    assert used - protocol_members(Exchange) == set()
    assert "getattr(" not in source and "hasattr(" not in source


def test_the_proxys_helpers_read_only_what_the_protocol_declares() -> None:
    for module in (lbproxy._relay, lbproxy._upstream_heads, lbproxy._recording):
        source = source_of(module)
        assert attributes_read_on(source, "request") - protocol_members(Exchange) == set(), module


def test_the_fronts_request_provides_the_whole_protocol() -> None:
    missing = {name for name in protocol_members(Exchange) if not hasattr(Request, name)}
    assert missing == set()
