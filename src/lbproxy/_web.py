"""The balancer's HTTP front: its own endpoints (/rep, /add, /rm) and the proxy for the rest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ._admin_input import parse_add, parse_rm
from ._control import Controller
from ._errors import RequestError
from ._messages import failure, success
from ._proxy import Proxy

#: Admin bodies are tiny; a larger one is refused before it is read.
MAX_ADMIN_BODY = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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

    def _state(self) -> dict[str, object]:
        names = self._control.pool.hostnames()
        return {"N": len(names), "replicas": names}

    async def rep(self, request: web.Request) -> web.Response:
        return success(self._state())

    async def _body(self, request: web.Request) -> bytes:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RequestError(
                f"<Error> Request body is larger than {MAX_ADMIN_BODY} bytes", 413
            ) from None

    async def add(self, request: web.Request) -> web.Response:
        if not self._can_scale:
            raise RequestError("<Error> The static backend cannot start replicas")
        raw = await self._body(request)
        async with self._control.lock:
            pool = self._control.pool
            req = parse_add(raw, pool.hostnames(), len(pool), self._cap())
            await self._control.check_available(req.hostnames)
            added = self._control.add(req.n, req.hostnames)
            state = self._state()
        # Answer once the new replicas serve (or the wait runs out; they are kept trying).
        await self._control.wait_up(added, self._add_wait())
        return success(state)

    async def rm(self, request: web.Request) -> web.Response:
        if not self._can_scale:
            raise RequestError("<Error> The static backend cannot remove replicas")
        raw = await self._body(request)
        async with self._control.lock:
            req = parse_rm(raw, self._control.pool.hostnames())
            await self._control.remove(req.n, req.hostnames)
            return success(self._state())


def _only(method: str, handler: Handler) -> Handler:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            return failure(
                f"Method {request.method} is not allowed on {request.path}; use {method}",
                405,
                {"Allow": method},
            )
        try:
            return await handler(request)
        except RequestError as e:
            return web.json_response({"message": e.message, "status": "failure"}, status=e.status)

    return endpoint


def make_app(admin: AdminApi, proxy: Proxy) -> web.Application:
    app = web.Application(client_max_size=MAX_ADMIN_BODY)
    app.router.add_route("*", "/rep", _only("GET", admin.rep))
    app.router.add_route("*", "/add", _only("POST", admin.add))
    app.router.add_route("*", "/rm", _only("DELETE", admin.rm))
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    return app
