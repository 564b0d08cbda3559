"""Experiment 3: every endpoint against the contract (docs/api.md), replicas killed under load.

Part one sends each endpoint's success and error cases and checks status and message
against the contract (and that no error changed the replica set). Part two learns which
replica answers each of a pool of ids, then keeps a load of those ids running while it kills
replicas one at a time (SIGKILL, or ``docker kill``) and watches from outside: ``/rep`` and
the running replicas every few tens of milliseconds, and every answer. For each kill:

- *detected*: the killed hostname has left ``/rep`` (its slot got a new hostname);
- *running*: the replacement's process (container) exists;
- *serving*: the first answer from the replacement;
- *failed*: requests that got no replica's answer, from the kill until serving + 1 s;
- *rerouted*: answers from a replica other than the key's own (retries, or the ring without
  the dead one) until the replacement serves;
- *keys back*: of the killed replica's ids sent after its replacement first answered, the
  fraction the replacement answers (1.0: it took over the slot and got back every key).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ._balancer import Balancer, DockerReplicas, ExperimentError
from ._load import Answer, run_load, uniform_ids
from ._results import Report, md_table, pyplot, save_figure, write_csv, write_json
from ._settings import Settings

#: Where ``python -m experiments._monitor`` finds the package.
_REPO_ROOT = Path(__file__).resolve().parent.parent

# -- part one: the endpoints ----------------------------------------------------------------

#: the contract's (docs/api.md) exact messages.
ADD_TOO_MANY = "<Error> Length of hostname list is more than newly added instances"
RM_TOO_MANY = "<Error> Length of hostname list is more than removable instances"
NO_ENDPOINT = "<Error> '/other' endpoint does not exist in server replicas"


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    #: The JSON body, or a function of the replicas /rep lists just before (for a case that
    #: needs a name in use, say: an earlier case's /rm removes one replica at random).
    body: Any = None
    raw: bytes | None = None
    status: int = 400
    #: The exact message, or words the message must contain (any case); None: not checked.
    message: str | None = None
    contains: tuple[str, ...] = ()
    #: For a 200: what the answer must satisfy, given it and the replicas before.
    check: Callable[[Any, list[str]], bool] | None = None
    header: tuple[str, str] | None = None


def _rep_shape(n: int) -> Callable[[Any, list[str]], bool]:
    def check(answer: Any, before: list[str]) -> bool:
        msg = answer["message"]
        return msg["N"] == n == len(msg["replicas"]) and answer["status"] == "successful"

    return check


def _hello(answer: Any, before: list[str]) -> bool:
    return answer["message"].removeprefix("Hello from Server: ") in before


CASES: tuple[Case, ...] = (
    Case("rep", "GET", "/rep", status=200, check=_rep_shape(3)),
    Case("home", "GET", "/home", status=200, check=_hello),
    Case(
        "add two, one named",
        "POST",
        "/add",
        {"n": 2, "hostnames": ["S5"]},
        status=200,
        check=lambda a, b: _rep_shape(5)(a, b) and a["message"]["replicas"][:4] == [*b, "S5"],
    ),
    Case(
        "rm two, one named",
        "DELETE",
        "/rm",
        {"n": 2, "hostnames": ["S5"]},
        status=200,
        check=lambda a, b: _rep_shape(3)(a, b) and "S5" not in a["message"]["replicas"],
    ),
    Case(
        "add: more names than n",
        "POST",
        "/add",
        {"n": 1, "hostnames": ["A1", "B1"]},
        message=ADD_TOO_MANY,
    ),
    Case(
        "rm: more names than n",
        "DELETE",
        "/rm",
        {"n": 1, "hostnames": ["A1", "B1"]},
        message=RM_TOO_MANY,
    ),
    Case("a path no replica serves", "GET", "/other", message=NO_ENDPOINT),
    Case("add: malformed JSON", "POST", "/add", raw=b'{"n": ', contains=("json",)),
    Case("add: body not an object", "POST", "/add", [1, 2], contains=("object",)),
    Case("add: unknown field", "POST", "/add", {"n": 1, "x": 1}, contains=("unknown", "x")),
    Case("add: n missing", "POST", "/add", {"hostnames": []}, contains=("n",)),
    Case("add: n = 0", "POST", "/add", {"n": 0}, contains=("positive integer",)),
    Case("add: n a string", "POST", "/add", {"n": "2"}, contains=("positive integer",)),
    Case(
        "add: hostnames not a list", "POST", "/add", {"n": 1, "hostnames": "S9"}, contains=("list",)
    ),
    Case(
        "add: invalid container name",
        "POST",
        "/add",
        {"n": 1, "hostnames": ["bad name!"]},
        contains=("bad name!", "container name"),
    ),
    Case(
        "add: a name twice",
        "POST",
        "/add",
        {"n": 2, "hostnames": ["S9", "s9"]},
        contains=("twice",),
    ),
    Case(
        "add: a name in use",
        "POST",
        "/add",
        lambda names: {"n": 1, "hostnames": [names[0]]},
        contains=("in use",),
    ),
    Case("add: above replicas.max", "POST", "/add", {"n": 1000}, contains=("cap",)),
    Case(
        "rm: unknown replica", "DELETE", "/rm", {"n": 1, "hostnames": ["nope"]}, contains=("nope",)
    ),
    Case(
        "rm: more than exist",
        "DELETE",
        "/rm",
        lambda names: {"n": len(names) + 1},
        contains=("only", "exist"),
    ),
    Case("add: wrong method", "GET", "/add", status=405, header=("Allow", "POST")),
    Case("rm: wrong method", "POST", "/rm", {"n": 1}, status=405, header=("Allow", "DELETE")),
    Case("add: body over 64 KiB", "POST", "/add", raw=b" " * (70 * 1024), status=413),
)


@dataclass(frozen=True)
class CaseResult:
    case: Case
    body: Any  # as sent
    status: int
    message: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def row(self) -> dict[str, Any]:
        c = self.case
        body = c.raw[:40].decode(errors="replace") + "..." if c.raw else self.body
        expected = c.message or (" & ".join(c.contains) if c.contains else "")
        return {
            "case": c.name,
            "request": f"{c.method} {c.path} {'' if body is None else body}".strip(),
            "expected_status": c.status,
            "status": self.status,
            "expected_message": expected,
            "message": self.message,
            "ok": self.ok,
            "problems": "; ".join(self.problems),
        }


async def check_case(b: Balancer, case: Case) -> CaseResult:
    before = await b.rep()
    body = case.body(before) if callable(case.body) else case.body
    status, answer, headers = await b.call(case.method, case.path, body, case.raw)
    message = answer.get("message") if isinstance(answer, dict) else answer
    text = message if isinstance(message, str) else str(message)
    problems = []
    if status != case.status:
        problems.append(f"status {status}, expected {case.status}")
    if case.status >= 400:
        if not isinstance(answer, dict) or answer.get("status") != "failure":
            problems.append('no "status": "failure"')
        if not text.startswith("<Error> "):
            problems.append("message does not start with <Error>")
    if case.message is not None and text != case.message:
        problems.append(f"message {text!r}, expected {case.message!r}")
    missing = [w for w in case.contains if w.lower() not in text.lower()]
    if missing:
        problems.append(f"message does not say {missing}")
    if case.header is not None and headers.get(case.header[0]) != case.header[1]:
        problems.append(f"header {case.header[0]}: {headers.get(case.header[0])!r}")
    if case.check is not None and status == 200 and not case.check(answer, before):
        problems.append(f"unexpected answer {answer!r}")
    if case.status != 200 and await b.rep() != before:
        problems.append("the replica set changed")
    return CaseResult(case, body, status, text, tuple(problems))


async def check_endpoints(b: Balancer) -> list[CaseResult]:
    return [await check_case(b, case) for case in CASES]


# -- part two: kills under load -------------------------------------------------------------


@dataclass
class Sample:
    t: float
    listed: list[str]  # /rep
    running: set[str]  # replicas found running (processes or containers)


@dataclass
class Kill:
    victim: str
    t_kill: float  # seconds from the load's start
    wall: float  # time.time() of the kill, to compare with the balancer's log
    replacement: str | None = None
    # Seconds after the kill:
    logged_down: float | None = None  # the balancer logs the victim down
    detected: float | None = None  # /rep no longer lists the victim
    running: float | None = None  # the replacement's process (container) runs
    logged_up: float | None = None  # the balancer logs the replacement up (in the ring)
    serving: float | None = None  # the first answer from the replacement
    failed: int = 0
    rerouted: int = 0
    #: Answers from the victim read after the kill: sent before it died, read later.
    victim_answers: int = 0
    victim_requests: int = 0  # the victim's keys sent from the kill until serving
    keys_back: float | None = None
    #: When each rerouted answer came (for the timeline).
    rerouted_at: list[float] = field(default_factory=list, repr=False)

    def row(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return {
            "victim": self.victim,
            "replacement": self.replacement,
            "killed_at_s": r(self.t_kill),
            "logged_down_s": r(self.logged_down),
            "detected_s": r(self.detected),
            "running_s": r(self.running),
            "logged_up_s": r(self.logged_up),
            "serving_s": r(self.serving),
            "failed": self.failed,
            "rerouted": self.rerouted,
            "victim_answers": self.victim_answers,
            "victim_requests": self.victim_requests,
            "keys_back": r(self.keys_back),
        }


@dataclass
class KillRun:
    kills: list[Kill]
    answers: list[Answer]
    samples: list[Sample]
    n: int
    pool: int
    concurrency: int
    errors: dict[str, int] = field(default_factory=dict)


class _Monitor:
    """Runs ``experiments._monitor`` in a process of its own and collects its samples."""

    def __init__(self, b: Balancer, backend: str, t0: float, interval: float) -> None:
        self._b, self._backend, self._t0, self._interval = b, backend, t0, interval
        self.samples: list[Sample] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "experiments._monitor",
            "--url",
            self._b.url,
            "--backend",
            self._backend,
            "--pid",
            str(self._b.proc.pid),
            *self._instance(),
            "--interval",
            str(self._interval),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            cwd=_REPO_ROOT,
        )
        self._reader = asyncio.create_task(self._read())
        if await self.until(lambda x: True, 30.0) is None:
            raise ExperimentError("the monitor gave no sample within 30 s")

    def _instance(self) -> list[str]:
        replicas = self._b.replicas
        return ["--instance", replicas.instance] if isinstance(replicas, DockerReplicas) else []

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for line in self._proc.stdout:
            d = json.loads(line)
            self.samples.append(Sample(d["t"] - self._t0, d["listed"], set(d["running"])))

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def until(self, pred: Callable[[Sample], bool], timeout: float) -> Sample | None:
        """The first sample from now on (the latest one included) that satisfies ``pred``."""
        deadline = time.monotonic() + timeout
        seen = max(0, len(self.samples) - 1)
        while time.monotonic() < deadline:
            for sample in self.samples[seen:]:
                if pred(sample):
                    return sample
            seen = len(self.samples)
            if self._proc is not None and self._proc.returncode is not None:
                raise ExperimentError(f"the monitor exited with {self._proc.returncode}")
            await asyncio.sleep(0.005)
        return None


def _keys(pool: Sequence[str], s: Settings, cap: int):  # type: ignore[no-untyped-def]
    rng = s.rng("kill-load")
    for _ in range(cap):
        yield rng.choice(pool)


async def kill_under_load(
    b: Balancer,
    s: Settings,
    kills: int,
    pool_size: int = 2000,
    lead_in: float = 1.5,
    gap: float = 2.0,
    poll: float = 0.02,
    recovery_timeout: float = 60.0,
) -> KillRun:
    """Kill ``kills`` replicas one after another while a load of learned ids runs."""
    pool = uniform_ids(pool_size, s.rng("kill-pool"))
    learn = await s.load(b, pool, "exp3 learn owners")
    learned = learn.owners()
    pool = [k for k in pool if k in learned]
    if not pool:
        raise ExperimentError(f"no id of the pool was answered: {dict(learn.errors)}")
    n = len(await b.rep())
    first_answer: dict[str, float] = {}
    served = asyncio.Event()

    def on_answer(a: Answer) -> None:
        if a.replica is not None and a.replica not in first_answer:
            first_answer[a.replica] = a.end
            served.set()

    stop = asyncio.Event()
    cap = 1_000_000  # with time_limit, the bound on the load; the last kill ends it first
    t0 = time.monotonic()
    monitor = _Monitor(b, s.backend, t0, poll)
    await monitor.start()
    load_task = asyncio.create_task(
        run_load(
            b.url + "/home",
            _keys(pool, s, cap),
            total=cap,
            concurrency=s.concurrency,
            time_limit=s.time_limit,
            stop=stop,
            on_answer=on_answer,
            progress=False,
            t0=t0,
        )
    )
    rng = s.rng("kill-victims")
    done: list[Kill] = []
    bar = tqdm(total=kills, desc="exp3 kill and recover", unit="kill", disable=not s.progress)
    try:
        await asyncio.sleep(lead_in)
        for _ in range(kills):
            names = await b.rep()
            victim = rng.choice(names)
            kill = Kill(victim, time.monotonic() - t0, time.time())
            await b.replicas.kill(victim)
            done.append(kill)
            gone = await monitor.until(lambda x, v=victim: v not in x.listed, recovery_timeout)
            if gone is None:
                break
            kill.detected = gone.t - kill.t_kill
            new = set(gone.listed) - set(names)
            kill.replacement = new.pop() if len(new) == 1 else None
            if kill.replacement is None:
                break
            rep = kill.replacement
            up = await monitor.until(lambda x, r=rep: r in x.running, recovery_timeout)
            if up is not None:
                kill.running = up.t - kill.t_kill
            deadline = time.monotonic() + recovery_timeout
            while rep not in first_answer and time.monotonic() < deadline:
                served.clear()
                try:
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        await served.wait()
                except TimeoutError:
                    break
            if rep in first_answer:
                kill.serving = first_answer[rep] - kill.t_kill
            bar.update()
            await asyncio.sleep(gap)
    finally:
        bar.close()
        stop.set()
        try:
            load = await load_task
        finally:
            await monitor.stop()
    _score(done, load.answers, learned)
    _from_log(done, await asyncio.to_thread(b.log_path.read_text, errors="replace"))
    return KillRun(
        done, load.answers, monitor.samples, n, len(pool), s.concurrency, dict(load.errors)
    )


_LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*replica (\S+) \(slot \d+\) is (down|up)"
)


def _from_log(kills: Sequence[Kill], log: str) -> None:
    """When the balancer itself logged each victim down and its replacement up."""
    events: dict[tuple[str, str], float] = {}
    for line in log.splitlines():
        m = _LOG_LINE.match(line)
        if m:
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            events.setdefault((m.group(2), m.group(3)), t)
    for k in kills:
        down = events.get((k.victim, "down"))
        up = events.get((k.replacement or "", "up"))
        k.logged_down = None if down is None else down - k.wall
        k.logged_up = None if up is None else up - k.wall


def _score(kills: Sequence[Kill], answers: Sequence[Answer], learned: dict[str, str]) -> None:
    """Failed, rerouted and keys-back per kill, from the answers."""
    owner = dict(learned)
    for i, k in enumerate(kills):
        end = k.t_kill + (k.serving if k.serving is not None else 5.0)
        nxt = kills[i + 1].t_kill if i + 1 < len(kills) else float("inf")
        after = [a for a in answers if k.t_kill <= a.end < nxt]
        k.failed = sum(not a.ok for a in after if a.end <= end + 1.0)
        mine = [a for a in after if owner.get(a.key) == k.victim]
        during = [a for a in mine if a.end <= end]
        k.victim_requests = len(during)
        moved = [a for a in during if a.ok and a.replica not in (k.victim, k.replacement)]
        k.rerouted = len(moved)
        k.victim_answers = sum(a.replica == k.victim for a in during)
        k.rerouted_at = [a.end for a in moved]
        # Sent after the replacement's first answer: it is in the ring by then.
        later = [a for a in mine if a.start > end and a.ok]
        if later and k.replacement:
            k.keys_back = sum(a.replica == k.replacement for a in later) / len(later)
        if k.replacement:
            # From now on the victim's keys are the replacement's (it took over the slot).
            owner = {key: k.replacement if o == k.victim else o for key, o in owner.items()}


BUCKET = 0.1  # seconds per point of the timeline


def _timeline_rows(run: KillRun) -> list[dict[str, Any]]:
    """Per BUCKET seconds: answers per replica, failed and rerouted requests, replica counts."""
    if not run.answers:
        return []
    counts: dict[int, dict[str, int]] = {}
    for a in run.answers:
        slot = counts.setdefault(int(a.end / BUCKET), {})
        key = a.replica if a.ok and a.replica else "failed"
        slot[key] = slot.get(key, 0) + 1
    rerouted: dict[int, int] = {}
    for k in run.kills:
        for t in k.rerouted_at:
            rerouted[int(t / BUCKET)] = rerouted.get(int(t / BUCKET), 0) + 1
    samples = iter(run.samples)
    upcoming = next(samples, None)
    latest: Sample | None = None
    rows: list[dict[str, Any]] = []
    for i in range(max(counts) + 1):
        while upcoming is not None and upcoming.t <= (i + 1) * BUCKET:
            latest, upcoming = upcoming, next(samples, None)
        c = counts.get(i, {})
        t = i * BUCKET
        down = sum(k.t_kill <= t + BUCKET and t < k.t_kill + (k.serving or 0) for k in run.kills)
        rows.append(
            {
                "t": round(i * BUCKET, 2),
                "answered": sum(v for k, v in c.items() if k != "failed"),
                "failed": c.get("failed", 0),
                "rerouted": rerouted.get(i, 0),
                "listed": None if latest is None else len(latest.listed),
                "running": None if latest is None else len(set(latest.listed) & latest.running),
                # Slots whose replica answers: all but those between a kill and the first
                # answer of its replacement.
                "serving": None if latest is None else len(latest.listed) - down,
                "by_replica": {k: v for k, v in c.items() if k != "failed"},
            }
        )
    return rows


def _slots(run: KillRun, rows: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """The replicas of each slot over time: a replacement takes over its victim's slot."""
    first: dict[str, str] = {}
    for k in run.kills:
        if k.replacement:
            first[k.replacement] = first.get(k.victim, k.victim)
    slots: dict[str, list[str]] = {}
    for name in dict.fromkeys(n for r in rows for n in r["by_replica"]):
        slots.setdefault(first.get(name, name), []).append(name)
    return slots


