"""The access log (log.access) and log.format: every field of every line checked, in text
and JSON, from a real balancer; and every other log line in JSON from the real CLI."""

from __future__ import annotations

import calendar
import json
import re
import signal
import time
from typing import Any

import pytest

from conftest import eventually, url
from lbproxy import Server
from lbproxy._log_format import json_line, text_line

#: A value: plain, or a JSON string when it has spaces, quotes, backslashes or is empty.
V = r'("(?:[^"\\]|\\.)*"|[^\s"]+)'
TEXT = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO    lbproxy\.access: "
    rf"client=(?P<client>{V}) method=(?P<method>[A-Z]+) target=(?P<target>{V}) "
    rf"status=(?P<status>\d+) bytes=(?P<bytes>\d+) replica=(?P<replica>{V}) "
    rf"duration=(?P<duration>\d+\.\d{{6}}) key=(?P<key>{V})$"
)


def _unquote(value: str) -> str:
    return json.loads(value) if value.startswith('"') else value


def parse_text(line: str) -> dict[str, Any]:
    m = TEXT.match(line)
    assert m, line
    out: dict[str, Any] = {k: _unquote(v) for k, v in m.groupdict().items()}
    out["status"], out["bytes"] = int(out["status"]), int(out["bytes"])
    out["duration"] = float(out["duration"])
    return out


async def exchange(http: Any, server: Server, target: str, key: str) -> dict[str, Any]:
    """What the client saw: status, body length, and the replica that answered."""
    async with http.get(url(server, target), headers={"X-Request-Id": key}) as r:
        body = await r.read()
        message = json.loads(body)["message"]
        return {
            "status": r.status,
            "bytes": len(body),
            "replica": message.removeprefix("Hello from Server: "),
        }


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_one_line_per_request_field_by_field(balancer, http, tmp_path, fmt):
    log_file = tmp_path / "lbproxy.log"
    server = await balancer(
        {"replicas": {"count": 2}, "log": {"access": True, "format": fmt, "file": str(log_file)}}
    )
    started = time.time()
    sent = []
    for i in range(6):
        key = f'user {i}"q'  # a space and a quote: the text format must quote it
        target = f"/home?i={i}"
        seen = await exchange(http, server, target, key)
        sent.append({"target": target, "key": key, **seen})
    # A path no replica serves: the contract's 400, named after the replica that said 404.
    async with http.get(url(server, "/nope"), headers={"X-Request-Id": "k-nope"}) as r:
        body = await r.read()
        owner = server.pool.replicas[server.pool.ring.lookup("k-nope")].hostname  # type: ignore[index]
        sent.append(
            {
                "target": "/nope",
                "key": "k-nope",
                "status": 400,
                "bytes": len(body),
                "replica": owner,
            }
        )

    def lines() -> list[str]:
        text = log_file.read_text() if log_file.exists() else ""
        return [ln for ln in text.splitlines() if "lbproxy.access" in ln]

    got = await eventually(lambda: len(lines()) == len(sent) and lines(), timeout=5)
    ended = time.time()
    for line, want in zip(got, sent, strict=True):
        if fmt == "json":
            entry = json.loads(line)
            assert set(entry) == {
                "time", "level", "logger", "client", "method", "target", "status", "bytes",
                "replica", "duration", "key",
            }  # fmt: skip
            assert entry["level"] == "info" and entry["logger"] == "lbproxy.access"
            stamp = calendar.timegm(time.strptime(entry["time"][:19], "%Y-%m-%dT%H:%M:%S"))
        else:
            entry = parse_text(line)
            stamp = time.mktime(time.strptime(entry["time"][:19], "%Y-%m-%d %H:%M:%S"))
        assert started - 1 <= stamp <= ended + 1
        assert entry["client"] == "127.0.0.1"
        assert entry["method"] == "GET"
        assert entry["target"] == want["target"]
        assert entry["status"] == want["status"]
        assert entry["bytes"] == want["bytes"]
        if want["status"] == 200:
            assert entry["replica"] == want["replica"]
        else:
            assert entry["replica"] == owner
        assert 0 < entry["duration"] < 5
        assert entry["key"] == want["key"]


async def test_access_log_is_off_by_default(balancer, http, tmp_path):
    log_file = tmp_path / "lbproxy.log"
    server = await balancer({"replicas": {"count": 1}, "log": {"file": str(log_file)}})
    await exchange(http, server, "/home", "k")
    await server.shutdown()
    assert server.access_log is None
    assert not log_file.exists() or "lbproxy.access" not in log_file.read_text()


async def test_balancers_own_answer_has_an_empty_replica(balancer, http, tmp_path):
    log_file = tmp_path / "lbproxy.log"
    server = await balancer(
        {"replicas": {"count": 0}, "log": {"access": True, "format": "json", "file": str(log_file)}}
    )
    async with http.get(url(server, "/home"), headers={"X-Request-Id": "k"}) as r:
        assert r.status == 503
        size = len(await r.read())
    await server.shutdown()  # what is gathered is written before it returns
    [line] = log_file.read_text().splitlines()
    entry = json.loads(line)
    assert (entry["status"], entry["replica"], entry["bytes"], entry["key"]) == (503, "", size, "k")


def test_formats_quote_what_could_be_mistaken():
    entry = (0.0, "::1", "GET", '/a"b c', 200, 5, "", 0.000123, "x=y\n")
    text = text_line(entry)
    assert text.endswith("\n") and text.count("\n") == 1
    fields = parse_text(text.rstrip("\n"))
    assert fields["target"] == '/a"b c' and fields["key"] == "x=y\n" and fields["replica"] == ""
    assert json.loads(json_line(entry))["key"] == "x=y\n"


async def test_every_log_line_is_json_with_log_format_json(balancer_process, tmp_path):
    log_file = tmp_path / "all.log"
    bp = balancer_process(
        {
            "replicas": {"count": 1},
            "log": {"format": "json", "file": str(log_file), "access": True},
        }
    )
    import aiohttp

    async with aiohttp.ClientSession() as http:
        await eventually(lambda: _answers(http, bp.port), timeout=20)
    bp.proc.send_signal(signal.SIGTERM)
    bp.proc.wait(timeout=20)
    lines = log_file.read_text().splitlines()
    assert len(lines) >= 4  # startup, a replica up, listening, an access line, shutdown...
    loggers = set()
    for line in lines:
        entry = json.loads(line)
        assert {"time", "level", "logger"} <= set(entry)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
        loggers.add(entry["logger"])
        if entry["logger"] != "lbproxy.access":
            assert isinstance(entry["message"], str)
    assert {"lbproxy", "lbproxy.access"} <= loggers


async def _answers(http: Any, port: int) -> bool:
    try:
        async with http.get(f"http://127.0.0.1:{port}/home") as r:
            return r.status == 200
    except OSError:
        return False
