"""The JSON bodies the balancer answers with, in SPEC.md's shape."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def success(message: Any, status: int = 200) -> web.Response:
    return web.json_response({"message": message, "status": "successful"}, status=status)


def failure(message: str, status: int = 400, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"message": f"<Error> {message}", "status": "failure"}, status=status, headers=headers
    )


def missing_endpoint(path: str) -> web.Response:
    """SPEC.md's exact answer for a path the replicas do not serve."""
    return failure(f"'{path}' endpoint does not exist in server replicas", 400)
