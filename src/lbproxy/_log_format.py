"""How every log line looks: ``log.format: text`` (for people) or ``json`` (for shippers).

One JSON object per line, with ``time`` (UTC, ISO 8601), ``level``, ``logger`` and
``message``, and for access lines their fields instead of a message. Text lines keep the
shape they always had: ``<local time> <LEVEL> <logger>: <message>``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ._access_log import Entry

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
ACCESS_LOGGER = "lbproxy.access"
#: The access fields, in the order both formats write them.
ACCESS_FIELDS = ("client", "method", "target", "status", "bytes", "replica", "duration", "key")


#: A value written as it is in text lines: printable ASCII but space, quote and backslash.
_PLAIN = re.compile(r"[!#-\[\]-~]+")
#: The last second formatted, and its text: access lines come in bursts within one second.
_second: list[tuple[int, str]] = [(-1, "")]


def local_time(t: float) -> str:
    """``t`` as logging's default asctime writes it: 2026-12-01 07:40:00,123."""
    whole = int(t)
    cached, text = _second[0]
    if whole != cached:
        text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(whole))
        _second[0] = (whole, text)
    return f"{text},{int(t * 1000) % 1000:03d}"


def utc_time(t: float) -> str:
    """``t`` in ISO 8601, UTC, to the millisecond: 2026-12-01T07:40:00.123Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def _quoted(value: str) -> str:
    """A text field's value as is when it is plain, else as a JSON string (quotes,
    backslashes, control characters and spaces then cannot be mistaken for the line's)."""
    if _PLAIN.fullmatch(value):
        return value
    return json.dumps(value)


#: Quoted values of the fields that repeat from line to line (client, target, replica).
_seen: dict[str, str] = {}


def _quoted_again(value: str) -> str:
    """``_quoted``, remembered: most lines repeat a handful of clients, paths and replicas."""
    quoted = _seen.get(value)
    if quoted is None:
        if len(_seen) >= 4096:
            _seen.clear()
        quoted = _seen[value] = _quoted(value)
    return quoted


def text_line(e: Entry) -> str:
    t, client, method, target, status, sent, replica, seconds, key = e
    return (
        f"{local_time(t)} INFO    {ACCESS_LOGGER}: client={_quoted_again(client)} "
        f"method={method} target={_quoted_again(target)} status={status} bytes={sent} "
        f"replica={_quoted_again(replica)} duration={seconds:.6f} key={_quoted(key)}\n"
    )


def json_line(e: Entry) -> str:
    t, client, method, target, status, sent, replica, seconds, key = e
    return (
        json.dumps(
            {
                "time": utc_time(t),
                "level": "info",
                "logger": ACCESS_LOGGER,
                "client": client,
                "method": method,
                "target": target,
                "status": status,
                "bytes": sent,
                "replica": replica,
                "duration": round(seconds, 6),
                "key": key,
            }
        )
        + "\n"
    )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": utc_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure(fmt: Literal["text", "json"] = "text", path: str | None = None) -> None:
    """The process's log handler: to standard error or ``path`` (appended), in ``fmt``."""
    handler: logging.Handler = (
        logging.StreamHandler(sys.stderr) if path is None else logging.FileHandler(path)
    )
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
