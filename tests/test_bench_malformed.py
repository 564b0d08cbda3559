"""bench/malformed.py, bounded: a real balancer process answers every malformed body with a
400 at once and keeps no descriptor for it (issue 10 found one CLOSE_WAIT socket each)."""

from __future__ import annotations

from pathlib import Path

from bench.malformed import MALFORMED, measure


async def test_malformed_bodies_are_answered_and_leave_no_descriptor(tmp_path: Path) -> None:
    result = await measure(requests=300, concurrency=50, wait=3.0, workdir=tmp_path)
    assert result.outcomes == {"HTTP/1.1 400 Bad Request": 300}, result.outcomes
    # A few descriptors may come and go (a heartbeat's connection), never one per request.
    assert result.fds_after <= result.fds_before + 3, (result.fds_before, result.fds_after)
    assert len(MALFORMED) >= 5
