"""lbproxy: a consistent-hashing HTTP load balancer that owns and heals its replicas.

The public names are imported on first use (PEP 562), so that importing one module of the
package (``lbproxy.replica`` in every replica process, ``lbproxy._ring`` in a tool) loads
only what that module needs, not the balancer, its configuration schema and its backends.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._config import Config, load_config, parse_config, parse_config_text
    from ._errors import (
        BackendError,
        ClientDisconnectedError,
        ConfigError,
        LbproxyError,
        NameInUseError,
        RequestError,
        UpstreamConnectError,
        UpstreamError,
        UpstreamProtocolError,
        UpstreamTimeoutError,
    )
    from ._hashing import HashScheme, make_scheme
    from ._maglev import MaglevTable
    from ._ring import HashRing
    from ._routing import LoadBound, build_ring
    from ._server import Server

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "BackendError": "._errors",
    "ClientDisconnectedError": "._errors",
    "Config": "._config",
    "ConfigError": "._errors",
    "HashRing": "._ring",
    "HashScheme": "._hashing",
    "LbproxyError": "._errors",
    "LoadBound": "._routing",
    "MaglevTable": "._maglev",
    "NameInUseError": "._errors",
    "RequestError": "._errors",
    "Server": "._server",
    "UpstreamConnectError": "._errors",
    "UpstreamError": "._errors",
    "UpstreamProtocolError": "._errors",
    "UpstreamTimeoutError": "._errors",
    "build_ring": "._routing",
    "load_config": "._config",
    "make_scheme": "._hashing",
    "parse_config": "._config",
    "parse_config_text": "._config",
}

__all__ = [
    "BackendError",
    "ClientDisconnectedError",
    "Config",
    "ConfigError",
    "HashRing",
    "HashScheme",
    "LbproxyError",
    "LoadBound",
    "MaglevTable",
    "NameInUseError",
    "RequestError",
    "Server",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamTimeoutError",
    "__version__",
    "build_ring",
    "load_config",
    "make_scheme",
    "parse_config",
    "parse_config_text",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return __all__


class _PythonSources:
    """Imports the package's modules from their Python sources even where a compiled one
    (setup.py, mypyc) sits beside: ``LBPROXY_PURE_PYTHON=1``, to run the reference code (the
    data-path tests run both ways) or to rule the compiled modules out of a problem."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> Any:
        if not name.startswith(__name__ + "."):
            return None
        from importlib.machinery import PathFinder
        from importlib.util import spec_from_file_location

        spec = PathFinder.find_spec(name, path)
        origin = spec.origin if spec is not None else None
        if origin is None or origin.endswith(".py"):
            return spec
        source = os.path.join(os.path.dirname(origin), name.rpartition(".")[2] + ".py")
        if not os.path.exists(source):
            return spec
        return spec_from_file_location(name, source)


if os.environ.get("LBPROXY_PURE_PYTHON", "") not in ("", "0"):
    sys.meta_path.insert(0, _PythonSources())
