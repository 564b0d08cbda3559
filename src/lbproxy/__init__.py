"""lbproxy: a consistent-hashing HTTP load balancer that owns and heals its replicas.

The public names are imported on first use (PEP 562), so that importing one module of the
package (``lbproxy.replica`` in every replica process, ``lbproxy._ring`` in a tool) loads
only what that module needs, not the balancer, its configuration schema and its backends.
"""

from __future__ import annotations

import importlib
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
