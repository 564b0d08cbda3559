"""The hot path runs compiled (setup.py, mypyc) wherever it can be built, not silently as
Python; ``LBPROXY_PURE_PYTHON=1`` runs the Python sources instead (the reference, which
`make test` runs the data-path tests against too)."""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import hot_modules

ROOT = Path(__file__).resolve().parent.parent


def why_not_compiled() -> str | None:
    """setup.py's reasons for building pure Python (loaded without running setup())."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    keep = [
        node
        for node in tree.body
        if (
            isinstance(node, (ast.Import, ast.ImportFrom))
            and not (isinstance(node, ast.ImportFrom) and node.module == "setuptools")
        )
        or (isinstance(node, ast.FunctionDef) and node.name == "why_not_compiled")
    ]
    namespace: dict[str, object] = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "setup.py", "exec"), namespace)
    return namespace["why_not_compiled"]()  # type: ignore[operator]


def is_compiled(path: str) -> bool:
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_the_hot_modules_are_source_files_of_the_package() -> None:
    for name in hot_modules():
        assert (ROOT / "src" / Path(*name.split("."))).with_suffix(".py").is_file(), name


def test_the_hot_modules_are_compiled_or_this_run_is_of_the_sources() -> None:
    if os.environ.get("LBPROXY_PURE_PYTHON", "") not in ("", "0"):
        # `make test`'s second run: every data-path test ran on the Python sources.
        for name in hot_modules():
            path = importlib.import_module(name).__file__
            assert path is not None and path.endswith(".py"), (name, path)
        return
    reason = why_not_compiled()
    if reason is not None:
        pytest.skip(f"the hot path cannot be compiled here: {reason}")
    stale = []
    for name in hot_modules():
        module = importlib.import_module(name)
        path = module.__file__
        assert path is not None and is_compiled(path), (
            f"{name} was imported from {path}: the compiled module is missing "
            "(reinstall: make venv, or pip install -e .)"
        )
        source = Path(path).with_name(name.rpartition(".")[2] + ".py")
        if ROOT / "src" in source.parents and source.stat().st_mtime > Path(path).stat().st_mtime:
            stale.append(name)
    # An editable install compiles in place, and a source edited since runs the old code.
    assert stale == [], f"compiled before their sources changed (reinstall): {stale}"


def test_pure_python_imports_the_sources() -> None:
    names = hot_modules()
    code = (
        "import importlib, json\n"
        f"print(json.dumps([importlib.import_module(n).__file__ for n in {list(names)!r}]))"
    )
    env = {**os.environ, "LBPROXY_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    ).stdout
    files = ast.literal_eval(out.strip().replace("null", "None"))
    assert len(files) == len(names)
    for name, path in zip(names, files, strict=True):
        assert path.endswith(name.rpartition(".")[2] + ".py"), (name, path)
