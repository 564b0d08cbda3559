"""tools/images.py's pure parts: reading the host's apt sources, the wheel platform tags."""

from __future__ import annotations

from conftest import load_tool

images = load_tool("images")

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
"""

ONE_LINE = """\
# a comment
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://one.example/ubuntu jammy main
deb http://two.example/ubuntu jammy-security main # trailing comment
"""


def test_deb822_sources() -> None:
    sources = images.parse_apt_sources(DEB822, deb822=True)
    assert [(s.uri, s.suites) for s in sources] == [
        ("http://mirror.example/debian", ("bookworm", "bookworm-updates")),
        ("http://mirror.example/debian-security", ("bookworm-security",)),
    ]
    assert images.pick_mirror(sources, "bookworm") == "http://mirror.example/debian"
    assert images.pick_mirror(sources, "trixie") is None


def test_one_line_sources() -> None:
    sources = images.parse_apt_sources(ONE_LINE, deb822=False)
    assert [(s.uri, s.suites) for s in sources] == [
        ("http://one.example/ubuntu", ("jammy",)),
        ("http://two.example/ubuntu", ("jammy-security",)),
    ]
    assert images.pick_mirror(sources, "jammy") == "http://one.example/ubuntu"


def test_os_release() -> None:
    info = images.os_release(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n'
    )
    assert info["ID"] == "debian"
    assert info["VERSION_CODENAME"] == "bookworm"


def test_wheel_platforms_cover_older_glibc_tags() -> None:
    tags = images.wheel_platforms("x86_64", (2, 36))
    assert tags[0] == "manylinux_2_36_x86_64"
    assert "manylinux_2_17_x86_64" in tags
    assert "manylinux_2_16_x86_64" not in tags  # below 2_17 only the legacy names exist
    assert {"manylinux2014_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert tags[-1] == "linux_x86_64"
    old = images.wheel_platforms("aarch64", (2, 12))
    assert "manylinux2014_aarch64" not in old  # needs glibc 2.17
    assert "manylinux2010_aarch64" in old
