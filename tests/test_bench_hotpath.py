"""``python -m bench.hotpath``: the in-memory hot path answers every request it sends."""

from __future__ import annotations

from bench.hotpath import measure


async def test_the_hot_path_harness_answers_every_request() -> None:
    per_request = await measure(requests=300, runs=2)
    assert 0 < per_request < 0.01  # seconds: it ran, and nothing waited on a timer
