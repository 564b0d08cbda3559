"""Fuzzing the balancer's request parsing and framing, against real sockets.

    python tests/fuzz_front.py [-max_total_time=60] [corpus dirs...]   (atheris, libFuzzer flags)
    make fuzz FUZZ_SECONDS=300

Each input is a byte stream a client sends on one connection (then half-closes). A real
balancer (``Server``, static backend) runs in a thread with a raw-logging replica behind it
(tests/raw_http.py), which parses everything it receives with h11. The invariant, checked
for every input:

- what the replica received whole is exactly requests the balancer answered with the
  replica's answer: each one is answered once, in order, with that replica answer's bytes;
- each of them is, byte for byte in method, target and body, the request an independent
  strict parser (h11, as a server) reads at that place in the client's stream (an
  absolute-form target arrives in origin-form), so the replica never frames anything other
  than what the client framed;
- the replica never received anything h11 refuses, and the client's answers are framed so
  that h11 (as a client) reads them;
- every other answer is the balancer's own: a 4xx/505 for what it would not pass on (or an
  admin path's answer), never a 5xx of its own;
- the exchange ends (the connection is closed) within a few seconds: nothing hangs.

Without atheris (it builds for Linux CPython up to 3.12), the same invariant runs under a
seeded random mutator over the same corpus (``--random``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h11

sys.path.insert(0, str(Path(__file__).resolve().parent))  # raw_http, when run as a script

from raw_http import RawReplica, Received, ReplyReader

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"
ADMIN = {b"/rep", b"/add", b"/rm"}
_REQUEST_LINE = re.compile(rb"\A([!-~]+) +([!-~]+) +(HTTP/)")
#: The balancer's own answers that the invariant allows (bad input, unsupported version,
#: an admin path's refusal, CONNECT).
OWN = {400, 404, 405, 408, 413, 414, 431, 505}


class InvariantError(AssertionError):
    pass


# -- the balancer and its replica, in a thread -----------------------------------------------


class Harness:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.replica: RawReplica | None = None
        self.server: Any = None
        self.port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    async def _start(self) -> None:
        from lbproxy import Server, parse_config

        self.replica = await RawReplica.start()
        config = parse_config(
            {
                "listen": {"host": "127.0.0.1", "port": 0},
                "replicas": {
                    "backend": "static",
                    "static": [{"hostname": "r1", "address": self.replica.address}],
                },
                "health": {"interval": 30, "unhealthy_threshold": 100},
                "proxy": {"client_timeout": 2, "read_timeout": 5, "outlier_failures": 0},
                "reload": {"enabled": False},
                "log_level": "error",
            }
        )
        self.server = Server(config)
        await self.server.startup()
        self.port = self.server.port

    def settled(self) -> bool:
        async def check() -> bool:
            return all(r.in_flight == 0 for r in self.server.pool.replicas.values())

        return asyncio.run_coroutine_threadsafe(check(), self.loop).result(5)

    def close(self) -> None:
        async def stop() -> None:
            await self.server.shutdown()
            assert self.replica is not None
            await self.replica.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


# -- one input --------------------------------------------------------------------------------


def client_requests(data: bytes) -> tuple[list[tuple[bytes, bytes, bytes]], bytes]:
    """(method, target, body) of the requests h11, as a strict server, reads from ``data``
    before anything it refuses (or the end); and the method of the request it refused, when
    its head could be read (a HEAD answered with an error has no body either)."""
    out: list[tuple[bytes, bytes, bytes]] = []
    rest = data.lstrip(b"\r\n")
    while rest:
        # httptools reads a request line split by runs of spaces (RFC 9112 section 3 lets a
        # recipient split on whitespace); the balancer writes the line afresh with one.
        rest = _REQUEST_LINE.sub(rb"\1 \2 \3", rest, count=1)
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(rest)
        conn.receive_data(b"")
        head: h11.Request | None = None
        body = b""
        try:
            while True:
                event = conn.next_event()
                if isinstance(event, h11.Request):
                    head, body = event, b""
                elif isinstance(event, h11.Data):
                    body += event.data
                else:
                    break
        except h11.ProtocolError:
            return out, head.method if head is not None else b"GET"
        if not isinstance(event, h11.EndOfMessage) or head is None:
            return out, head.method if head is not None else b"GET"
        out.append((head.method, head.target, body))
        connection = b",".join(v.lower() for k, v in head.headers if k == b"connection")
        if b"close" in connection.split(b",") or (
            head.http_version == b"1.0" and b"keep-alive" not in connection
        ):
            return out, b"GET"  # nothing after this one is read
        # On afresh after each request (h11 never keeps an HTTP/1.0 connection alive, which
        # RFC 9112 and the balancer do for "Connection: keep-alive"); blank lines before a
        # request line are skipped, as RFC 9112 section 2.2 allows and httptools does.
        rest = conn.trailing_data[0].lstrip(b"\r\n")
    return out, b"GET"


def read_answers(data: bytes, methods: list[bytes]) -> list[tuple[int, list[Any], bytes]]:
    """The answers in ``data`` to requests of ``methods`` (the last: the one the balancer
    refused, if any), read by h11 as a strict client; raises if one is not framed right."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(data)
    conn.receive_data(b"")
    out: list[tuple[int, list[Any], bytes]] = []
    for i in range(len(methods)):
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        if conn.our_state is not h11.IDLE:
            break
        method = methods[i]
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "lb")]))
        conn.send(h11.EndOfMessage())
        reader = ReplyReader(conn)
        try:
            reply = reader.poll()
        except h11.RemoteProtocolError as e:
            if reader.head is None and not conn.trailing_data[0]:
                return out  # the connection ended between answers
            raise InvariantError(f"answer {i} is not well framed: {e}") from e
        except ConnectionError:
            reply = None
        if reply is None:  # all the data is in: the connection ended
            if reader.head is not None:
                raise InvariantError(f"answer {i} was cut: {reader.head.status_code}")
            return out
        out.append((reply.status, reply.headers, reply.body))
    return out


