"""Measure the gap in answers while the balancer's container restarts.

A paced client loop sends ``GET /home`` (a new connection each time, as a fresh client would)
to the published port of a running stack, restarts the balancer container in the middle, and
prints how many requests failed and the longest time without a successful answer:

    make up
    python tools/restart_gap.py                      # docker restart of the balancer
    python tools/restart_gap.py --action kill-start  # docker kill, then docker start

The stack is the one ``make up`` started (``COMPOSE_PROJECT_NAME``, ``LBPROXY_PORT``), or name
the container and URL. Bounded in requests and time; standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: Longest the whole measurement may take, whatever the options.
MAX_SECONDS = 300.0


@dataclass
class Outcome:
    """One request: when it was sent and ended, and what came of it ("200", "refused", ...)."""

    sent: float
    ended: float
    result: str


@dataclass
class Report:
    requests: int
    failed: int
    #: Longest time between two successful answers that has a failure in it (0: none failed).
    longest_gap: float
    #: How long the docker command(s) took.
    action_seconds: float
    #: From the start of the action to the first success after the last failure.
    recovered_after: float | None
    failures: dict[str, int] = field(default_factory=dict)
    #: A request sent after the docker command returned was answered (before the deadline).
    served_again: bool = True

    def text(self) -> str:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.failures.items())) or "none"
        recovered = "n/a" if self.recovered_after is None else f"{self.recovered_after:.3f}s"
        return (
            f"requests {self.requests}, failed {self.failed} ({kinds}); "
            f"longest gap without an answer {self.longest_gap:.3f}s; "
            f"docker command {self.action_seconds:.3f}s; served again {recovered} after it began"
        )


def summarize(outcomes: list[Outcome], action_start: float, action_seconds: float) -> Report:
    """The figures of a run (pure: the tests feed it made-up outcomes)."""
    ordered = sorted(outcomes, key=lambda o: o.ended)
    failed = [o for o in ordered if o.result != "200"]
    longest = 0.0
    last_ok: float | None = None
    failure_since_ok = False
    for o in ordered:
        if o.result != "200":
            failure_since_ok = True
            continue
        if last_ok is not None and failure_since_ok:
            longest = max(longest, o.ended - last_ok)
        last_ok, failure_since_ok = o.ended, False
    recovered = None
    if failed:
        last_failure = failed[-1].ended
        back = next((o for o in ordered if o.result == "200" and o.ended > last_failure), None)
        if back is not None:
            recovered = back.ended - action_start
    return Report(
        requests=len(ordered),
        failed=len(failed),
        longest_gap=longest,
        action_seconds=action_seconds,
        recovered_after=recovered,
        failures=dict(Counter(o.result for o in failed)),
    )


def one_request(host: str, port: int, path: str, timeout: float) -> str:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return str(resp.status)
    except ConnectionRefusedError:
        return "refused"
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        return "reset"
    except TimeoutError:
        return "timeout"
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__
    finally:
        conn.close()


class Load:
    """``workers`` threads sending requests at ``rate`` per second in all, until stopped or
    ``limit`` requests were sent."""

    def __init__(self, url: str, rate: float, workers: int, timeout: float, limit: int) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._path = "/home"
        self._period = workers / rate
        self._workers = workers
        self._timeout = timeout
        self._limit = limit
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self._workers):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _run(self, index: int) -> None:
        # Workers start spread over one period, so the requests are evenly paced.
        next_at = time.monotonic() + self._period * index / self._workers
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            next_at = max(next_at + self._period, time.monotonic())
            sent = time.monotonic()
            result = one_request(self._host, self._port, self._path, self._timeout)
            with self._lock:
                if len(self.outcomes) >= self._limit:
                    self._stop.set()
                    return
                self.outcomes.append(Outcome(sent, time.monotonic(), result))

    def success_sent_after(self, moment: float) -> bool:
        with self._lock:
            return any(o.result == "200" and o.sent > moment for o in self.outcomes)


def compose_container(project: str, service: str) -> str:
    out = subprocess.run(
        [
            "docker",
            "ps",
            "-q",
            "--filter",
            f"label=com.docker.compose.project={project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if len(out) != 1:
        raise SystemExit(f"restart_gap: expected one running {service!r} of {project!r}, got {out}")
    return out[0]


def act(action: str, container: str) -> None:
    commands = {
        "restart": [["docker", "restart", container]],
        "kill-start": [["docker", "kill", container], ["docker", "start", container]],
    }[action]
    for cmd in commands:
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def measure(
    url: str,
    container: str,
    action: str,
    *,
    rate: float = 200.0,
    workers: int = 4,
    before: float = 2.0,
    after: float = 2.0,
    timeout: float = 2.0,
    limit: int = 60_000,
    deadline: float = 120.0,
) -> Report:
    """Run the load, do ``action`` to ``container`` ``before`` seconds in, and keep the load
    on until ``after`` seconds past the first answer after it (or ``deadline``)."""
    load = Load(url, rate, workers, timeout, limit)
    load.start()
    try:
        started = time.monotonic()
        while not load.success_sent_after(started):
            if time.monotonic() - started > deadline:
                raise SystemExit(f"restart_gap: {url} does not answer; is the stack up?")
            time.sleep(0.05)
        time.sleep(before)
        action_start = time.monotonic()
        act(action, container)
        action_end = time.monotonic()
        action_seconds = action_end - action_start
        end = action_start + min(deadline, MAX_SECONDS)
        # Served again: a request sent after the docker command returned was answered.
        while time.monotonic() < end and not load.success_sent_after(action_end):
            time.sleep(0.05)
        served_again = load.success_sent_after(action_end)
        time.sleep(after)
    finally:
        load.stop()
    report = summarize(load.outcomes, action_start, action_seconds)
    report.served_again = served_again
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    project = os.environ.get("COMPOSE_PROJECT_NAME", "lbproxy")
    parser.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('LBPROXY_PORT', 5000)}")
    parser.add_argument(
        "--container", help=f"the balancer's container (default: service lb of {project!r})"
    )
    parser.add_argument("--action", choices=["restart", "kill-start"], default="restart")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second in all")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--before", type=float, default=2.0, help="seconds of load before")
    parser.add_argument("--after", type=float, default=2.0, help="seconds of load once served")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    container = args.container or compose_container(project, "lb")
    report = measure(
        args.url,
        container,
        args.action,
        rate=args.rate,
        workers=args.workers,
        before=args.before,
        after=args.after,
    )
    print(json.dumps(report.__dict__) if args.json else f"docker {args.action}: {report.text()}")
    return 0 if report.served_again else 1


if __name__ == "__main__":
    sys.exit(main())
