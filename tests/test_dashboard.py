"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by
Selenium through Debian's ``chromium-driver``, against a real balancer process.

Where Chromium or its driver is missing (``make test`` installs them when it runs as root),
the browser tests skip and say so. Set LBPROXY_DASHBOARD_SCREENSHOT to keep the screenshot
(docs/dashboard.png was taken so); else it goes to the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PY, free_port, wait_for_port

TOKEN = "d" * 32
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None or DRIVER is None:
        reason = (
            "no headless Chromium here: install Debian's chromium and chromium-driver "
            "(make test does so when run as root)"
        )
        print(f"SKIPPED: {reason}", file=sys.stderr)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # as root (CI, containers) Chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1500,1100",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def until(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def table(driver: Any) -> list[dict[str, str]]:
    """The replica table as the page shows it."""
    return driver.execute_script(
        """return [...document.querySelectorAll('#replicas tbody tr')].map(tr => ({
             hostname: tr.querySelector('.hostname').textContent,
             slot: tr.querySelector('.slot').textContent,
             state: tr.querySelector('.state').textContent}));"""
    )


def ring_colours(driver: Any) -> dict[str, set[str]]:
    """Computed fill colours of the ring's arcs, by the hostname each is drawn for."""
    pairs = driver.execute_script(
        """return [...document.querySelectorAll('#ring path.arc')].map(
             p => [p.dataset.hostname, getComputedStyle(p).fill]);"""
    )
    out: dict[str, set[str]] = {}
    for name, fill in pairs:
        out.setdefault(name, set()).add(fill)
    return out


def legend(driver: Any) -> dict[str, str]:
    """Hostname -> swatch colour, as the legend beside the ring shows them."""
    pairs = driver.execute_script(
        """return [...document.querySelectorAll('#legend li')].map(li => [
             li.querySelector('.name').textContent,
             getComputedStyle(li.querySelector('.swatch')).backgroundColor]);"""
    )
    return dict(pairs)


def screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    wanted = os.environ.get("LBPROXY_DASHBOARD_SCREENSHOT")
    path = Path(wanted) if wanted else tmp_path / name
    driver.save_screenshot(str(path))
    print(f"dashboard screenshot: {path}")
    return path


def load(port: int, n: int = 200) -> None:
    for i in range(n):
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/home", headers={"X-Request-Id": f"user-{i}"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()


def test_page_shows_every_replica_and_one_colour_per_replica(balancer_process, browser, tmp_path):
    admin = free_port()
    bp = balancer_process({"replicas": {"count": 4}, "admin": {"port": admin}})
    load(bp.port)
    browser.get(f"http://127.0.0.1:{admin}/")
    names = {f"server-{i}" for i in range(1, 5)}
    until(
        lambda: {r["hostname"] for r in table(browser) if r["state"] == "up"} == names,
        what="the four replicas up in the table",
    )
    assert [r["slot"] for r in table(browser)] == ["1", "2", "3", "4"]
    colours = until(lambda: ring_colours(browser), what="the ring drawn")
    # Each replica's arcs are of one colour, and no two replicas share one.
    assert set(colours) == names
    assert all(len(c) == 1 for c in colours.values())
    assert len({next(iter(c)) for c in colours.values()}) == 4
    # The hostnames are text in the page, each beside its own colour.
    shown = legend(browser)
    assert set(shown) == names
    assert all(shown[n] == next(iter(colours[n])) for n in names)
    # Live: the page reads /status every second.
    assert browser.find_element("id", "live").text == "live"
    until(
        lambda: browser.find_elements("css selector", "#chart path[data-slot]"),
        what="requests/s drawn",
    )
    screenshot(browser, tmp_path, "dashboard-4.png")


def test_killing_a_replica_shows_within_seconds(balancer_process, browser, tmp_path):
    admin = free_port()
    bp = balancer_process({"replicas": {"count": 4}, "admin": {"port": admin, "token": TOKEN}})
    browser.get(f"http://127.0.0.1:{admin}/")
    until(lambda: len([r for r in table(browser) if r["state"] == "up"]) == 4, what="4 up")
    load(bp.port, 100)

    def kill_button() -> Any:
        return browser.find_element(
            "css selector", '#replicas tr[data-hostname="server-2"] button.kill'
        )

    # Without the token the balancer refuses, and the page says so.
    kill_button().click()
    until(lambda: "401" in browser.find_element("id", "notice").text, what="the 401 shown")
    assert any(r["hostname"] == "server-2" for r in table(browser))

    browser.find_element("id", "token").send_keys(TOKEN)
    clicked = time.monotonic()
    kill_button().click()
    until(
        lambda: browser.find_elements(
            "css selector", '#timeline li[data-kind="died"][data-replica="server-2"]'
        ),
        timeout=10,
        what="the death in the timeline",
    )
    shown_in = time.monotonic() - clicked
    # Replaced in the same slot under a new name, up again.
    until(
        lambda: any(
            r["slot"] == "2" and r["hostname"] != "server-2" and r["state"] == "up"
            for r in table(browser)
        ),
        timeout=20,
        what="the replacement up in slot 2",
    )
    assert "server-2" not in {r["hostname"] for r in table(browser)}
    kinds = browser.execute_script(
        "return [...document.querySelectorAll('#timeline li')].map(li => li.dataset.kind);"
    )
    assert {"killed", "died", "replaced", "up"} <= set(kinds)
    load(bp.port, 100)
    until(
        lambda: len(ring_colours(browser)) == 4 and len(legend(browser)) == 4, what="ring redrawn"
    )
    time.sleep(1.5)  # one more poll, so the screenshot has the last requests/s
    screenshot(browser, tmp_path, "dashboard-kill.png")
    print(f"the death showed {shown_in:.1f}s after the click")
    assert shown_in < 10


@pytest.fixture
def one_replica() -> Iterator[int]:
    """One real replica server process (``lbproxy replica``) that 32 static entries share."""
    port = free_port()
    proc = subprocess.Popen(
        [PY, "-m", "lbproxy", "replica"],
        env={**os.environ, "PORT": str(port), "SERVER_ID": "shared"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_readable_with_32_replicas(balancer_process, browser, one_replica):
    admin = free_port()
    names = [f"node-{i:02d}" for i in range(1, 33)]
    balancer_process(
        {
            "replicas": {
                "backend": "static",
                "static": [{"hostname": n, "address": f"127.0.0.1:{one_replica}"} for n in names],
            },
            "admin": {"port": admin},
        }
    )
    browser.get(f"http://127.0.0.1:{admin}/")
    until(
        lambda: len([r for r in table(browser) if r["state"] == "up"]) == 32,
        timeout=20,
        what="32 up",
    )
    assert [r["hostname"] for r in table(browser)] == names
    colours = until(lambda: len(ring_colours(browser)) == 32 and ring_colours(browser))
    assert len({next(iter(c)) for c in colours.values()}) == 32
    assert set(legend(browser)) == set(names)
    # Readable: every row on one line, the table within its box, every name shown whole.
    layout = browser.execute_script(
        """const rows = [...document.querySelectorAll('#replicas tbody tr')];
           const box = document.getElementById('table-section');
           return {heights: rows.map(r => r.getBoundingClientRect().height),
                   overflow: box.scrollWidth - box.clientWidth,
                   clipped: [...document.querySelectorAll('#legend .name')]
                     .filter(n => n.scrollWidth > n.clientWidth + 1).length};"""
    )
    assert max(layout["heights"]) - min(layout["heights"]) < 1
    assert max(layout["heights"]) < 30
    assert layout["overflow"] <= 0
    assert layout["clipped"] == 0
