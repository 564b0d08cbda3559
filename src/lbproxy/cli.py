"""``lbproxy``: run the balancer, or one replica server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError, LbproxyError
from ._log_format import TEXT_FORMAT
from ._log_format import configure as configure_logging
from ._runtime import raise_open_files_limit, run

if TYPE_CHECKING:
    from ._config import Config

# The configuration's libraries (pydantic, yaml) are imported where the balancer's commands
# need them, so that `lbproxy replica` starts a replica without them.


def _run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the load balancer (the default)")
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path("config.yaml"),
        help="path of config.yaml (default: ./config.yaml); edits are applied live",
    )
    p.add_argument(
        "--backend",
        choices=["process", "docker", "static", "swarm"],
        help="override replicas.backend",
    )
    p.add_argument("--host", help="override listen.host")
    p.add_argument("--port", type=int, help="override listen.port")
    p.add_argument("--replicas", type=int, help="override replicas.count")
    p.add_argument(
        "--set",
        dest="settings",
        metavar="FIELD=VALUE",
        action="append",
        type=_setting,
        default=[],
        help="override any field, e.g. --set replicas.docker.network=mynet (repeatable; "
        "VALUE is YAML); overrides stay in force when config.yaml is reloaded",
    )
    p.add_argument(
        "--check", action="store_true", help="validate the configuration, print it and exit"
    )


def _status_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ._config import TOKEN_ENV

    p = sub.add_parser(
        "status",
        help="print the replicas' table (as the dashboard shows it) from the admin listener",
    )
    p.add_argument(
        "--url",
        default=os.environ.get("LBPROXY_ADMIN_URL", "http://127.0.0.1:5001"),
        help="the admin listener (default: $LBPROXY_ADMIN_URL or http://127.0.0.1:5001)",
    )
    p.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"the admin token, sent as a Bearer token (default: ${TOKEN_ENV})",
    )
    p.add_argument("--json", action="store_true", help="print /status' JSON as it came")
    p.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="print the table again every SECONDS until interrupted",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")


def _status(args: argparse.Namespace) -> int:
    import json
    import time
    import urllib.error
    import urllib.request

    from ._status_table import render

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    request = urllib.request.Request(args.url.rstrip("/") + "/status", headers=headers)
    while True:
        try:
            with urllib.request.urlopen(request, timeout=args.timeout) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            print(
                f"lbproxy status: {args.url} answered {e.code}: {e.read()[:300]!r}", file=sys.stderr
            )
            return 1
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            print(f"lbproxy status: cannot read {args.url}/status: {reason}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(body, indent=2))
        else:
            if args.watch:
                print("\x1b[H\x1b[2J", end="")  # clear the terminal, as watch(1) does
            print(render(body["message"]), end="", flush=True)
        if not args.watch:
            return 0
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0


def _setting(text: str) -> tuple[str, Any]:
    field, sep, value = text.partition("=")
    if not sep or not field:
        raise argparse.ArgumentTypeError(f"{text!r} is not FIELD=VALUE")
    import yaml

    try:
        return field.strip(), yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: VALUE is not valid YAML: {e}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lbproxy",
        description="A consistent-hashing HTTP load balancer that starts, probes and heals "
        "its own replicas.",
        epilog="With no command it runs the balancer: lbproxy [run] [-c/--config CONFIG] "
        "[--check] [--port PORT] [--replicas N] ... (see: lbproxy run --help).",
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,status,replica}")
    _run_parser(sub)
    _status_parser(sub)
    sub.add_parser(
        "replica", help="run one replica web server (see: lbproxy replica --help)", add_help=False
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The fields the command line (and LBPROXY_ADMIN_TOKEN) sets, as dotted names."""
    from ._config import TOKEN_ENV

    flags = {
        "replicas.backend": args.backend,
        "listen.host": args.host,
        "listen.port": args.port,
        "replicas.count": args.replicas,
        # From the environment, so the secret need not sit in config.yaml; empty is unset
        # (compose passes the variable through even when the host has none).
        "admin.token": os.environ.get(TOKEN_ENV) or _token_file(),
    }
    return {**dict(args.settings), **{k: v for k, v in flags.items() if v is not None}}


def _token_file() -> str | None:
    """The token from the file ``LBPROXY_ADMIN_TOKEN_FILE`` names (a Docker or Swarm secret,
    which unlike an environment variable does not show in `docker inspect`)."""
    from ._config import TOKEN_ENV

    path = os.environ.get(f"{TOKEN_ENV}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{TOKEN_ENV}_FILE: cannot read {path}: {e}") from None


def _load(args: argparse.Namespace, overrides: dict[str, Any]) -> Config:
    from ._config import Config, load_config, with_overrides

    config = load_config(args.config) if args.config.exists() else None
    if config is None:
        if args.config != Path("config.yaml"):
            raise ConfigError(f"{args.config}: no such file")
        config = Config()
    return with_overrides(config, **overrides) if overrides else config


async def _serve(config: Config, path: Path | None, overrides: dict[str, Any]) -> None:
    from ._server import Server

    server = Server(config, path, overrides)
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
        argv if argv and argv[0] in ("run", "status", "-h", "--help") else ["run", *argv]
    )
    if args.command == "status":
        return _status(args)
    logging.basicConfig(level=logging.INFO, format=TEXT_FORMAT)
    try:
        overrides = _overrides(args)
        config = _load(args, overrides)
    except ConfigError as e:
        print(f"lbproxy: invalid configuration: {e}", file=sys.stderr)
        return 2
    if args.check:
        print(config.model_dump_json(indent=2))  # admin.token shows as "**********"
        return 0
    try:
        configure_logging(config.log.format, config.log.file)
    except OSError as e:
        print(f"lbproxy: invalid configuration: log.file: {e}", file=sys.stderr)
        return 2
    raise_open_files_limit()
    try:
        run(_serve(config, args.config if args.config.exists() else None, overrides))
    except LbproxyError as e:
        print(f"lbproxy: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
