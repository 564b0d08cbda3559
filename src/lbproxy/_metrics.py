"""GET /metrics: the counters of ``_stats.py`` and the pool's state in Prometheus' text format.

``prometheus_client`` renders the format (escaping, histogram layout, the process metrics);
its own metric objects are not used on the data path, since each increment takes a lock.
A custom collector builds the families from our structures when the page is scraped.
docs/metrics.md lists every metric and its HAProxy, Envoy and Traefik counterparts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ._pool import Replica, State
from ._stats import OWN, Stats

CONTENT_TYPE = CONTENT_TYPE_LATEST


class BalancerCollector(Collector):
    """Builds the lbproxy_* families at scrape time."""

    def __init__(
        self,
        stats: Stats,
        replicas: Callable[[], Sequence[Replica]],
        shares: Callable[[], dict[int, float]],
        connections: Callable[[], int],
    ) -> None:
        self._stats = stats
        #: The pool's replicas, then those draining.
        self._replicas = replicas
        #: slot -> share of the key space, of the ring in use.
        self._shares = shares
        self._connections = connections

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        requests = CounterMetricFamily(
            "lbproxy_requests",
            "Answers sent to clients, by the replica that gave them (or that they concern) "
            'and status; replica="" for the balancer\'s own about no one replica',
            labels=["replica", "code"],
        )
        durations = HistogramMetricFamily(
            "lbproxy_request_duration_seconds",
            "Time from a request's head being read to its answer going out, by replica",
            labels=["replica"],
        )
        retries = CounterMetricFamily(
            "lbproxy_retries",
            "Requests sent on to the next replica after this one failed them",
            labels=["replica"],
        )
        connect_errors = CounterMetricFamily(
            "lbproxy_upstream_connect_errors",
            "Connections to the replica that could not be made",
            labels=["replica"],
        )
        for name, s in list(stats.replicas.items()):
            for code, n in sorted(s.codes.items()):
                requests.add_metric([name, str(code)], n)
            if name != OWN or s.durations.sum:
                durations.add_metric([name], s.durations.cumulative(), s.durations.sum)
            if name != OWN:
                retries.add_metric([name], s.retries)
                connect_errors.add_metric([name], s.connect_errors)
        yield from (requests, durations, retries, connect_errors)

        up = GaugeMetricFamily(
            "lbproxy_replica_up",
            "1 if the replica is up and routed to, else 0 (starting, draining, down, ejected)",
            labels=["replica", "slot"],
        )
        in_flight = GaugeMetricFamily(
            "lbproxy_replica_in_flight",
            "Requests sent to the replica whose exchange has not ended",
            labels=["replica"],
        )
        restarts = CounterMetricFamily(
            "lbproxy_replica_restarts",
            "Times the slot's replica failed and was replaced",
            labels=["slot"],
        )
        share = GaugeMetricFamily(
            "lbproxy_ring_share",
            "Fraction of the key space the replica owns in the ring in use",
            labels=["replica"],
        )
        shares = self._shares()
        seen_slots: set[int] = set()
        for r in self._replicas():
            routed = r.state is State.UP and not r.ejected
            up.add_metric([r.hostname, str(r.slot)], 1.0 if routed else 0.0)
            in_flight.add_metric([r.hostname], r.in_flight)
            if r.state is not State.DRAINING and r.slot not in seen_slots:
                seen_slots.add(r.slot)
                restarts.add_metric([str(r.slot)], r.restarts)
                share.add_metric([r.hostname], shares.get(r.slot, 0.0))
        yield from (up, in_flight, restarts, share)

        yield GaugeMetricFamily(
            "lbproxy_client_connections",
            "Client connections open on the balancer's port",
            value=self._connections(),
        )
        reloads = CounterMetricFamily(
            "lbproxy_config_reloads",
            "Changes of config.yaml applied (success) or rejected (failure)",
            labels=["result"],
        )
        for result, n in stats.reloads.items():
            reloads.add_metric([result], n)
        yield reloads
        heartbeats = HistogramMetricFamily(
            "lbproxy_heartbeat_duration_seconds",
            "Time each heartbeat probe of a replica took (failed ones included)",
        )
        heartbeats.add_metric([], stats.heartbeats.cumulative(), stats.heartbeats.sum)
        yield heartbeats


def make_registry(collector: BalancerCollector) -> CollectorRegistry:
    """Our families plus the process's (CPU, memory, descriptors) and Python's version."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format. Process metrics come from /proc, which the kernel
    answers from memory: no disk I/O on the event loop."""
    return generate_latest(registry)
