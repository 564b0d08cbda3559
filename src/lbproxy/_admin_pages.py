"""What the admin listener serves besides the JSON API: /metrics and the dashboard.

The dashboard is one page and its script and style sheet, shipped in the package
(``lbproxy/dashboard/``): no CDN, nothing fetched from elsewhere (it runs air-gapped). The
page polls /status once a second; its buttons call /add, /rm and /kill with the token typed
into it.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

from ._headers import encode_headers
from ._messages import Answer, failure

#: path -> (file in lbproxy/dashboard/, content type)
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
#: Only our own files run in the page, and it cannot be framed by another site.
_SECURITY = (
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
)


def load_assets() -> dict[str, tuple[bytes, str]]:
    """Read the dashboard's files (at startup, in a thread: it is file I/O)."""
    folder = resources.files("lbproxy") / "dashboard"
    return {path: ((folder / name).read_bytes(), kind) for path, (name, kind) in ASSETS.items()}


class AdminPages:
    def __init__(
        self,
        assets: dict[str, tuple[bytes, str]],
        metrics: Callable[[], bytes] | None,
        metrics_type: str,
    ) -> None:
        self._assets = assets
        #: Renders /metrics; None when metrics are off.
        self._metrics = metrics
        self._metrics_type = metrics_type

    @property
    def paths(self) -> list[str]:
        return [*self._assets, "/metrics"]

    def page(self, path: str, method: str) -> tuple[int, bytes, str] | Answer | None:
        """(status, body, content type) for ``path``, a JSON failure, or None: not ours."""
        if path != "/metrics" and path not in self._assets:
            return None
        if method not in ("GET", "HEAD"):
            return failure(
                f"Method {method} is not allowed on {path}; use GET", 405, {"Allow": "GET"}
            )
        if path == "/metrics":
            if self._metrics is None:
                return failure("Metrics are off (metrics.enabled: false)", 404)
            return 200, self._metrics(), self._metrics_type
        body, kind = self._assets[path]
        return 200, body, kind


def head_lines(body_length: int, kind: str) -> bytes:
    """The encoded header lines of a page's answer."""
    return encode_headers(
        [("Content-Type", kind), ("Content-Length", str(body_length)), *_SECURITY]
    )
