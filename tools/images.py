"""Build lbproxy's two Docker images (balancer and replica) without a container registry.

Run by ``make images`` (and so by ``make up`` and the Docker tests). Steps, each skipped when
its result is already there:

1. A base image with Python: ``--base``/``$LBPROXY_BASE_IMAGE`` if given; else the official
   ``python:3.11-slim`` if present or pullable; else one built offline: debootstrap a minimal
   Debian (or Ubuntu) with Python from the mirror in the host's own apt sources into a folder
   and ``docker import`` it.
2. Wheels for the base image's Python and CPU, built and downloaded on the host: lbproxy's own
   and every dependency (binary wheels from the host's pip configuration). lbproxy's has its
   hot path compiled (setup.py) when the host's Python is the image's version and its C
   library no newer than the image's; else it is pure Python, and the log says why.
3. ``docker build`` of Dockerfile.lb and Dockerfile.server with BASE_IMAGE set, by the classic
   builder of the engine itself: no buildx container, no ``# syntax=`` line, nothing pulled.

Standard library only: it runs before any virtual environment exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / "build" / "wheels"
OFFICIAL_BASE = "python:3.11-slim"
LB_IMAGE = "lbproxy/lb:latest"
SERVER_IMAGE = "lbproxy/server:latest"
#: What the offline base image gets from the distribution: Python, and venv for pip.
BASE_PACKAGES = ("python3", "python3-venv")
#: Image label holding the hash of what an image was built from, so an unchanged build is
#: skipped without even asking the builder.
BUILD_LABEL = "lbproxy.build"
PULL_TIMEOUT = 180


class ImagesError(Exception):
    """A step cannot be done; the message says what to do."""


def log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


# -- pure parts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]


def parse_apt_sources(text: str, deb822: bool) -> list[AptSource]:
    """The binary ("deb") sources in one apt sources file, one-line or deb822 format."""
    out: list[AptSource] = []
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            if "deb" not in fields.get("types", "").split():
                continue
            suites = tuple(fields.get("suites", "").split())
            out.extend(AptSource(uri, suites) for uri in fields.get("uris", "").split())
        return out
    for line in text.splitlines():
        # "deb [arch=amd64 signed-by=...] URI SUITE COMPONENTS...": options dropped.
        words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            out.append(AptSource(words[1], (words[2],)))
    return out


def pick_mirror(sources: Iterable[AptSource], suite: str) -> str | None:
    """The archive that serves ``suite`` itself (not its -security or -updates pockets)."""
    for source in sources:
        if suite in source.suites and source.uri.startswith(("http://", "https://", "file:")):
            return source.uri
    return None


def os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


def wheel_platforms(machine: str, glibc: tuple[int, int]) -> list[str]:
    """pip ``--platform`` tags a glibc ``glibc`` system on ``machine`` accepts, newest first."""
    major, minor = glibc
    tags = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 16, -1)]
    legacy = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}
    tags += [f"{name}_{machine}" for name, need in legacy.items() if glibc >= need]
    return [*tags, f"linux_{machine}"]


def tree_digest(paths: Iterable[Path]) -> str:
    """A hash of files' names and contents."""
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(path.name.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


# -- running things --------------------------------------------------------------------------


def run(
    cmd: Sequence[str],
    *,
    capture: bool = False,
    quiet: bool = False,
    timeout: float | None = None,
    **kw: object,
) -> str:
    """Run ``cmd``; ``capture`` returns its output, ``quiet`` shows it only if it fails."""
    if capture or quiet:
        kw["stdout"] = subprocess.PIPE
    if quiet:
        kw["stderr"] = subprocess.STDOUT
    try:
        done = subprocess.run(list(cmd), check=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    except FileNotFoundError:
        raise ImagesError(f"{cmd[0]} is not installed") from None
    except subprocess.CalledProcessError as e:
        if quiet and e.stdout:
            sys.stderr.write(e.stdout)
        raise ImagesError(f"`{' '.join(cmd)}` failed with status {e.returncode}") from None
    except subprocess.TimeoutExpired:
        raise ImagesError(f"`{' '.join(cmd)}` did not finish in {timeout:.0f}s") from None
    return done.stdout.strip() if capture else ""


def image_exists(image: str) -> bool:
    probe = subprocess.run(
        ["docker", "image", "inspect", image], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return probe.returncode == 0


def image_label(image: str, label: str) -> str | None:
    try:
        out = run(
            ["docker", "image", "inspect", "-f", "{{json .Config.Labels}}", image],
            capture=True,
            stderr=subprocess.DEVNULL,
        )
    except ImagesError:
        return None
    labels = json.loads(out) or {}
    return labels.get(label)


def as_root(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return cmd
    if shutil.which("sudo"):
        return ["sudo", *cmd]
    raise ImagesError(f"`{' '.join(cmd)}` needs root, and sudo is not installed")


# -- step 1: the base image ------------------------------------------------------------------


def host_suite() -> tuple[str, str]:
    """(distribution id, release codename) of this host, from /etc/os-release."""
    info = os_release(Path("/etc/os-release").read_text())
    suite = info.get("VERSION_CODENAME") or ""
    if not suite:
        raise ImagesError("/etc/os-release names no VERSION_CODENAME to bootstrap")
    return info.get("ID", "debian"), suite


def host_mirror(suite: str) -> str:
    """The mirror the host's own apt uses for ``suite``."""
    sources: list[AptSource] = []
    main = Path("/etc/apt/sources.list")
    if main.exists():
        sources += parse_apt_sources(main.read_text(), deb822=False)
    parts = Path("/etc/apt/sources.list.d")
    if parts.is_dir():
        for f in sorted(parts.iterdir()):
            if f.suffix in (".list", ".sources"):
                sources += parse_apt_sources(f.read_text(), deb822=f.suffix == ".sources")
    mirror = pick_mirror(sources, suite)
    if mirror is None:
        raise ImagesError(f"no apt source of this host serves {suite!r}: cannot debootstrap")
    return mirror


def build_offline_base(tag: str) -> None:
    distro, suite = host_suite()
    mirror = host_mirror(suite)
    if not shutil.which("debootstrap"):
        log("installing debootstrap from the host's apt sources")
        run(as_root(["apt-get", "install", "-y", "-q", "debootstrap"]))
    log(f"bootstrapping a minimal {distro} {suite} with Python (a minute or two, once)")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="lbproxy-rootfs-", dir=ROOT / "build"))
    rootfs = work / "rootfs"
    try:
        run(
            as_root(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    suite,
                    str(rootfs),
                    mirror,
                ]
            ),
            stdout=subprocess.DEVNULL,
        )
        # Docs, locales and apt's lists are half the tree and no use to a replica.
        # Docs, locales, apt's lists and the downloaded packages are half the tree and no
        # use to a replica.
        junk = (
            "usr/share/doc",
            "usr/share/man",
            "usr/share/locale",
            "var/lib/apt/lists",
            "var/cache/apt",
        )
        run(as_root(["rm", "-rf", *(str(rootfs / j) for j in junk)]))
        run(
            as_root(
                [
                    "mkdir",
                    "-p",
                    str(rootfs / "var/lib/apt/lists/partial"),
                    str(rootfs / "var/cache/apt/archives/partial"),
                ]
            )
        )
        tar = subprocess.Popen(
            as_root(["tar", "-C", str(rootfs), "-c", "."]), stdout=subprocess.PIPE
        )
        run(
            [
                "docker",
                "import",
                "--change",
                'CMD ["python3"]',
                "--message",
                f"lbproxy offline base: {distro} {suite} minbase + {' '.join(BASE_PACKAGES)}",
                "-",
                tag,
            ],
            stdin=tar.stdout,
            stdout=subprocess.DEVNULL,
        )
        if tar.wait() != 0:
            raise ImagesError("packing the bootstrapped tree failed")
    finally:
        subprocess.run(as_root(["rm", "-rf", str(work)]), check=False)
    log(f"built {tag} in {time.monotonic() - started:.0f}s")


def choose_base(requested: str | None) -> str:
    if requested:
        if not image_exists(requested):
            log(f"pulling {requested}")
            run(["docker", "pull", requested], timeout=PULL_TIMEOUT)
        return requested
    if image_exists(OFFICIAL_BASE):
        return OFFICIAL_BASE
    _, suite = host_suite()
    offline = f"lbproxy/base:{suite}"
    if image_exists(offline):
        return offline
    pulled = subprocess.run(
        ["docker", "pull", "-q", OFFICIAL_BASE],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=PULL_TIMEOUT,
    )
    if pulled.returncode == 0:
        return OFFICIAL_BASE
    log(f"{OFFICIAL_BASE} cannot be pulled here; building {offline} offline instead")
    build_offline_base(offline)
    return offline


# -- step 2: wheels --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a wheel must fit: the base image's Python and platform."""

    python: str  # "3.11"
    abi: str  # "cp311"
    machine: str  # "x86_64"
    glibc: tuple[int, int]


def probe_target(base: str) -> Target:
    script = (
        "import json, platform, sys; "
        "print(json.dumps([f'{sys.version_info[0]}.{sys.version_info[1]}', "
        "platform.machine(), platform.libc_ver()[1]]))"
    )
    out = run(
        ["docker", "run", "--rm", "--network", "none", base, "python3", "-c", script], capture=True
    )
    version, machine, libc = json.loads(out.splitlines()[-1])
    major, minor = (int(x) for x in libc.split(".")[:2])
    return Target(version, "cp" + version.replace(".", ""), machine, (major, minor))


def sources_digest() -> str:
    files = [ROOT / "pyproject.toml", ROOT / "setup.py", *sorted((ROOT / "src").rglob("*.py"))]
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def why_not_compiled(target: Target) -> str | None:
    """Why lbproxy's wheel for ``target`` cannot have its modules compiled here, or None:
    they are compiled for (and against the C library of) the Python that builds the wheel."""
    if os.environ.get("LBPROXY_NO_COMPILE", "") not in ("", "0"):
        return "LBPROXY_NO_COMPILE is set"
    host = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if host != target.python:
        return f"the host's Python is {host}, the image's {target.python}"
    libc, version = platform.libc_ver()
    if libc != "glibc" or tuple(int(x) for x in version.split(".")[:2]) > target.glibc:
        wanted = ".".join(map(str, target.glibc))
        return f"the host's C library ({libc} {version}) is newer than the image's (glibc {wanted})"
    if platform.machine() != target.machine:
        return f"the host is {platform.machine()}, the image {target.machine}"
    return None


def build_wheels(target: Target) -> None:
    """lbproxy's wheel in build/wheels/app, its dependencies' in build/wheels/deps."""
    stamp = WHEELS / "stamp.json"
    why_not = why_not_compiled(target)
    want = {
        "target": target.__dict__ | {"glibc": list(target.glibc)},
        "src": sources_digest(),
        "pure": why_not,
    }
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return
    log(f"building wheels for Python {target.python} on {target.machine}")
    app, deps = WHEELS / "app", WHEELS / "deps"
    shutil.rmtree(WHEELS, ignore_errors=True)
    app.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    env = dict(os.environ)
    if why_not is not None:
        log(f"lbproxy's wheel is pure Python: {why_not}")
        env["LBPROXY_NO_COMPILE"] = "1"
    run([*pip, "wheel", "--no-deps", "-w", str(app), str(ROOT)], quiet=True, env=env)
    (wheel,) = app.glob("lbproxy-*.whl")
    platforms = [
        f for p in wheel_platforms(target.machine, target.glibc) for f in ("--platform", p)
    ]
    run(
        [
            *pip,
            "download",
            "--only-binary=:all:",
            "--python-version",
            target.python,
            "--implementation",
            "cp",
            "--abi",
            target.abi,
            "--abi",
            "abi3",
            "--abi",
            "none",
            *platforms,
            "-d",
            str(deps),
            str(wheel),
        ]
    )
    for own in deps.glob("lbproxy-*.whl"):
        own.unlink()
    stamp.write_text(json.dumps(want))


# -- step 3: the images ----------------------------------------------------------------------


def build_image(tag: str, dockerfile: str, base: str) -> None:
    base_id = run(["docker", "image", "inspect", "-f", "{{.Id}}", base], capture=True)
    digest = tree_digest([ROOT / dockerfile, *WHEELS.rglob("*.whl")]) + "-" + base_id[-12:]
    if image_label(tag, BUILD_LABEL) == digest:
        log(f"{tag} is up to date")
        return
    log(f"building {tag} from {dockerfile} on {base}")
    # The engine's classic builder: it never pulls a FROM image that is present locally.
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    run(
        [
            "docker",
            "build",
            "-q",
            "-f",
            str(ROOT / dockerfile),
            "--build-arg",
            f"BASE_IMAGE={base}",
            "--label",
            f"{BUILD_LABEL}={digest}",
            "-t",
            tag,
            str(ROOT),
        ],
        env=env,
        quiet=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base",
        default=os.environ.get("LBPROXY_BASE_IMAGE") or None,
        help=f"base image with python3 (default: {OFFICIAL_BASE} if present or pullable, "
        "else one bootstrapped offline from the host's apt sources)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if shutil.which("docker") is None:
            raise ImagesError("the docker command is not installed")
        (ROOT / "build").mkdir(exist_ok=True)
        base = choose_base(args.base)
        build_wheels(probe_target(base))
        build_image(SERVER_IMAGE, "Dockerfile.server", base)
        build_image(LB_IMAGE, "Dockerfile.lb", base)
    except ImagesError as e:
        log(f"error: {e}")
        return 1
    log(f"images ready ({LB_IMAGE}, {SERVER_IMAGE}) in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
