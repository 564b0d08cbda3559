"""The balancer's own endpoints (/rep, /add, /rm), independent of the HTTP server under them.

The front server (``_front.py``) reads a bounded body and calls ``AdminApi.handle``; every
answer, error or not, is an ``Answer``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ._admin_input import parse_add, parse_rm
from ._control import Controller
from ._errors import RequestError
from ._messages import Answer, failure, failure_as_is, success

#: Admin bodies are tiny; a larger one is refused (413) before it is read.
MAX_ADMIN_BODY = 64 * 1024


def body_too_large() -> Answer:
    return failure(f"Request body is larger than {MAX_ADMIN_BODY} bytes", 413)


class AdminApi:
    def __init__(
        self,
        control: Controller,
        cap: Callable[[], int],
        add_wait: Callable[[], float],
        can_scale: bool,
    ) -> None:
        self._control = control
        self._cap = cap
        self._add_wait = add_wait
        self._can_scale = can_scale
        #: path -> (the one method it takes, handler of the request body)
        self.routes: dict[str, tuple[str, Callable[[bytes], Awaitable[Answer]]]] = {
            "/rep": ("GET", self.rep),
            "/add": ("POST", self.add),
            "/rm": ("DELETE", self.rm),
        }

    def method_allowed(self, path: str, method: str) -> Answer | None:
        """None if ``method`` may be used on the admin ``path``, else the 405 answer."""
        allowed = self.routes[path][0]
        if method == allowed or (allowed == "GET" and method == "HEAD"):
            return None
        return failure(
            f"Method {method} is not allowed on {path}; use {allowed}", 405, {"Allow": allowed}
        )

    async def handle(self, path: str, body: bytes) -> Answer:
        """Answer an admin request whose method was allowed and whose body was read."""
        try:
            return await self.routes[path][1](body)
        except RequestError as e:
            return failure_as_is(e.message, e.status)

    def _state(self) -> dict[str, object]:
        names = self._control.pool.hostnames()
        return {"N": len(names), "replicas": names}

    async def rep(self, body: bytes) -> Answer:
        return success(self._state())

    async def add(self, body: bytes) -> Answer:
        if not self._can_scale:
            raise RequestError("<Error> The static backend cannot start replicas")
        async with self._control.lock:
            pool = self._control.pool
            req = parse_add(body, pool.hostnames(), len(pool), self._cap())
            await self._control.check_available(req.hostnames)
            added = self._control.add(req.n, req.hostnames)
            state = self._state()
        # Answer once the new replicas serve (or the wait runs out; they are kept trying).
        await self._control.wait_up(added, self._add_wait())
        return success(state)

    async def rm(self, body: bytes) -> Answer:
        if not self._can_scale:
            raise RequestError("<Error> The static backend cannot remove replicas")
        async with self._control.lock:
            req = parse_rm(body, self._control.pool.hostnames())
            await self._control.remove(req.n, req.hostnames)
            return success(self._state())
