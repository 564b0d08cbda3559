"""The bench's reading of wrk: its result line, percentiles, and merging simultaneous runs."""

from __future__ import annotations

import pytest

from bench.procs import BenchError
from bench.wrk import Load, command, merge, parse, quantile, split_connections

# wrk 4.1's own report followed by keys.lua's line (quantile grid shortened).
OUTPUT = """\
Running 1s test @ http://127.0.0.1:18765/home
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.97ms  753.84us   9.02ms   92.89%
    Req/Sec     9.04k     1.70k   12.62k    72.73%
  19798 requests in 1.10s, 4.12MB read
Requests/sec:  17948.77
Transfer/sec:      3.74MB
LBBENCH {"requests":19798,"duration_us":1103028,"bytes":4315964,\
"errors":{"connect":0,"read":1,"write":0,"status":2,"timeout":3},\
"quantiles":[[0,182],[50,824],[99,4427],[99.9,8000],[100,9015]]}
"""


def test_parse_reads_the_result_line() -> None:
    load = parse(OUTPUT)
    assert load.requests == 19798
    assert load.duration_s == pytest.approx(1.103028)
    assert load.rps == pytest.approx(17948.8, abs=0.1)  # as wrk's own Requests/sec
    assert load.errors == 6
    assert load.percentile_us(50) == 824
    assert load.percentile_us(99) == 4427


def test_parse_without_result_line_says_so() -> None:
    with pytest.raises(BenchError, match="no LBBENCH line"):
        parse("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_quantile_interpolates_between_grid_points() -> None:
    q = [(0.0, 100.0), (50.0, 200.0), (100.0, 1200.0)]
    assert quantile(q, 0) == 100
    assert quantile(q, 25) == 150
    assert quantile(q, 50) == 200
    assert quantile(q, 75) == 700
    assert quantile(q, 100) == 1200


def uniform(lo: float, hi: float, requests: int, seconds: float = 10.0) -> Load:
    """A load whose latencies are spread evenly over [lo, hi] µs."""
    return Load(requests, seconds, 0, [(p, lo + (hi - lo) * p / 100) for p in range(101)])


def test_merge_of_identical_loads_keeps_the_distribution_and_adds_rates() -> None:
    one = uniform(1000, 3000, 10_000)
    both = merge([one, one])
    assert both.requests == 20_000
    assert both.rps == pytest.approx(2000)
    assert both.percentile_us(50) == pytest.approx(2000, abs=0.01)
    assert both.percentile_us(99) == pytest.approx(2980, abs=0.01)


def test_merge_weights_each_process_by_its_requests() -> None:
    fast = uniform(0, 1000, 30_000)
    slow = uniform(1000, 2000, 10_000)
    mixed = merge([fast, slow, Load(0, 10.0, 4, [(0, 500.0), (100, 500.0)])])
    # 75% of requests are in [0, 1000): the median is at 2/3 of that range...
    assert mixed.percentile_us(50) == pytest.approx(666.67, abs=0.01)
    # ...and p99 is 96% of the way through the slow quarter.
    assert mixed.percentile_us(99) == pytest.approx(1960, abs=0.01)
    assert mixed.errors == 4
    assert mixed.rps == pytest.approx(4000)


def test_connections_are_shared_out_evenly() -> None:
    assert split_connections(64, 3) == [22, 21, 21]
    assert split_connections(64, 1) == [64]
    assert sum(split_connections(100, 7)) == 100


def test_command_sends_random_keys_through_the_script() -> None:
    argv = command("wrk", "http://127.0.0.1:1/home", 22, 4, 10, 7)
    assert argv[:4] == ["wrk", "-t4", "-c22", "-d10s"]
    assert argv[argv.index("-s") + 1].endswith("keys.lua")
    assert argv[-3:] == ["http://127.0.0.1:1/home", "--", "7"]
    assert command("wrk", "u", 1, 4, 0.4, 1)[1:4] == ["-t1", "-c1", "-d1s"]
