"""The balancer's own endpoints (/rep, /add, /rm, /kill, /status), independent of the HTTP
server.

Two listeners serve them: the balancer's port (the contract's /rep, /add, /rm; docs/api.md)
and the admin listener (the same, plus /kill, /status, /metrics and the dashboard; nothing
there is proxied). ``serve`` takes a request from the HTTP server (any ``AdminRequest``;
``Server`` routes the paths here), asks ``refuse`` before reading a body (wrong port, wrong
method, missing token), then reads a bounded body and calls ``handle``; every answer, error
or not, is an ``Answer``.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal, Protocol

from ._config import Config
from ._control import Controller
from ._errors import (
    ChangeRefusedError,
    KillFailedError,
    NameCheckError,
    OrchestratorError,
    RequestError,
    ShuttingDownError,
)
from ._messages import Answer, failure, failure_as_is, success
from ._pool import Replica

#: Admin bodies are tiny; a larger one is refused (413) before it is read.
MAX_ADMIN_BODY = 64 * 1024
#: The endpoints that change the replicas: behind the token, and off the main port if asked
#: (/kill is on the admin listener only).
CHANGES = frozenset({"/add", "/rm", "/kill"})

Listener = Literal["main", "admin"]

#: The status of each refused change the controller raises; any other refusal is a 400.
_REFUSED_STATUS: dict[type[ChangeRefusedError], int] = {
    ShuttingDownError: 503,  # try again after the restart
    NameCheckError: 503,  # the backend (Docker) did not answer: try again
    OrchestratorError: 503,  # Swarm did not answer: try again
    KillFailedError: 503,  # the backend could not kill it
}


class AdminRequest(Protocol):
    """What the admin API needs of an HTTP request (the front's ``Request`` fits)."""

    method: str

    @property
    def raw_path(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    async def read_all(self, limit: int) -> bytes | None: ...
    def answer(self, answer: Answer) -> None: ...


def body_too_large() -> Answer:
    return failure(f"Request body is larger than {MAX_ADMIN_BODY} bytes", 413)


def replica_status(replica: Replica) -> dict[str, object]:
    return {
        "hostname": replica.hostname,
        "slot": replica.slot,
        "state": replica.state.value,
        "address": replica.address,
        "in_flight": replica.in_flight,
        "requests": replica.requests,
        "restarts": replica.restarts,
        # Its share of the keys and of the bounded-load cap (hashing.balance_factor).
        "weight": replica.weight,
        # Out of routing for a while after failing requests in a row (proxy.outlier_*).
        "ejected": replica.ejected,
    }


class AdminApi:
    """The endpoints as one listener serves them (``listener``: "main" or "admin")."""

    def __init__(
        self,
        control: Controller,
        config: Callable[[], Config],
        listener: Listener = "main",
        about: Callable[[], Mapping[str, object]] = dict,
        observed: Callable[[Replica], Mapping[str, object]] | None = None,
    ) -> None:
        self._control = control
        self._config = config
        self._listener = listener
        #: Top-level facts for /status besides N and the replicas (uptime, version, ...).
        self._about = about
        #: A replica's figures for /status besides its totals (rate, error rate, latency).
        self._observed = observed
        #: path -> (the one method it takes, handler of the request body)
        self.routes: dict[str, tuple[str, Callable[[bytes], Awaitable[Answer]]]] = {
            "/rep": ("GET", self.rep),
            "/add": ("POST", self.add),
            "/rm": ("DELETE", self.rm),
        }
        if listener == "admin":
            self.routes["/status"] = ("GET", self.status)
            self.routes["/kill"] = ("POST", self.kill)

    def method_allowed(self, path: str, method: str) -> Answer | None:
        """None if ``method`` may be used on the admin ``path``, else the 405 answer."""
        allowed = self.routes[path][0]
        if method == allowed or (allowed == "GET" and method == "HEAD"):
            return None
        return failure(
            f"Method {method} is not allowed on {path}; use {allowed}", 405, {"Allow": allowed}
        )

    def refuse(self, path: str, method: str, authorization: str | None) -> Answer | None:
        """The answer refusing this request before its body is read, or None to go on."""
        changes = path in CHANGES
        if changes and self._listener == "main" and not self._config().admin.on_main_port:
            return failure(
                f"{path} is not served on this port (admin.on_main_port is false); "
                "use the admin listener (admin.host, admin.port)",
                403,
            )
        denied = self.method_allowed(path, method)
        if denied is None and changes:
            denied = self._authorize(authorization)
        return denied

    def _authorize(self, authorization: str | None) -> Answer | None:
        token = self._config().admin.token
        if token is None:
            return None
        scheme, _, given = (authorization or "").strip().partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            return failure(
                "This endpoint needs the admin token: Authorization: Bearer <token>",
                401,
                {"WWW-Authenticate": 'Bearer realm="lbproxy"'},
            )
        # Constant time: how much of a guess matched must not show in the answer's timing.
        # Header values arrive as latin-1, so they encode back to their bytes.
        if not hmac.compare_digest(
            given.encode("latin-1"), token.get_secret_value().encode("latin-1")
        ):
            return failure(
                "The admin token is not valid",
                401,
                {"WWW-Authenticate": 'Bearer realm="lbproxy", error="invalid_token"'},
            )
        return None

    def unknown_path(self, path: str) -> Answer:
        """The admin listener's answer to any other path: it proxies nothing."""
        return failure(
            f"'{path}' is not an endpoint of the admin API (it serves "
            f"{', '.join(sorted(self.routes))})",
            404,
        )

    async def serve(self, request: AdminRequest) -> None:
        """Answer one request for one of ``routes``."""
        path = request.raw_path
        denied = self.refuse(path, request.method, request.headers.get("Authorization"))
        if denied is not None:
            request.answer(denied)
            return
        body = await request.read_all(MAX_ADMIN_BODY)
        if body is None:
            request.answer(body_too_large())
            return
        request.answer(await self.handle(path, body))

    async def handle(self, path: str, body: bytes) -> Answer:
        """Answer an admin request that ``refuse`` let through and whose body was read."""
        try:
            return await self.routes[path][1](body)
        except RequestError as e:
            return failure_as_is(e.message, e.status)
        except ChangeRefusedError as e:
            return failure(str(e), _REFUSED_STATUS.get(type(e), 400))

    def _state(self) -> dict[str, object]:
        names = self._control.pool.hostnames()
        return {"N": len(names), "replicas": names}

    async def rep(self, body: bytes) -> Answer:
        return success(self._state())

    async def status(self, body: bytes) -> Answer:
        """/rep's envelope and N, with every replica's details: the pool's in /rep's order,
        then those still draining."""
        pool = self._control.pool
        replicas = [*pool.replicas.values(), *self._control.draining()]
        return success(
            {
                "N": len(pool),
                **self._about(),
                "replicas": [self._replica(r) for r in replicas],
            }
        )

    def _replica(self, replica: Replica) -> dict[str, object]:
        out = replica_status(replica)
        if self._observed is not None:
            out.update(self._observed(replica))
        return out

    async def kill(self, body: bytes) -> Answer:
        """Kill replicas as a crash would, to watch the recovery (the assignment's
        experiment 3); /rm's body. Answers once they are killed, not replaced."""
        killed = await self._control.kill_checked(body)
        return success({"killed": killed, **self._state()})

    async def add(self, body: bytes) -> Answer:
        # Answers once the new replicas serve (or were removed again, or the wait ran out):
        # with the pool as it is then.
        await self._control.add_checked(body)
        return success(self._state())

    async def rm(self, body: bytes) -> Answer:
        # Answers once they are out of the ring; they drain and stop in the background.
        await self._control.remove_checked(body)
        return success(self._state())
