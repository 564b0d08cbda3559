"""The reload policy, pure: what a changed config.yaml changes on a running balancer."""

from __future__ import annotations

from typing import Any

import pytest

from lbproxy._config import Config, parse_config
from lbproxy._errors import ConfigError
from lbproxy._reload_policy import RELOADABLE, plan, restart_only_changes

STATIC = [
    {"hostname": "web-1", "address": "127.0.0.1:8001"},
    {"hostname": "web-2", "address": "127.0.0.1:8002"},
]


def test_reloadable_fields_exist() -> None:
    data = Config().model_dump()
    for dotted in RELOADABLE:
        node: Any = data
        for part in dotted.split("."):
            assert part in node, dotted
            node = node[part]


def test_the_admin_listener_needs_a_restart_its_token_does_not() -> None:
    for field in ("admin.token", "admin.on_main_port", "replicas.drain_timeout"):
        assert field in RELOADABLE
    assert "admin.port" not in RELOADABLE and "admin.host" not in RELOADABLE


def test_an_unchanged_file_plans_nothing() -> None:
    old = parse_config({"replicas": {"count": 2}})
    p = plan(old, parse_config({"replicas": {"count": 2}}))
    assert p.effective == old
    assert p.restart_only == []
    assert (p.hashing_changed, p.weights_changed, p.rebuild_table, p.count) == (
        False,
        False,
        False,
        None,
    )


def test_restart_only_changes_are_named_and_kept_at_their_running_value() -> None:
    old = Config()
    new = parse_config({"listen": {"port": 5999}, "health": {"interval": 0.3}})
    p = plan(old, new)
    assert p.restart_only == ["listen.port"]
    assert p.effective.listen.port == old.listen.port
    assert p.effective.health.interval == 0.3


def test_a_count_change_is_a_scale_a_hashing_change_a_new_table() -> None:
    old = Config()
    p = plan(old, parse_config({"replicas": {"count": 5}, "hashing": {"function": "ring"}}))
    assert p.count == 5
    assert p.hashing_changed and p.rebuild_table and not p.weights_changed
    assert p.effective.hashing.function == "ring"


def test_static_weights_reload_the_servers_do_not() -> None:
    old = parse_config({"replicas": {"backend": "static", "static": STATIC}})
    weighted = [STATIC[0], {**STATIC[1], "weight": 3}]
    p = plan(old, parse_config({"replicas": {"backend": "static", "static": weighted}}))
    assert p.restart_only == [] and p.weights_changed and p.rebuild_table
    assert p.effective.replicas.weight_of("web-2") == 3

    moved = [STATIC[0], {**STATIC[1], "address": "127.0.0.1:9"}]
    p = plan(old, parse_config({"replicas": {"backend": "static", "static": moved}}))
    assert p.restart_only == ["replicas.static"]
    assert p.effective.replicas.static == old.replicas.static


def test_a_shorter_static_list_waits_for_a_restart_with_its_count() -> None:
    old = parse_config({"replicas": {"backend": "static", "static": STATIC}})
    p = plan(old, parse_config({"replicas": {"backend": "static", "static": STATIC[:1]}}))
    assert p.restart_only == ["replicas.count", "replicas.static"]
    assert p.effective == old and p.count is None


def test_command_line_overrides_win_over_the_file() -> None:
    old = parse_config({"replicas": {"count": 2}})
    p = plan(old, parse_config({"replicas": {"count": 1}}), {"replicas.count": 2})
    assert p.count is None and p.effective.replicas.count == 2


def test_a_file_invalid_under_the_overrides_is_rejected() -> None:
    old = parse_config({"replicas": {"count": 2}})
    with pytest.raises(ConfigError, match="replicas"):
        plan(old, parse_config({"replicas": {"max": 2}}), {"replicas.count": 3})


def test_restart_only_changes_walk_nested_models() -> None:
    old = Config()
    new = parse_config({"replicas": {"docker": {"image": "other:1"}}, "shutdown_timeout": 3})
    assert restart_only_changes(old, new) == ["replicas.docker.image", "shutdown_timeout"]
