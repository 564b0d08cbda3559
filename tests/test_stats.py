"""The data path's counters: adding up several processes' (``workers: N``)."""

from __future__ import annotations

from lbproxy._stats import OWN, Stats, summed


def test_summed_adds_every_counter_and_leaves_the_parts_alone() -> None:
    a, b = Stats(), Stats()
    a.answered("server-1", 200, 0.0004)
    a.answered("server-1", 503, 0.2)
    a.of("server-1").retries = 2
    b.answered("server-1", 200, 0.003)
    b.answered("server-2", 200, 0.003)
    b.of("server-2").connect_errors = 1
    b.own(400)
    total = summed(a.replicas, b.replicas)
    one = total["server-1"]
    assert one.codes == {200: 2, 503: 1}
    assert one.retries == 2
    assert one.durations.cumulative()[0] == ("0.0005", 1)
    assert one.durations.cumulative()[-1] == ("+Inf", 3)
    assert abs(one.durations.sum - 0.2034) < 1e-9
    assert total["server-2"].connect_errors == 1
    assert total[OWN].codes == {400: 1}
    # The parts are unchanged: the sums are new objects.
    assert a.replicas["server-1"].codes == {200: 1, 503: 1}
    assert summed(total, {})["server-1"] is not one
