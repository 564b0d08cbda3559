"""``python -m experiments``: run the experiments against balancers it starts, write results."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ._balancer import BACKENDS, ExperimentError
from ._load import uniform_ids
from ._results import Report, write_json
from ._settings import HASHES, OUT, Settings

#: Every experiment, in the order they run. 4 compares the runs of 1 and 2, so it runs them.
EXPERIMENTS = ("1", "2", "3", "4", "movement", "zipf", "bounded")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments",
        description="Run the seed's experiments 1-4 (and key movement and Zipf balance) "
        "against real lbproxy balancers this command starts and stops, and write the plots "
        "(PNG) and raw numbers (CSV, JSON) to the output directory.",
        epilog="Experiments: 1 = load per replica at N=3; 2 = load and spread at N=2..6; "
        "3 = every endpoint, and replicas killed under load; 4 = the hash choices compared, "
        "with the ring drawn (runs 1 and 2); movement = keys moved by /add and /rm against the "
        "ideal; zipf = balance under Zipf-skewed keys; bounded = the same with replicas that "
        "take 20 ms and hashing.balance_factor off, 1.5, 1.25, 1.1 (process backend).",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="process",
        help="replicas as local processes (default) or Docker containers",
    )
    p.add_argument(
        "-n", "--requests", type=int, default=10_000, help="requests per load run (default 10000)"
    )
    p.add_argument(
        "-c", "--concurrency", type=int, default=64, help="requests in flight at once (default 64)"
    )
    p.add_argument(
        "-e",
        "--experiments",
        nargs="+",
        choices=[*EXPERIMENTS, "all"],
        default=["all"],
        metavar="EXP",
        help=f"which to run, of {', '.join(EXPERIMENTS)} (default: all)",
    )
    p.add_argument(
        "--hashes",
        nargs="+",
        choices=HASHES,
        default=list(HASHES),
        help="hash choices to compare (default: all three)",
    )
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=OUT,
        help="output directory (default: experiments/out, untracked; experiments/results holds "
        "the committed results)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument(
        "--kills", type=int, default=3, help="replicas killed in experiment 3 (default 3)"
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=300.0,
        help="longest one load run may take, in seconds (default 300)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _positive(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("requests", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.kills < 0:
        parser.error("--kills must be 0 or more")
    if args.time_limit <= 0:
        parser.error("--time-limit must be positive")
    if args.backend != "process" and "bounded" in args.experiments:
        parser.error("the bounded experiment runs on the process backend only")


async def run(s: Settings, selected: Sequence[str]) -> list[Report]:
    from . import balance, bounded, hashes, movement, recovery

    reports: list[Report] = []
    exp1 = exp2 = None
    if "1" in selected or "4" in selected:
        exp1 = await balance.experiment1(s)
        reports.append(balance.report1(s, exp1))
    if "2" in selected or "4" in selected:
        exp2 = await balance.experiment2(s)
        reports.append(balance.report2(s, exp2))
    if "3" in selected:
        cases, kills = await recovery.experiment3(s)
        reports.append(recovery.report3(s, cases, kills))
    if "4" in selected and exp1 is not None and exp2 is not None:
        ids = uniform_ids(s.requests, s.rng("uniform"))
        reports.append(hashes.report4(s, exp1, exp2, ids))
    if "movement" in selected:
        reports.append(movement.report_movement(s, await movement.experiment_movement(s)))
    if "zipf" in selected:
        reports.append(balance.report_zipf(s, await balance.experiment_zipf(s)))
    if "bounded" in selected and s.backend == "process":
        reports.append(bounded.report_bounded(s, await bounded.experiment_bounded(s)))
    return reports


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_summary(s: Settings, reports: Sequence[Report], meta: dict[str, object]) -> Path:
    parts = [
        "# Experiment results (generated)\n",
        f"Written by `{meta['command']}` in {meta['wall_seconds']} s on {meta['machine']} "
        f"(commit {meta['commit']}, backend {s.backend}, {s.requests:,} requests per run, "
        f"concurrency {s.concurrency}, seed {s.seed}). Explanations: `experiments/README.md`.\n",
    ]
    for r in reports:
        parts.append(f"## {r.title}\n\n{r.markdown}\n")
    path = s.out / "summary.md"
    path.write_text("\n".join(parts))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _positive(parser, args)
    selected = EXPERIMENTS if "all" in args.experiments else tuple(args.experiments)
    s = Settings(
        out=args.out.resolve(),
        backend=args.backend,
        requests=args.requests,
        concurrency=args.concurrency,
        seed=args.seed,
        hashes=tuple(h for h in HASHES if h in args.hashes),
        progress=not args.no_progress,
        time_limit=args.time_limit,
        kills=args.kills,
    )
    s.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        reports = asyncio.run(run(s, selected))
    except ExperimentError as e:
        print(f"experiments: {e}", file=sys.stderr)
        return 1
    meta: dict[str, object] = {
        "command": " ".join(["python -m experiments", *(sys.argv[1:] if argv is None else argv)]),
        "wall_seconds": round(time.monotonic() - started, 1),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end",
        "commit": _git_commit(),
        "python": platform.python_version(),
        "selected": list(selected),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()},
    }
    summary = write_summary(s, reports, meta)
    write_json(
        s.out / "run.json",
        {
            **meta,
            "headline": {r.name: r.headline for r in reports},
            "files": sorted({f for r in reports for f in r.files} | {"summary.md", "run.json"}),
        },
    )
    print(f"results in {s.out} ({summary.name}); {meta['wall_seconds']} s")
    for r in reports:
        print(f"- {r.title}: {', '.join(r.files)}")
        if r.console:
            print(f"\n{r.console}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
