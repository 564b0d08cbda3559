"""``python -m bench``: the load table (direct, HAProxy, NGINX, lbproxy) and lbproxy's memory."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from lbproxy._runtime import raise_open_files_limit
from lbproxy.front._server import default_max_connections

from . import memory, report, targets, wrk
from .install import ensure, which
from .procs import CLK_TCK, BenchError, Processes, busiest, cpu_snapshot, tree_cpu_ticks

REPLICAS = 3


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="lbproxy against HAProxy, NGINX and going direct (wrk, interleaved rounds), "
        "and lbproxy's memory while streaming 1 GiB each way and holding idle connections.",
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    p.add_argument("--rounds", type=int, default=5, help="rounds over all targets (5)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per target (2)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads per balancer run (2)")
    p.add_argument(
        "--targets",
        default=",".join(targets.ALL),
        help=f"comma-separated, driven in this order each round ({','.join(targets.ALL)})",
    )
    p.add_argument(
        "--observability",
        action="store_true",
        help="what metrics and the access log cost: lbproxy with metrics off, on (the "
        "default), and on with the access log, in one run (sets --targets, --skip-memory)",
    )
    p.add_argument("--transfer-mib", type=int, default=1024, help="MiB per transfer (1024)")
    p.add_argument("--idle", type=int, default=10_000, help="idle connections held (10000)")
    p.add_argument("--skip-load", action="store_true", help="only the memory part")
    p.add_argument("--skip-memory", action="store_true", help="only the load part")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a short check: 1 round of 2 s, 1 s warm-up, 64 MiB transfers, 1000 idle",
    )
    p.add_argument("--no-install", action="store_true", help="never run apt-get")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.warmup = 2, 1, 1
        args.transfer_mib, args.idle = 64, 1000
    if args.observability:
        args.targets, args.skip_memory = ",".join(targets.OBSERVABILITY), True
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(targets.ALL)
    if unknown:
        p.error(f"unknown targets {sorted(unknown)}; choose from {list(targets.ALL)}")
    if min(args.duration, args.rounds, args.connections, args.threads) < 1 or args.warmup < 0:
        p.error("--duration, --rounds, --connections and --threads must be at least 1")
    return args


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def _context(args: argparse.Namespace, tools: dict[str, str]) -> dict[str, Any]:
    versions = {"python": platform.python_version()}
    if "wrk" in tools:
        versions["wrk"] = _version([tools["wrk"], "-v"])
    if "haproxy" in tools:
        versions["haproxy"] = _version([tools["haproxy"], "-v"])
    if "nginx" in tools:
        versions["nginx"] = _version([tools["nginx"], "-v"])
    commit = _version(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"])
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "commit": commit,
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
        "versions": versions,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }


def _beside(when: str, context: dict[str, Any]) -> None:
    """Say what else was using the CPU (a 1 s sample), as the machine is shared."""
    busy = busiest()
    context[f"busy_{when}"] = busy
    print(f"bench: busiest processes {when} (1 s sample, % of one CPU):")
    for pct, cmd in busy or [(0.0, "(nothing)")]:
        print(f"  {pct:5.0f}%  {cmd}")


# -- load ------------------------------------------------------------------------------------


def load_bench(args: argparse.Namespace, tools: dict[str, str], workdir: Path) -> list[report.Run]:
    wanted = [t for t in args.targets if t not in targets.PROGRAM or targets.PROGRAM[t] in tools]
    for t in args.targets:
        if t not in wanted:
            print(f"bench: skipping {t}: not installed")
    procs = Processes(workdir)
    runs: list[report.Run] = []
    try:
        replicas = targets.start_replicas(procs, REPLICAS)
        running: dict[str, targets.Target] = {}
        for name in wanted:
            running[name] = (
                targets.direct(replicas)
                if name == "direct"
                else targets.start_balancer(name, procs, replicas, workdir, tools)
            )
        print(
            f"bench: {REPLICAS} replicas, targets {', '.join(wanted)}; "
            f"wrk -c{args.connections}, {args.rounds} x {args.duration}s each",
            flush=True,
        )
        for t in running.values():
            if args.warmup:
                wrk.run(tools["wrk"], t.urls, args.connections, args.threads, args.warmup)
        for n in range(1, args.rounds + 1):
            for t in running.values():
                runs.append(_one_run(n, t, args, tools["wrk"]))
                print(_progress(runs[-1]), flush=True)
    finally:
        procs.close()
    return runs


def _progress(r: report.Run) -> str:
    line = (
        f"  round {r.round} {r.target:17} {r.rps:9,.0f} req/s"
        f"  p50 {r.p50_us / 1000:6.2f} ms  p99 {r.p99_us / 1000:6.2f} ms"
    )
    if r.cpu_us_per_request is not None:
        line += f"  {r.cpu_us_per_request:5.1f} µs CPU/req"
    line += f"  other load {r.other_cpu_pct:3.0f}%"
    return line + (f"  ERRORS {r.errors}" if r.errors else "")


def _one_run(n: int, t: targets.Target, args: argparse.Namespace, wrk_path: str) -> report.Run:
    before = tree_cpu_ticks(t.pid) if t.pid else 0
    machine0, own0 = cpu_snapshot()
    started = time.monotonic()
    load = wrk.run(wrk_path, t.urls, args.connections, args.threads, args.duration)
    machine1, own1 = cpu_snapshot()
    other = report.other_cpu_pct(
        machine1 - machine0, own1 - own0, time.monotonic() - started, CLK_TCK
    )
    cpu = None
    if t.pid:
        cpu = report.cpu_per_request_us(tree_cpu_ticks(t.pid) - before, load.requests, CLK_TCK)
    return report.Run(
        round=n,
        target=t.name,
        requests=load.requests,
        rps=load.rps,
        p50_us=load.percentile_us(50),
        p99_us=load.percentile_us(99),
        errors=load.errors,
        cpu_us_per_request=cpu,
        other_cpu_pct=other,
    )


# -- memory ----------------------------------------------------------------------------------


def memory_bench(
    args: argparse.Namespace, tools: dict[str, str], workdir: Path
) -> list[memory.MemoryResult]:
    procs = Processes(workdir)
    results = []
    try:
        upstream = [("upstream", targets.start_upstream(procs, "upstream"))]
        for i, (scenario, work) in enumerate(_scenarios(args)):
            label = f"lbproxy-mem{i}"
            t = targets.start_balancer("lbproxy", procs, upstream, workdir, tools, label)
            assert t.pid is not None
            base = t.urls[0].removesuffix("/home")
            print(f"bench: memory, {scenario} ...", flush=True)
            results.append(asyncio.run(_measure(t.pid, base, scenario, work)))
            print(
                f"  {scenario}: RSS {report.mb(results[-1].baseline_kib):.1f} MB, "
                f"growth {report.mb(results[-1].growth_kib):.1f} MB; {results[-1].detail}",
                flush=True,
            )
            procs.stop_named(label)
    finally:
        procs.close()
    return results


Work = Callable[[str, int], Awaitable[str]]  # (balancer's base URL, its pid) -> what it verified


def _scenarios(args: argparse.Namespace) -> list[tuple[str, Work]]:
    size = args.transfer_mib * memory.MiB

    async def upload(base: str, pid: int) -> str:
        return await memory.upload(base, size)

    async def download(base: str, pid: int) -> str:
        return await memory.download(base, size)

    async def idle(base: str, pid: int) -> str:
        return await memory.idle_connections(pid, base, args.idle)

    return [
        (f"upload {args.transfer_mib} MiB", upload),
        (f"download {args.transfer_mib} MiB", download),
        (f"idle {args.idle} connections", idle),
    ]


async def _measure(pid: int, base: str, scenario: str, work: Work) -> memory.MemoryResult:
    await memory.warm_up(base)
    return await memory.measure(pid, scenario, lambda: work(base, pid))


# -- main ------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Also SIGINT: a shell starts background jobs with it ignored, and Ctrl-C must still work.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    nofile = raise_open_files_limit()
    # The balancer takes at most half its open-files limit in client connections (the other
    # half is for their replica connections): hold fewer idle ones where that is below --idle.
    most = default_max_connections() - 100
    if not args.skip_memory and args.idle > most:
        args.idle = max(100, most)
        print(f"bench: open-files limit is {nofile}; holding {args.idle} idle connections")
    programs = dict.fromkeys(targets.PROGRAM[t] for t in args.targets if t in targets.PROGRAM)
    wanted_tools = [] if args.skip_load else ["wrk", *programs]
    tools = (
        {t: p for t in wanted_tools if (p := which(t))} if args.no_install else ensure(wanted_tools)
    )
    if not args.skip_load and "wrk" not in tools:
        print("bench: wrk is missing: skipping the load part (Debian package 'wrk')")
        args.skip_load = True
    context = _context(args, tools)
    print(
        f"bench: {context['when']}, commit {context['commit']}, {context['cpus']} CPUs, "
        f"load average {' '.join(f'{x:.2f}' for x in context['loadavg_before'])}"
    )
    _beside("before", context)
    workdir = Path(tempfile.mkdtemp(prefix="lbproxy-bench-"))
    context["workdir"] = str(workdir)
    started = time.monotonic()
    keep_logs = False
    try:
        runs = [] if args.skip_load else load_bench(args, tools, workdir)
        mem = [] if args.skip_memory else memory_bench(args, tools, workdir)
    except KeyboardInterrupt:
        print("\nbench: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    except BenchError as e:
        keep_logs = True
        print(f"bench: {e}\nbench: logs are in {workdir}", file=sys.stderr)
        return 1
    finally:
        if not keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = report.summarize(runs, args.targets, targets.REFERENCE)
    items = report.verdicts(rows, mem)
    context["loadavg_after"] = os.getloadavg()
    _beside("after", context)
    context["wall_s"] = round(time.monotonic() - started, 1)
    print()
    single = [r for r in rows if r.target not in targets.TWO_CORES]
    both = [r for r in rows if r.target in targets.TWO_CORES]
    if single:
        print("Single-threaded: one lbproxy process, HAProxy nbthread 1")
        print(report.load_table(single) + "\n")
    if both:
        print("Every core: lbproxy workers: 2 against HAProxy nbthread 2 (ratios to haproxy-2t)")
        print(report.load_table(both) + "\n")
    if mem:
        print(report.memory_table(mem) + "\n")
    print(report.verdict_table(items))
    print(
        f"\nbench: {context['wall_s']:.0f}s; load average after "
        f"{' '.join(f'{x:.2f}' for x in context['loadavg_after'])}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.as_json(runs, rows, mem, items, context), indent=2))
        print(f"bench: figures written to {args.json}")
    return 0
