"""tools/replica_cost.py: what one replica process costs, measured on this checkout."""

from __future__ import annotations

import pytest

from conftest import REPO, load_tool

cost = load_tool("replica_cost")


def test_the_import_time_is_read_from_importtime_output() -> None:
    out = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       120 |        120 |   lbproxy._runtime\n"
        "import time:      2100 |     478078 | lbproxy.replica\n"
    )
    assert cost.replica_import_ms(out) == 478.078
    with pytest.raises(ValueError, match=r"lbproxy\.replica"):
        cost.replica_import_ms("import time:  1 |  1 | lbproxy._runtime\n")


def test_a_replica_is_measured_serving() -> None:
    figures = cost.Figures("here", REPO / "src")
    cost.measure([figures], runs=1, requests=1)
    assert len(figures.import_ms) == 1 and figures.import_ms[0] > 0
    assert figures.wall_ms[0] > 0
    assert len(figures.rss_mib) == 3 and all(5 < r < 500 for r in figures.rss_mib)
    # The replica loads aiohttp's server and none of the balancer's libraries.
    assert figures.modules.endswith("['aiohttp']"), figures.modules
    assert "here: import lbproxy.replica" in figures.line()
