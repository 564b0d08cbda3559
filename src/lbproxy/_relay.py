"""Relaying a replica's answer to the client: whole when it needs no waiting, a 101 as a
tunnel, and the balancer's own answer when a replica failed (streaming is ``Proxy``'s, which
also counts the failures)."""

from __future__ import annotations

from ._errors import ClientDisconnectedError, UpstreamError, UpstreamTimeoutError
from ._exchange import Exchange
from ._headers import downstream_headers, encode_headers
from ._messages import Answer, failure, missing_endpoint
from ._pool import Replica
from ._tunnel import Tunnel
from .transport import UpstreamResponse


def failure_answer(
    read_timeout: float,
    name: str,
    error: BaseException,
    earlier: tuple[Replica, str, UpstreamError] | None = None,
) -> Answer:
    """The answer for a replica that broke off; ``earlier``: the one tried before it."""
    after = f" (after {earlier[1]} failed too)" if earlier is not None else ""
    if isinstance(error, UpstreamTimeoutError):
        return failure(f"Replica {name} did not answer within {read_timeout:g}s{after}", 504)
    return failure(f"Replica {name} failed to answer{after}", 502)


def relay_now(request: Exchange, resp: UpstreamResponse) -> tuple[int, int] | None:
    """Relay an answer that needs no waiting (no body, or all of it in): (status sent, body
    bytes sent); None if it needs waiting."""
    if resp.status == 404:
        answer = missing_endpoint(request.path)
        request.answer(answer)
        return answer.status, len(answer.body)
    if not resp.has_body:
        request.send_whole(resp.status, resp.reason, answer_headers(resp), b"", "none")
        return resp.status, 0
    if resp.complete:  # the usual small answer: all of it in one write
        framing = "length" if resp.length is not None else "chunked"
        body = resp.take()
        request.send_whole(resp.status, resp.reason, answer_headers(resp), body, framing)
        return resp.status, len(body)
    return None


def answer_headers(resp: UpstreamResponse) -> bytes:
    """The answer's header lines as the client gets them (hop-by-hop ones dropped)."""
    if resp.end_to_end:  # the usual case: the replica's headers go on as they came
        return b"".join(resp.header_lines)
    return encode_headers(downstream_headers(resp.headers))


async def tunnel(request: Exchange, resp: UpstreamResponse, idle_timeout: float) -> None:
    """The replica switched protocols: relay both connections as they are until either
    closes or both stay quiet for ``idle_timeout`` (``proxy.tunnel_idle_timeout``)."""
    upgrade = next((v for k, v in resp.headers if k.lower() == "upgrade"), request.upgrade)
    headers = encode_headers(
        [*downstream_headers(resp.headers), ("Connection", "Upgrade"), ("Upgrade", upgrade or "")]
    )
    replica_end = resp.detach()
    try:
        client_end = request.switch(resp.status, resp.reason, headers)
    except ClientDisconnectedError:
        replica_end.transport.close()
        return
    await Tunnel(client_end, replica_end, idle_timeout).wait()