def plot_timeline(run: KillRun, path: Any) -> Any:
    plt = pyplot()

    rows = _timeline_rows(run)
    ts = [r["t"] for r in rows]
    fig, (ax1, ax2, ax3) = plt.subplots(
        3, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1.4, 1.1]}
    )
    for names in _slots(run, rows).values():
        per_s = [sum(r["by_replica"].get(n, 0) for n in names) / BUCKET for r in rows]
        ax1.plot(ts, per_s, lw=1, label=" → ".join(names))
    ax1.set_ylabel("answers / s")
    ax1.legend(fontsize=7, loc="lower left")
    ax2.bar(
        ts,
        [r["rerouted"] for r in rows],
        width=BUCKET,
        align="edge",
        color="orange",
        label="rerouted (the victim's keys answered by another replica)",
    )
    ax2.bar(
        ts, [r["failed"] for r in rows], width=BUCKET, align="edge", color="red", label="failed"
    )
    ax2.set_ylabel(f"per {BUCKET:g} s")
    ax2.legend(fontsize=7, loc="upper right")
    ax3.step(
        ts,
        [r["listed"] for r in rows],
        where="post",
        color="grey",
        lw=3,
        alpha=0.5,
        label="in /rep",
    )
    ax3.step(
        ts, [r["running"] for r in rows], where="post", color="blue", label="in /rep and running"
    )
    ax3.step(
        ts, [r["serving"] for r in rows], where="post", color="green", ls="--", label="serving"
    )
    ax3.set_ylabel("replicas")
    ax3.set_ylim(0, run.n + 1)
    ax3.set_xlabel("seconds since the load started")
    ax3.legend(fontsize=7, loc="lower right")
    for k in run.kills:
        end = k.t_kill + (k.serving if k.serving is not None else 0)
        for ax in (ax1, ax2, ax3):
            ax.axvspan(k.t_kill, end, color="red", alpha=0.08)
            ax.axvline(k.t_kill, color="red", ls="--", lw=1)
            if k.detected is not None:
                ax.axvline(k.t_kill + k.detected, color="orange", ls=":", lw=1)
        ax1.annotate(
            f" kill {k.victim}",
            (k.t_kill, 0.98),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
            color="red",
        )
    fig.suptitle(
        f"Experiment 3: {len(run.kills)} replica(s) killed under load, concurrency "
        f"{run.concurrency}\ndashed: kill; dotted: gone from /rep; shaded: until the "
        "replacement's first answer",
        fontsize=10,
    )
    return save_figure(fig, path)


