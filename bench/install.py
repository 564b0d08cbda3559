"""Finding wrk, HAProxy and NGINX, and installing Debian's packages of them when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

#: Tool -> the Debian package that ships it.
PACKAGES = {"wrk": "wrk", "haproxy": "haproxy", "nginx": "nginx"}
_SBIN = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))
APT_TIMEOUT = 900


def which(tool: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + _SBIN
    return shutil.which(tool, path=path)


def _apt_prefix() -> list[str] | None:
    """How to run apt-get as root here: directly, through passwordless sudo, or not at all."""
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if sudo and subprocess.run([sudo, "-n", "true"], capture_output=True).returncode == 0:
        return [sudo, "-n"]
    return None


def ensure(tools: list[str]) -> dict[str, str]:
    """Paths of ``tools``, installing missing ones with apt-get; a missing one is left out."""
    missing = [t for t in tools if which(t) is None]
    if missing:
        packages = sorted({PACKAGES[t] for t in missing})
        prefix = _apt_prefix()
        if prefix is None:
            print(
                f"bench: missing {', '.join(missing)}; cannot run apt-get as root here.\n"
                f"bench: install them with:  sudo apt-get install {' '.join(packages)}\n"
                "bench: running what can run without them.",
                file=sys.stderr,
            )
        else:
            print(f"bench: installing {' '.join(packages)} from Debian's packages", flush=True)
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            apt = [*prefix, "apt-get", "-q", "-y"]
            try:
                subprocess.run([*apt, "update"], env=env, timeout=APT_TIMEOUT, check=False)
                subprocess.run(
                    [*apt, "install", "--no-install-recommends", *packages],
                    env=env,
                    timeout=APT_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                print("bench: apt-get took too long; giving up on it", file=sys.stderr)
    found = {t: p for t in tools if (p := which(t)) is not None}
    for t in tools:
        if t not in found:
            print(f"bench: {t} is not available (Debian package {PACKAGES[t]!r})", file=sys.stderr)
    return found
