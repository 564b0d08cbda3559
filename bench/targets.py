"""The things wrk drives: the replicas directly, HAProxy, NGINX and lbproxy in front of them."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from .procs import BenchError, Processes, free_port, listening_socket, wait_listening

TEMPLATES = Path(__file__).with_name("templates")
BALANCERS = ("haproxy", "nginx", "lbproxy")
#: lbproxy with what observing costs switched: metrics off (``metrics.enabled: false``), and
#: metrics on with the access log on (``log.access: true``, text, to a file in the workdir).
#: ``lbproxy`` itself runs with the defaults: metrics on, access log off.
VARIANTS = ("lbproxy-nometrics", "lbproxy-access")
#: Every core of a 2-core machine: HAProxy with ``nbthread 2`` against lbproxy with
#: ``workers: 2`` (compared with each other, not with the single-threaded ones).
TWO_CORES = ("haproxy-2t", "lbproxy-2w")
ALL = ("direct", *BALANCERS, *VARIANTS, *TWO_CORES)
#: The program each target runs, where it is one to install.
PROGRAM = {"haproxy": "haproxy", "nginx": "nginx", "haproxy-2t": "haproxy"}
#: What each target's requests/s and CPU are compared with.
REFERENCE = {t: "haproxy-2t" for t in TWO_CORES}
#: ``--observability``: the three, driven in turn each round.
OBSERVABILITY = ("lbproxy-nometrics", "lbproxy", "lbproxy-access")
STARTUP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Target:
    name: str
    urls: tuple[str, ...]  # more than one: driven at once, one wrk process each
    pid: int | None  # the balancer's process (its children count too); None: no balancer


def render(template: str, **values: str | int) -> str:
    return Template((TEMPLATES / template).read_text()).substitute(values)


def reference(target: str) -> str:
    return REFERENCE.get(target, "haproxy")


def haproxy_config(port: int, replicas: Sequence[tuple[str, str]], threads: int = 1) -> str:
    servers = "\n".join(f"    server {name} {address} check inter 2s" for name, address in replicas)
    return render("haproxy.cfg", port=port, servers=servers, threads=threads)


def nginx_config(port: int, replicas: Sequence[tuple[str, str]], prefix: Path) -> str:
    servers = "\n".join(f"        server {address};" for _, address in replicas)
    return render("nginx.conf", port=port, servers=servers, prefix=str(prefix))


def lbproxy_config(
    port: int, replicas: Sequence[tuple[str, str]], variant: str = "lbproxy", workdir: Path = Path()
) -> str:
    servers = "\n".join(
        f'    - {{hostname: {name}, address: "{address}"}}' for name, address in replicas
    )
    text = render("lbproxy.yaml", port=port, servers=servers)
    if variant == "lbproxy-nometrics":
        text += "metrics:\n  enabled: false\n"
    elif variant == "lbproxy-access":
        text += f'log:\n  access: true\n  file: "{workdir / (variant + ".log")}"\n'
    elif variant == "lbproxy-2w":
        text += "workers: 2\n"
    return text


def start_replicas(procs: Processes, count: int) -> list[tuple[str, str]]:
    """``count`` lbproxy replica servers, each on a loopback socket handed to it."""
    out = []
    for i in range(1, count + 1):
        name = f"replica-{i}"
        sock = listening_socket()
        fd = sock.fileno()
        proc = procs.start(
            name,
            [sys.executable, "-m", "lbproxy.replica", "--id", name, "--fd", str(fd)],
            pass_fds=(fd,),
            env=dict(os.environ, LBPROXY_PARENT_PID=str(os.getpid())),
        )
        port = sock.getsockname()[1]
        sock.close()  # the replica has its own copy
        wait_listening(port, proc, STARTUP_TIMEOUT, path="/heartbeat")
        out.append((name, f"127.0.0.1:{port}"))
    return out


def start_upstream(procs: Processes, name: str) -> str:
    """The memory bench's upstream (``bench.upstream``), as ``host:port``."""
    sock = listening_socket()
    fd = sock.fileno()
    proc = procs.start(name, [sys.executable, "-m", "bench.upstream", str(fd)], pass_fds=(fd,))
    port = sock.getsockname()[1]
    sock.close()
    wait_listening(port, proc, STARTUP_TIMEOUT, path="/heartbeat")
    return f"127.0.0.1:{port}"


def start_balancer(
    name: str,
    procs: Processes,
    replicas: Sequence[tuple[str, str]],
    workdir: Path,
    tools: dict[str, str],
    label: str | None = None,
) -> Target:
    """One balancer in front of ``replicas``, listening on an ephemeral loopback port."""
    label = label or name
    port = free_port()
    if name in ("haproxy", "haproxy-2t"):
        path = workdir / f"{label}.cfg"
        path.write_text(haproxy_config(port, replicas, 2 if name == "haproxy-2t" else 1))
        argv = [tools["haproxy"], "-f", str(path), "-db"]
    elif name == "nginx":
        prefix = workdir / label
        prefix.mkdir(exist_ok=True)
        path = prefix / "nginx.conf"
        path.write_text(nginx_config(port, replicas, prefix))
        argv = [tools["nginx"], "-p", str(prefix), "-c", str(path)]
    elif name in ("lbproxy", "lbproxy-2w") or name in VARIANTS:
        path = workdir / f"{label}.yaml"
        path.write_text(lbproxy_config(port, replicas, name, workdir))
        argv = [sys.executable, "-m", "lbproxy", "run", "-c", str(path)]
    else:
        raise ValueError(name)
    proc = procs.start(label, argv)
    try:
        wait_listening(port, proc, STARTUP_TIMEOUT)
    except BenchError as e:
        raise BenchError(f"{e}\n{procs.log_tail(label)}") from None
    return Target(name, (f"http://127.0.0.1:{port}/home",), proc.pid)


def direct(replicas: Sequence[tuple[str, str]]) -> Target:
    return Target("direct", tuple(f"http://{address}/home" for _, address in replicas), None)