async def experiment3(s: Settings) -> tuple[list[CaseResult], KillRun]:
    async with s.balancer("default", 3) as b:
        cases = await check_endpoints(b)
    # A fresh balancer for the kills: server-1..3, whatever the cases left.
    async with s.balancer("default", 3) as b:
        run = await kill_under_load(b, s, s.kills)
    return cases, run


def report3(s: Settings, cases: Sequence[CaseResult], run: KillRun) -> Report:
    files = [
        write_csv(s.out / "exp3_endpoints.csv", [c.row() for c in cases]),
        write_csv(s.out / "exp3_kills.csv", [k.row() for k in run.kills]),
        write_json(s.out / "exp3_timeline.json", _timeline_rows(run)),
        plot_timeline(run, s.out / "exp3_timeline.png"),
    ]
    passed = sum(c.ok for c in cases)
    endpoint_md = md_table(
        ["case", "request", "expected", "got", "message", "ok"],
        [
            [
                c.case.name,
                c.row()["request"].replace("|", "\\|")[:60],
                c.case.status,
                c.status,
                c.message.replace("|", "\\|")[:90],
                "yes" if c.ok else "NO: " + "; ".join(c.problems),
            ]
            for c in cases
        ],
    )

    def ms(v: float | None) -> str:
        return "—" if v is None else f"{v * 1000:.0f} ms"

    kill_md = md_table(
        [
            "victim",
            "replacement",
            "logged down",
            "gone from /rep",
            "replacement running",
            "logged up",
            "first answer",
            "failed",
            "rerouted",
            "victim's requests meanwhile",
            "keys back",
        ],
        [
            [
                k.victim,
                k.replacement,
                ms(k.logged_down),
                ms(k.detected),
                ms(k.running),
                ms(k.logged_up),
                ms(k.serving),
                k.failed,
                k.rerouted,
                k.victim_requests,
                "—" if k.keys_back is None else f"{k.keys_back:.3f}",
            ]
            for k in run.kills
        ],
    )
    total = len(run.answers)
    failed = sum(not a.ok for a in run.answers)
    md = (
        f"Endpoints: {passed} of {len(cases)} cases as the contract says.\n\n{endpoint_md}\n\n"
        f"![exp3](exp3_timeline.png)\n\n{kill_md}\n\n"
        f"{total:,} requests over {max((a.end for a in run.answers), default=0):.1f} s from a "
        f"pool of {run.pool} ids, {failed} failed ({run.errors or 'none'})."
    )
    return Report(
        "exp3",
        "Experiment 3: endpoints, and replicas killed under load",
        md,
        headline={
            "endpoint_cases_passed": f"{passed}/{len(cases)}",
            "kills": [k.row() for k in run.kills],
            "requests": total,
            "failed": failed,
        },
        files=[f.name for f in files],
    )
