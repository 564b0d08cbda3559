"""tools/import_floors.py: the module map it prints, and the floors it finds in the package."""

from __future__ import annotations

from pathlib import Path

from conftest import load_tool

floors_tool = load_tool("import_floors")


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "lbproxy"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_floors_of_a_small_package(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "_a.py": "import json\n",
            "_b.py": "from ._a import x\n",
            "_c.py": (
                "from typing import TYPE_CHECKING\nfrom . import _b\n"
                "if TYPE_CHECKING:\n    from ._d import y\n"
                "def f():\n    from ._d import y\n"
            ),
            "_d.py": "from ._c import z\n",
            "sub/__init__.py": "from .._a import x\nfrom ._e import e\n",
            "sub/_e.py": "",
        },
    )
    modules = floors_tool.scan(root)
    levels = floors_tool.floors(modules)
    assert levels["lbproxy._a"] == 0 and levels["lbproxy.sub._e"] == 0
    assert levels["lbproxy._b"] == 1 and levels["lbproxy.sub"] == 1
    # Neither the TYPE_CHECKING import nor the one on first use counts: no cycle with _d.
    assert levels["lbproxy._c"] == 2 and levels["lbproxy._d"] == 3
    assert modules["lbproxy._c"].lazy == {"lbproxy._d"}
    table = floors_tool.table(modules)
    assert "| 2 | `lbproxy._c` | `_b` | `_d` |" in table.splitlines()


def test_the_pure_core_sits_on_the_lowest_floors() -> None:
    levels = floors_tool.floors(floors_tool.scan())
    assert levels["lbproxy._hashing"] == 0
    assert levels["lbproxy._ring"] <= 1 and levels["lbproxy._maglev"] <= 2
    assert levels["lbproxy._exchange"] < levels["lbproxy._proxy"]
    # The server wires everything: the top floor.
    assert levels["lbproxy._server"] == max(levels.values())
