"""The hot path's modules compiled to C extensions by mypyc, beside their Python sources.

The Python sources stay the reference and the fallback: with ``LBPROXY_NO_COMPILE=1``, or
without a C compiler or the Python headers, the package is built pure Python (and says why).
``LBPROXY_PURE_PYTHON=1`` runs the Python sources even where the compiled modules are installed
(``lbproxy/__init__.py``). Everything else is in pyproject.toml.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent

#: Per request, the data path runs through these (python -m bench.hotpath). The tests and the
#: Makefile read this list from here.
HOT_MODULES = (
    "lbproxy._flow",
    "lbproxy._framing",
    "lbproxy._headers",
    "lbproxy._keys",
    "lbproxy._maglev",
    "lbproxy._pool",
    "lbproxy._proxy",
    "lbproxy._recording",
    "lbproxy._relay",
    "lbproxy._ring",
    "lbproxy._stats",
    "lbproxy._upstream_heads",
    "lbproxy.front._answer",
    "lbproxy.front._connection",
    "lbproxy.front._refusals",
    "lbproxy.front._parser",
    "lbproxy.front._request",
    "lbproxy.front._view",
    "lbproxy.transport._httptools",
    "lbproxy.transport._parsing",
    "lbproxy.transport._read_timeout",
)


def why_not_compiled() -> str | None:
    """Why the hot modules cannot be compiled here, or None if they can."""
    if os.environ.get("LBPROXY_NO_COMPILE", "") not in ("", "0"):
        return "LBPROXY_NO_COMPILE is set"
    if sys.implementation.name != "cpython":
        return f"mypyc compiles for CPython only, not {sys.implementation.name}"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        return f"no Python headers ({include}/Python.h)"
    return None


def remove_compiled(keep: tuple[str, ...] = ()) -> None:
    """Delete what an earlier editable install compiled in place, but for the modules in
    ``keep``: a module compiled once and no longer meant to be would still be imported."""
    package = ROOT / "src" / "lbproxy"
    for built in package.rglob("*.so"):
        module = ".".join(built.relative_to(ROOT / "src").with_suffix("").with_suffix("").parts)
        if module not in keep:
            built.unlink()
    for built in ROOT.joinpath("src").glob("lbproxy__mypyc.*.so"):
        if not keep:
            built.unlink()


def ext_modules() -> list:
    reason = why_not_compiled()
    if reason is not None:
        print(f"lbproxy: pure Python, the hot path is not compiled: {reason}", file=sys.stderr)
        remove_compiled()
        return []
    remove_compiled(HOT_MODULES)
    from mypyc.build import mypycify

    sources = [str(Path("src", *name.split(".")).with_suffix(".py")) for name in HOT_MODULES]
    # The paths are relative (setuptools wants them so); mypyc's C goes to build/.
    os.chdir(ROOT)
    return mypycify(
        ["--ignore-missing-imports", "--follow-imports=silent", *sources],
        opt_level="3",
        # One shared library for the group, named for the package (not a hash).
        group_name="lbproxy",
    )


setup(ext_modules=ext_modules())
