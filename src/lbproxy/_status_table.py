"""The dashboard's replica table as text, for ``lbproxy status``. Pure: a /status report in,
lines out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

COLUMNS = (
    "HOSTNAME",
    "SLOT",
    "STATE",
    "ADDRESS",
    "REQ/S",
    "IN-FLIGHT",
    "REQUESTS",
    "ERR%",
    "P50",
    "P99",
    "RESTARTS",
    "SHARE",
)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.2f}s"


def _uptime(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{s:02d}s"


def rows(report: Mapping[str, Any]) -> list[tuple[str, ...]]:
    shares = (report.get("ring") or {}).get("shares") or {}
    out = []
    for r in report.get("replicas", []):
        state = r["state"] + (" (ejected)" if r.get("ejected") else "")
        rate = r.get("rate")
        err = r.get("error_rate")
        share = shares.get(str(r["slot"])) if r["state"] == "up" else None
        out.append(
            (
                r["hostname"],
                str(r["slot"]),
                state,
                r.get("address") or "-",
                "-" if rate is None else f"{rate:.1f}",
                str(r["in_flight"]),
                str(r["requests"]),
                "-" if err is None else f"{err * 100:.1f}",
                _duration(r.get("p50")),
                _duration(r.get("p99")),
                str(r["restarts"]),
                "-" if share is None else f"{share * 100:.1f}%",
            )
        )
    return out


def table(lines: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max([len(c), *(len(row[i]) for row in lines)]) for i, c in enumerate(COLUMNS)]
    # Text columns to the left, figures to the right.
    left = {0, 2, 3}

    def fmt(row: tuple[str, ...]) -> str:
        cells = (
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(cells).rstrip()

    return [fmt(COLUMNS), *(fmt(row) for row in lines)]


def render(report: Mapping[str, Any]) -> str:
    """The heading line and the table of a /status report's ``message``."""
    reloads = report.get("config_reloads", 0)
    head = (
        f"lbproxy {report.get('version', '?')}: {report.get('N', 0)} replicas "
        f"({report.get('backend', '?')} backend, {report.get('hashing', '?')} hashing), "
        f"up {_uptime(report.get('uptime_s', 0))}, {reloads} config reload"
        f"{'' if reloads == 1 else 's'}, {report.get('draining', 0)} draining"
    )
    workers = report.get("workers") or []
    if workers:
        serving = sum(1 for w in workers if w.get("serving"))
        restarts = sum(w.get("restarts", 0) for w in workers)
        head += f"; {serving}/{len(workers)} workers serving, {restarts} worker restarts"
    return "\n".join([head, *table(rows(report))]) + "\n"
