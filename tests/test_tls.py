"""TLS termination (``listen.tls``, ``_tls.py``) against real sockets: HTTPS and wss through
the balancer with a self-signed certificate made here by the ``openssl`` command line, the
X-Forwarded-Proto it sets, and a config error naming the field for every bad file."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from conftest import UpstreamFactory, eventually
from lbproxy import parse_config
from lbproxy._config import TlsConfig
from lbproxy._errors import ConfigError
from lbproxy._tls import server_context
from test_tunnel import ws_echo

if shutil.which("openssl") is None:  # pragma: no cover - every supported host has it
    pytest.skip(
        "the openssl command is not installed: no certificate to test with", allow_module_level=True
    )


def make_certificate(folder: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM)."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return make_certificate(tmp_path)


def client_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


async def tls_balancer(
    upstream: UpstreamFactory,
    balancer: Any,
    cert: Path,
    key: Path,
    extra: dict[str, Any] | None = None,
) -> tuple[Any, list[dict[str, str]]]:
    seen: list[dict[str, str]] = []

    async def whoami(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"path": request.path_qs})

    address = await upstream({"/ws": ws_echo("a1", seen), "/{tail:.*}": whoami})
    server = await balancer(
        {
            "listen": {"tls": {"cert": str(cert), "key": str(key)}},
            "replicas": {"backend": "static", "static": [{"hostname": "a1", "address": address}]},
            **(extra or {}),
        }
    )
    return server, seen


@pytest.mark.parametrize("workers", [1, 2])
async def test_https_and_wss_through_the_balancer(
    certificate: tuple[Path, Path], upstream: UpstreamFactory, balancer: Any, workers: int
) -> None:
    """Also with worker processes: each terminates TLS on its own socket, and the port's
    admin endpoints reach the supervisor through them."""
    cert, key = certificate
    server, seen = await tls_balancer(upstream, balancer, cert, key, {"workers": workers})
    tls = client_context(cert)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"https://127.0.0.1:{server.port}/rep", ssl=tls) as resp:
            assert (await resp.json())["message"] == {"N": 1, "replicas": ["a1"]}
        for i in range(3):  # kept alive over TLS
            async with http.get(
                f"https://127.0.0.1:{server.port}/x?i={i}",
                ssl=tls,
                headers={"X-Forwarded-Proto": "http"},  # a client's claim is replaced
            ) as resp:
                assert resp.status == 200
                assert await resp.json() == {"path": f"/x?i={i}"}
        async with http.post(
            f"https://localhost:{server.port}/big", ssl=tls, data=b"x" * (1 << 20)
        ) as resp:
            assert resp.status == 200
        async with http.ws_connect(f"wss://127.0.0.1:{server.port}/ws", ssl=tls) as ws:
            for text in ("one", "two"):
                await ws.send_str(text)
                assert await ws.receive_str() == f"a1: {text}"
    assert all(h["X-Forwarded-Proto"] == "https" for h in seen)
    assert len(seen) == 5


async def test_plain_http_on_the_tls_port_gets_no_answer(
    certificate: tuple[Path, Path], upstream: UpstreamFactory, balancer: Any
) -> None:
    server, seen = await tls_balancer(upstream, balancer, *certificate)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{server.port}/x") as resp:
                await resp.read()
    assert seen == []


def test_listen_tls_needs_both_files() -> None:
    with pytest.raises(ConfigError, match=r"listen\.tls\.key"):
        parse_config({"listen": {"tls": {"cert": "server.pem"}}})
    assert parse_config({}).listen.tls is None


def test_bad_files_are_config_errors_naming_the_field(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    other_cert, other_key = make_certificate(tmp_path, "other")
    missing = str(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a certificate\n")
    cases = {
        "listen.tls.cert": [(missing, key), (garbage, key), (key, key)],
        "listen.tls.key": [(cert, missing), (cert, garbage), (cert, cert), (cert, other_key)],
    }
    for field, pairs in cases.items():
        for c, k in pairs:
            with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
                server_context(TlsConfig(cert=str(c), key=str(k)))
    assert server_context(TlsConfig(cert=str(other_cert), key=str(other_key))) is not None


async def test_a_balancer_with_a_bad_certificate_does_not_start(
    tmp_path: Path, balancer: Any
) -> None:
    with pytest.raises(ConfigError, match=r"listen\.tls\.cert"):
        await balancer(
            {"listen": {"tls": {"cert": str(tmp_path / "no.pem"), "key": str(tmp_path / "k")}}}
        )


async def test_a_changed_certificate_is_served_to_new_connections(
    tmp_path: Path, upstream: UpstreamFactory, balancer: Any
) -> None:
    cert, key = make_certificate(tmp_path)
    server, _ = await tls_balancer(
        upstream, balancer, cert, key, {"reload": {"enabled": False, "interval": 0.1}}
    )
    first = client_context(cert)
    (tmp_path / "new").mkdir()
    new_cert, new_key = make_certificate(tmp_path / "new")

    async def served_by(context: ssl.SSLContext, host: str = "127.0.0.1") -> bool:
        async with aiohttp.ClientSession() as http:
            try:
                async with http.get(f"https://{host}:{server.port}/x", ssl=context) as resp:
                    return resp.status == 200
            except aiohttp.ClientConnectorCertificateError:
                return False

    assert await served_by(first)
    # A bad pair (the certificate written, the key not yet) keeps the old one.
    cert.write_bytes(new_cert.read_bytes())
    await eventually(lambda: server.certificate.stamps_seen > 0)
    assert await served_by(first)
    key.write_bytes(new_key.read_bytes())
    renewed = client_context(new_cert)
    await eventually(lambda: server.certificate.reloads == 1)
    assert await served_by(renewed) and await served_by(renewed, "localhost")
    assert not await served_by(first)
