"""``lbproxy``: run the balancer, or one replica server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from ._config import Config, load_config, with_overrides
from ._errors import ConfigError, LbproxyError
from ._runtime import raise_open_files_limit, run


def _run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the load balancer (the default)")
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path("config.yaml"),
        help="path of config.yaml (default: ./config.yaml); edits are applied live",
    )
    p.add_argument("--backend", choices=["process", "static"], help="override replicas.backend")
    p.add_argument("--host", help="override listen.host")
    p.add_argument("--port", type=int, help="override listen.port")
    p.add_argument("--replicas", type=int, help="override replicas.count")
    p.add_argument(
        "--check", action="store_true", help="validate the configuration, print it and exit"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lbproxy",
        description="A consistent-hashing HTTP load balancer that starts, probes and heals "
        "its own replicas.",
        epilog="With no command it runs the balancer: lbproxy [run] [-c/--config CONFIG] "
        "[--check] [--port PORT] [--replicas N] ... (see: lbproxy run --help).",
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,replica}")
    _run_parser(sub)
    sub.add_parser(
        "replica", help="run one replica web server (see: lbproxy replica --help)", add_help=False
    )
    return parser


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config) if args.config.exists() else None
    if config is None:
        if args.config != Path("config.yaml"):
            raise ConfigError(f"{args.config}: no such file")
        config = Config()
    overrides = {
        "replicas.backend": args.backend,
        "listen.host": args.host,
        "listen.port": args.port,
        "replicas.count": args.replicas,
    }
    set_ = {k: v for k, v in overrides.items() if v is not None}
    return with_overrides(config, **set_) if set_ else config


async def _serve(config: Config, path: Path | None) -> None:
    from ._server import Server

    server = Server(config, path)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_shutdown)
    await server.serve()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "replica":
        from .replica import main as replica_main

        replica_main(argv[1:])
        return 0
    parser = build_parser()
    args = parser.parse_args(
        argv if argv and argv[0] in ("run", "-h", "--help") else ["run", *argv]
    )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    try:
        config = _load(args)
    except ConfigError as e:
        print(f"lbproxy: invalid configuration: {e}", file=sys.stderr)
        return 2
    if args.check:
        print(config.model_dump_json(indent=2))
        return 0
    raise_open_files_limit()
    try:
        run(_serve(config, args.config if args.config.exists() else None))
    except LbproxyError as e:
        print(f"lbproxy: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
