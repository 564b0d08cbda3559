"""The admin listener's pages: the dashboard's files, shipped in the package, and how they
are served (no browser needed here; tests/test_dashboard.py drives one)."""

from __future__ import annotations

import re

from conftest import admin_url, url
from lbproxy._admin_pages import ASSETS, load_assets


def test_the_dashboard_ships_in_the_package_and_fetches_nothing_from_elsewhere():
    assets = load_assets()
    assert set(assets) == set(ASSETS)
    for body, _ in assets.values():
        text = body.decode()
        # No CDN, no remote font: every URL the page uses is its own listener's.
        assert not re.search(r"(?:src|href)=[\"']?(?:https?:)?//", text)
        assert "@import" not in text and "url(http" not in text
    page = assets["/"][0].decode()
    assert 'src="/dashboard.js"' in page and 'href="/dashboard.css"' in page


async def test_pages_are_served_on_the_admin_listener_only(balancer, http):
    server = await balancer({"replicas": {"count": 1}})
    for path, (_, kind) in ASSETS.items():
        async with http.get(admin_url(server, path)) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == kind
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            body = await r.read()
            assert len(body) == int(r.headers["Content-Length"]) > 100
        async with http.head(admin_url(server, path)) as r:
            assert r.status == 200 and int(r.headers["Content-Length"]) == len(body)
            assert await r.read() == b""
    async with http.post(admin_url(server, "/")) as r:
        assert r.status == 405 and r.headers["Allow"] == "GET"
    # On the balancer's port these are paths like any other: the replicas' (here: 400).
    async with http.get(url(server, "/dashboard.js")) as r:
        assert r.status == 400
