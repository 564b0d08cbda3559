"""Deploy lbproxy to the swarm this Docker engine belongs to (`make swarm-up`), or remove it
(`make swarm-down`).

``up``: the attachable overlay network, then the balancer as a global service (one per node)
publishing its port in host mode (``--publish-mode ingress``: a replicated service behind
Swarm's routing mesh instead, for kernels with IPVS; not tested here). The balancer creates
the replica service itself (replicas.backend swarm). Returns once the port answers with the
replica service's N. A stack that is up is left as it is (its balancer image is updated if
``make images`` built a new one). ``down``: both services, their tasks' containers and the
network, leaving nothing. See docs/swarm.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import wait_up  # noqa: E402

#: On everything this tool creates.
LABEL = "lbproxy.swarm"
SOCKET = "/var/run/docker.sock"


class Refused(Exception):
    """What cannot be done, said to the user."""


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise Refused(f"docker {' '.join(args[:3])} ...: {done.stderr.strip()}")
    return done.stdout.strip()


def swarm_state() -> tuple[str, bool]:
    """(this engine's swarm state, whether it is a manager)."""
    out = docker("info", "--format", "{{json .Swarm}}")
    swarm = json.loads(out or "{}")
    return swarm.get("LocalNodeState") or "inactive", bool(swarm.get("ControlAvailable"))


def require_manager() -> None:
    state, manager = swarm_state()
    if state != "active":
        raise Refused(
            f"this Docker engine is in no swarm (state {state!r}). Make it one first:\n"
            "    docker swarm init --advertise-addr 127.0.0.1\n"
            "(or join it to an existing swarm); see docs/swarm.md"
        )
    if not manager:
        raise Refused("this Docker engine is a swarm worker: run this on a manager node")


def exists(kind: str, name: str) -> bool:
    return subprocess.run(["docker", kind, "inspect", name], capture_output=True).returncode == 0


def image_id(image: str) -> str:
    """How the service names the image: its registry digest if it has one (pulled or pushed),
    else its local id, which no node tries to pull (as backends/_swarm.py does)."""
    pinned = "{{if .RepoDigests}}{{index .RepoDigests 0}}{{else}}{{.Id}}{{end}}"
    try:
        return docker("image", "inspect", "--format", pinned, image)
    except Refused:
        raise Refused(f"image {image} is missing: build it with `make images`") from None


def replica_count(args: argparse.Namespace) -> int:
    """N that the stack will have: the replica service's if it exists, else the config's."""
    if exists("service", args.service):
        out = docker(
            "service", "inspect", "--format", "{{.Spec.Mode.Replicated.Replicas}}", args.service
        )
        return int(out)
    sys.path.insert(0, str(REPO / "src"))
    from lbproxy._config import load_config

    config = Path(args.config_dir) / "config.yaml"
    return load_config(config).replicas.count if config.exists() else 3


def balancer_command(args: argparse.Namespace) -> list[str]:
    return [
        "run",
        "--config=/etc/lbproxy/config.yaml",
        "--backend=swarm",
        f"--set=replicas.swarm.service={args.service}",
        f"--set=replicas.swarm.network={args.network}",
        f"--set=replicas.swarm.image={args.server_image}",
        # The admin listener stays on the task's own loopback: host-mode publishing would
        # open it on every interface. `docker exec` reaches it (docs/swarm.md).
        "--set=admin.host=127.0.0.1",
    ]


def token_secret(args: argparse.Namespace) -> str:
    return f"{args.balancer}-admin-token"


def token_options(args: argparse.Namespace) -> list[str]:
    """With LBPROXY_ADMIN_TOKEN set, the token reaches the balancers as a Swarm secret (a file
    in each task; an environment variable would show in `docker service inspect`)."""
    token = os.environ.get("LBPROXY_ADMIN_TOKEN", "")
    if not token:
        return []
    secret = token_secret(args)
    if not exists("secret", secret):
        done = subprocess.run(
            ["docker", "secret", "create", "--label", f"{LABEL}=token", secret, "-"],
            input=token, capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise Refused(f"cannot create secret {secret}: {done.stderr.strip()}")
    target = "/run/secrets/lbproxy-admin-token"
    return [
        "--secret", f"source={secret},target=lbproxy-admin-token,mode=0400",
        "--env", f"LBPROXY_ADMIN_TOKEN_FILE={target}",
    ]  # fmt: skip


def up(args: argparse.Namespace) -> None:
    require_manager()
    if not exists("network", args.network):
        docker(
            "network", "create", "--driver", "overlay", "--attachable",
            "--label", f"{LABEL}=network", args.network,
        )  # fmt: skip
        print(f"swarm-up: created overlay network {args.network}")
    lb_image = image_id(args.lb_image)
    image_id(args.server_image)  # the balancer needs it too: say so now
    if exists("service", args.balancer):
        current = docker(
            "service",
            "inspect",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
            args.balancer,
        )
        if current != lb_image:
            print(f"swarm-up: rolling {args.balancer} onto the new {args.lb_image}")
            docker(
                "service",
                "update",
                "--detach",
                "--no-resolve-image",
                "--image",
                lb_image,
                args.balancer,
            )
    else:
        if args.publish_mode == "host":
            placement = ["--mode", "global", "--endpoint-mode", "dnsrr"]
            publish = f"mode=host,target=5000,published={args.port}"
        else:
            placement = ["--replicas", str(args.lb_replicas)]
            publish = f"mode=ingress,target=5000,published={args.port}"
        config_dir = str(Path(args.config_dir).resolve())
        docker(
            "service", "create", "--detach", "--no-resolve-image",
            "--name", args.balancer, "--label", f"{LABEL}=balancer",
            *placement, "--publish", publish, "--network", args.network,
            # The balancer's API calls need a manager (docs/swarm.md: placement).
            "--constraint", "node.role==manager",
            "--mount", f"type=bind,source={SOCKET},target={SOCKET}",
            # The folder (live reload follows an editor's replaced file); on every node.
            "--mount", f"type=bind,source={config_dir},target=/etc/lbproxy,readonly",
            *token_options(args),
            "--restart-condition", "any", "--restart-delay", "1s",
            "--stop-grace-period", "20s",
            "--init", lb_image, *balancer_command(args),
        )  # fmt: skip
        print(f"swarm-up: created the balancer service {args.balancer} ({args.publish_mode} mode)")
    n = replica_count(args)
    url = f"http://127.0.0.1:{args.port}"
    if wait_up.main(["--url", url, "--min-replicas", str(n), "--timeout", str(args.timeout)]):
        print(docker("service", "ps", "--no-trunc", args.balancer, args.service, check=False))
        raise Refused(f"the stack did not come up; `docker service logs {args.balancer}`")


def down(args: argparse.Namespace) -> None:
    state, manager = swarm_state()
    if state != "active" or not manager:
        print("swarm-down: this engine is not a swarm manager; nothing to remove")
        return
    services = [s for s in (args.balancer, args.service) if exists("service", s)]
    if services:
        docker("service", "rm", *services)
    # Their containers stop in the background; the network goes once none is attached.
    deadline = time.monotonic() + args.timeout
    while left := [
        c
        for s in (args.balancer, args.service)
        for c in docker("ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={s}").split()
    ]:
        if time.monotonic() > deadline:
            raise Refused(f"{len(left)} task container(s) still there after {args.timeout:.0f}s")
        time.sleep(0.2)
    if exists("secret", token_secret(args)):
        docker("secret", "rm", token_secret(args))
    while exists("network", args.network):
        done = subprocess.run(
            ["docker", "network", "rm", args.network], capture_output=True, text=True
        )
        if done.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise Refused(f"cannot remove network {args.network}: {done.stderr.strip()}")
        time.sleep(0.2)  # still in use by an endpoint being released
    print(f"swarm-down: removed {', '.join([*services, args.network])} (if there)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["check", "up", "down"])
    parser.add_argument("--balancer", default="lbproxy", help="the balancer's service")
    parser.add_argument("--service", default="lbproxy-replicas", help="the replicas' service")
    parser.add_argument("--network", default="lbproxy-overlay")
    parser.add_argument("--port", type=int, default=5000, help="published on every node")
    parser.add_argument("--config-dir", default=".", help="holds config.yaml (on every node)")
    parser.add_argument("--lb-image", default="lbproxy/lb:latest")
    parser.add_argument("--server-image", default="lbproxy/server:latest")
    parser.add_argument(
        "--publish-mode",
        choices=["host", "ingress"],
        default="host",
        help="host: a global balancer, its port on each node (tested); ingress: replicated "
        "behind the routing mesh, which needs IPVS in the kernel (not tested here)",
    )
    parser.add_argument("--lb-replicas", type=int, default=2, help="balancers (ingress mode)")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    try:
        {"check": lambda _: require_manager(), "up": up, "down": down}[args.command](args)
    except Refused as e:
        print(f"swarm-{args.command}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
