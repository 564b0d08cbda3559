"""lbproxy: a consistent-hashing HTTP load balancer that owns and heals its replicas."""

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