def origin(target: bytes) -> bytes:
    if target.startswith(b"/") or target == b"*":
        return target
    rest = target.partition(b"://")[2]
    cut = min(
        (i for i in (rest.find(b"/"), rest.find(b"?"), rest.find(b"#")) if i >= 0),
        default=len(rest),
    )
    path = rest[cut:]
    return path if path.startswith(b"/") else b"/" + path


def exchange(harness: Harness, data: bytes, timeout: float = 6.0) -> bytes:
    """Send ``data`` on a new connection, half-close, read to the end."""
    with socket.create_connection(("127.0.0.1", harness.port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        got = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise InvariantError(f"no end to the exchange within {timeout}s")
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise InvariantError(f"no end to the exchange within {timeout}s") from None
            if not chunk:
                break
            got += chunk
    return bytes(got)


def check(harness: Harness, data: bytes) -> None:
    replica = harness.replica
    assert replica is not None
    before = len(replica.requests)
    errors_before = len(replica.errors)
    answers_raw = exchange(harness, data)
    for _ in range(200):
        if harness.settled():
            break
        time.sleep(0.01)
    else:
        raise InvariantError("a replica exchange is still in flight after the client's ended")
    got: list[Received] = replica.requests[before:]
    if len(replica.errors) > errors_before:
        raise InvariantError(f"the replica refused what it got: {replica.errors[-1]}")
    parsed, refused = client_requests(data)
    answers = read_answers(answers_raw, [*(m for m, _, _ in parsed), refused])
    seqs = [int(v) for _, headers, _ in answers for k, v in headers if k == b"x-seq"]
    if [r.seq for r in got] != seqs:
        raise InvariantError(f"replica got {[r.seq for r in got]}, client answered {seqs}")
    for i, (status, headers, body) in enumerate(answers):
        seq = next((int(v) for k, v in headers if k == b"x-seq"), None)
        if seq is None:
            target = parsed[i][1] if i < len(parsed) else b""
            if status not in OWN and origin(target).split(b"?")[0] not in ADMIN:
                raise InvariantError(f"answer {i}: the balancer's own {status}: {body[:200]!r}")
            continue
        req = replica.requests[seq]
        if i >= len(parsed):
            raise InvariantError(
                f"answer {i} is the replica's, for {req.method!r} {req.target!r}, a request "
                f"h11 does not read from the client's bytes"
            )
        method, target, req_body = parsed[i]
        if (req.method, req.target, req.body) != (method, origin(target), req_body):
            raise InvariantError(
                f"answer {i}: the replica got {(req.method, req.target, req.body)!r}, "
                f"the client sent {(method, target, req_body)!r}"
            )
        expected = b"seq %d %s %s %d" % (req.seq, req.method, req.target, len(req.body))
        if body != expected and method != b"HEAD":
            raise InvariantError(f"answer {i} is not its replica answer: {body!r}")


# -- drivers ------------------------------------------------------------------------------------


def seeds() -> Iterator[bytes]:
    for path in sorted(CORPUS.iterdir()):
        yield path.read_bytes()


TOKENS = [
    b"\r\n",
    b"\n",
    b" ",
    b":",
    b",",
    b";",
    b"0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\n",
    b"Connection: close\r\n",
    b"Connection: content-length\r\n",
    b"Host: lb\r\n",
    b"HTTP/1.0",
    b"HTTP/1.1",
    b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n",
    b"POST /p HTTP/1.1\r\n",
    b"Upgrade: h2c\r\n",
    b"Expect: 100-continue\r\n",
    b"\t",
    b"\x00",
    b"gzip, ",
    b"ffffffff",
    b"HEAD / HTTP/1.1\r\nHost: lb\r\n\r\n",
    b"http://x/",
]


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:
            del buf[pos : pos + rng.randint(1, 8)]
        elif op == 1:
            buf[pos:pos] = rng.choice(TOKENS)
        elif op == 2 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 3:
            other = rng.choice(pool)
            a = rng.randint(0, len(other))
            buf[pos:pos] = other[a : a + rng.randint(1, 64)]
        else:
            buf[pos:pos] = bytes(rng.randrange(32, 127) for _ in range(rng.randint(1, 6)))
    return bytes(buf[:4096])


def run_random(seconds: float, seed: int) -> int:
    """The fallback: a seeded random mutator over the corpus; returns the inputs run."""
    harness = Harness()
    rng = random.Random(seed)
    pool = list(seeds())
    runs = 0
    try:
        for data in pool:
            check(harness, data)
            runs += 1
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            data = mutate(rng, rng.choice(pool), pool)
            try:
                check(harness, data)
            except InvariantError:
                sys.stderr.write(f"invariant broken by {data!r}\n")
                raise
            runs += 1
    finally:
        harness.close()
    return runs


def run_atheris(argv: list[str]) -> None:
    import atheris

    harness = Harness()

    def one(data: bytes) -> None:
        check(harness, data)

    atheris.Setup(argv, one)
    atheris.Fuzz()


def main() -> None:
    argv = sys.argv[1:]
    if "--random" in argv:
        seconds = float(os.environ.get("FUZZ_SECONDS", "30"))
        runs = run_random(seconds, int(os.environ.get("FUZZ_SEED", "0")))
        print(f"fuzz_front: {runs} inputs, the invariant held for each")
        return
    try:
        import atheris
    except ImportError:
        print("fuzz_front: atheris is not installed; running the random mutator instead")
        seconds = float(os.environ.get("FUZZ_SECONDS", "30"))
        print(f"fuzz_front: {run_random(seconds, 0)} inputs, the invariant held for each")
        return
    with atheris.instrument_imports(include=["lbproxy"]):  # not its (large) dependencies
        import lbproxy._headers
        import lbproxy._proxy
        import lbproxy.front
        import lbproxy.transport._httptools  # noqa: F401
    run_atheris([sys.argv[0], *argv])


if __name__ == "__main__":
    main()
