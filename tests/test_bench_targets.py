"""The balancers' configurations the bench writes: consistent hashing on the request key and
keep-alive to the replicas, for all three."""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.targets import haproxy_config, lbproxy_config, nginx_config
from lbproxy import parse_config

REPLICAS = [("replica-1", "127.0.0.1:4001"), ("replica-2", "127.0.0.1:4002")]


def test_lbproxy_config_is_valid_and_hashes_the_request_id() -> None:
    config = parse_config(yaml.safe_load(lbproxy_config(5555, REPLICAS)))
    assert config.listen.host == "127.0.0.1"
    assert config.listen.port == 5555
    assert config.replicas.backend == "static"
    assert [(s.hostname, s.address) for s in config.replicas.static] == REPLICAS
    assert config.hashing.function == "default"
    assert config.hashing.key == "request_id"
    assert config.reload.enabled is False


def test_haproxy_config() -> None:
    text = haproxy_config(5555, REPLICAS)
    assert "bind 127.0.0.1:5555" in text
    assert "balance hdr(X-Request-Id)" in text
    assert "hash-type consistent" in text
    assert "http-reuse always" in text
    assert "server replica-2 127.0.0.1:4002" in text


def test_nginx_config(tmp_path: Path) -> None:
    text = nginx_config(5555, REPLICAS, tmp_path)
    assert "listen 127.0.0.1:5555;" in text
    assert "hash $http_x_request_id consistent;" in text
    assert "keepalive 128;" in text
    assert "proxy_http_version 1.1;" in text
    assert 'proxy_set_header Connection "";' in text
    assert "server 127.0.0.1:4001;" in text
    assert f"pid {tmp_path}/nginx.pid;" in text


def test_two_core_targets_use_every_core() -> None:
    assert "nbthread 1\n" in haproxy_config(5555, REPLICAS)
    assert "nbthread 2\n" in haproxy_config(5555, REPLICAS, threads=2)
    config = parse_config(yaml.safe_load(lbproxy_config(5555, REPLICAS, "lbproxy-2w")))
    assert config.workers == 2
    assert parse_config(yaml.safe_load(lbproxy_config(5555, REPLICAS))).workers == 1
