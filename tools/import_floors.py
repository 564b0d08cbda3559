"""Print lbproxy's module map: each module's floor in the import graph and what it imports.

A module's floor is one above the highest of the lbproxy modules it imports when it is
imported (floor 0 imports none). Imports made inside functions (loaded on first use) and
under ``TYPE_CHECKING`` are listed apart and do not count: they load nothing on import.
docs/design.md shows the result; ``python tools/import_floors.py`` prints it afresh.

Standard library only: it reads the sources (``ast``) and imports nothing of lbproxy.
"""

from __future__ import annotations

import argparse
import ast
import functools
from dataclasses import dataclass, field
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "lbproxy"


@dataclass
class Module:
    name: str
    imports: set[str] = field(default_factory=set)
    #: Imported inside a function: loaded on first use, not on import.
    lazy: set[str] = field(default_factory=set)


def _module_name(path: Path, root: Path) -> tuple[str, str]:
    """(the module's dotted name, the package its relative imports start from)."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            nodes.update(id(n) for n in ast.walk(node))
    return nodes


def _targets(node: ast.ImportFrom, package: str, known: set[str]) -> set[str]:
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    if node.module:
        return {".".join([*base, node.module])}
    # ``from . import x``: x is a module when there is one by that name.
    named = {".".join([*base, a.name]) for a in node.names}
    return {n for n in named if n in known} or {".".join(base)}


def scan(root: Path = SRC) -> dict[str, Module]:
    paths = sorted(root.rglob("*.py"))
    names = {_module_name(p, root)[0] for p in paths}
    modules: dict[str, Module] = {}
    for path in paths:
        name, package = _module_name(path, root)
        module = modules[name] = Module(name)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_nodes(tree)
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.level or id(node) in skipped:
                continue
            found = _targets(node, package, names) - {name}
            (module.imports if id(node) in top else module.lazy).update(found)
    return modules


def floors(modules: dict[str, Module]) -> dict[str, int]:
    @functools.cache
    def floor(name: str) -> int:
        below = [floor(m) for m in modules[name].imports if m in modules]
        return 1 + max(below, default=-1)

    return {name: floor(name) for name in modules}


def table(modules: dict[str, Module]) -> str:
    levels = floors(modules)
    lines = ["| floor | module | imports | on first use |", "| --- | --- | --- | --- |"]

    def short(names: set[str]) -> str:
        inside = sorted(n.removeprefix("lbproxy.") for n in names if n in modules)
        return ", ".join(f"`{n}`" for n in inside)

    for name in sorted(modules, key=lambda n: (levels[n], n)):
        m = modules[name]
        lines.append(f"| {levels[name]} | `{name}` | {short(m.imports)} | {short(m.lazy)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, default=SRC, help="the lbproxy package folder")
    args = parser.parse_args(argv)
    print(table(scan(args.src)))


if __name__ == "__main__":
    main()
