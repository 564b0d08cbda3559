"""config.yaml parsing: defaults, the shipped file, an error naming the field for every mistake."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from lbproxy._config import (
    Config,
    load_config,
    parse_config,
    parse_config_text,
    with_overrides,
)
from lbproxy._errors import ConfigError, LbproxyError
from lbproxy._hashing import make_scheme

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.yaml"

STATIC_TWO = [
    {"hostname": "web-1", "address": "127.0.0.1:8001"},
    {"hostname": "web-2", "address": "10.0.0.5:8080"},
]


def error_of(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


# --- defaults -----------------------------------------------------------------------------------


def test_defaults() -> None:
    c = Config()
    assert c.listen.host == "0.0.0.0"
    assert c.listen.port == 5000
    assert c.replicas.count == 3
    assert c.replicas.max == 32
    assert c.replicas.backend == "process"
    assert c.replicas.desired_count == 3
    assert c.replicas.static == []
    assert c.hashing.function == "default"
    assert c.hashing.slots is None
    assert c.hashing.virtual_nodes is None
    assert c.hashing.probing == "linear"
    assert c.hashing.key == "request_id"
    assert c.hashing.scheme() == make_scheme("default")
    assert c.health.path == "/heartbeat"
    assert c.health.backoff_initial <= c.health.backoff_max
    assert c.proxy.retries == 2
    assert c.reload.enabled is True
    assert c.log_level == "info"


def test_empty_document_gives_defaults() -> None:
    assert parse_config(None) == Config()
    assert parse_config({}) == Config()
    assert parse_config_text("") == Config()
    assert parse_config_text("# only a comment\n\n") == Config()


def test_repository_config_yaml_loads_and_equals_defaults() -> None:
    assert REPO_CONFIG.is_file()
    loaded = load_config(REPO_CONFIG)
    assert loaded == Config()
    assert loaded.model_dump() == Config().model_dump()


def _leaves(tree: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out.add(prefix + key)
    return out


def test_repository_config_yaml_lists_every_setting() -> None:
    """It says it lists every default: a setting missing from it would be a hidden default."""
    written = _leaves(yaml.safe_load(REPO_CONFIG.read_text()))
    assert written == _leaves(Config().model_dump())


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text("listen:\n  port: 8080\nreplicas:\n  count: 5\nlog_level: debug\n")
    c = load_config(path)
    assert c.listen.port == 8080
    assert c.replicas.count == 5
    assert c.log_level == "debug"
    assert c.hashing == Config().hashing
    assert load_config(str(path)) == c


def test_partial_sections_keep_other_defaults() -> None:
    c = parse_config({"health": {"interval": 0.25}, "hashing": {"function": "assignment"}})
    assert c.health.interval == 0.25
    assert c.health.timeout == Config().health.timeout
    assert c.hashing.scheme() == make_scheme("assignment")
    assert c.hashing.scheme().slots == 512
    assert c.hashing.scheme().virtual_nodes == 9


# --- unknown fields -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"lsiten": {}}, "lsiten"),
        ({"listen": {"prot": 1}}, "listen.prot"),
        ({"replicas": {"cont": 3}}, "replicas.cont"),
        ({"replicas": {"process": {"cmd": ["x"]}}}, "replicas.process.cmd"),
        (
            {"replicas": {"static": [{"hostname": "ab", "address": "h:1", "name": "x"}]}},
            "replicas.static.0.name",
        ),
        ({"hashing": {"fn": "default"}}, "hashing.fn"),
        ({"health": {"intervall": 1}}, "health.intervall"),
        ({"proxy": {"retry": 1}}, "proxy.retry"),
        ({"reload": {"enable": True}}, "reload.enable"),
    ],
)
def test_unknown_keys_are_errors_naming_the_dotted_field(data: dict[str, Any], field: str) -> None:
    assert f"{field}: unknown field" in error_of(data)


def test_unknown_key_in_yaml_text_names_source() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text("replicas:\n  cont: 3\n", "my.yaml")
    assert str(info.value) == "my.yaml: replicas.cont: unknown field"


# --- wrong types and ranges ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"listen": {"port": "abc"}}, "listen.port"),
        ({"listen": {"port": 70000}}, "listen.port"),
        ({"listen": {"port": -1}}, "listen.port"),
        ({"replicas": {"count": -1}}, "replicas.count"),
        ({"replicas": {"count": "three"}}, "replicas.count"),
        ({"replicas": {"max": 0}}, "replicas.max"),
        ({"replicas": {"max": 5000}}, "replicas.max"),
        ({"replicas": {"backend": "docker-swarm"}}, "replicas.backend"),
        ({"replicas": {"name_prefix": "-bad"}}, "replicas.name_prefix"),
        ({"replicas": {"stop_timeout": 0}}, "replicas.stop_timeout"),
        ({"replicas": {"process": {"command": []}}}, "replicas.process.command"),
        ({"replicas": {"process": {"output": "file"}}}, "replicas.process.output"),
        ({"hashing": {"function": "md5"}}, "hashing.function"),
        ({"hashing": {"slots": 0}}, "hashing.slots"),
        ({"hashing": {"virtual_nodes": 0}}, "hashing.virtual_nodes"),
        ({"hashing": {"probing": "cuckoo"}}, "hashing.probing"),
        ({"health": {"path": "heartbeat"}}, "health.path"),
        ({"health": {"interval": 0}}, "health.interval"),
        ({"health": {"timeout": -1}}, "health.timeout"),
        ({"health": {"interval": 100_000}}, "health.interval"),
        ({"health": {"unhealthy_threshold": 0}}, "health.unhealthy_threshold"),
        ({"proxy": {"retries": -1}}, "proxy.retries"),
        ({"proxy": {"pool_size": 0}}, "proxy.pool_size"),
        ({"proxy": {"read_timeout": "soon"}}, "proxy.read_timeout"),
        ({"reload": {"enabled": "maybe"}}, "reload.enabled"),
        ({"reload": {"interval": 0}}, "reload.interval"),
        ({"shutdown_timeout": 0}, "shutdown_timeout"),
        ({"log_level": "verbose"}, "log_level"),
        ({"listen": "port 5000"}, "listen"),
        ({"replicas": [1, 2]}, "replicas"),
    ],
)
def test_bad_values_name_the_field(data: dict[str, Any], field: str) -> None:
    message = error_of(data)
    assert message.startswith(f"config: {field}: ")
    assert "unknown field" not in message


def test_several_errors_are_all_reported() -> None:
    message = error_of({"listen": {"port": "x"}, "log_level": "loud"})
    assert "listen.port" in message
    assert "log_level" in message


def test_yaml_syntax_error() -> None:
    with pytest.raises(ConfigError, match=r"^lb\.yaml: not valid YAML"):
        parse_config_text("listen: [\n", "lb.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config_text("listen:\n  port: 1\n   host: x\n")


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("just a string\n", "str"), ("42\n", "int")]
)
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, "c.yaml")
    assert str(info.value) == f"c.yaml: top level must be a mapping, not {kind}"


def test_config_error_is_an_lbproxy_error() -> None:
    assert issubclass(ConfigError, LbproxyError)


# --- replicas -----------------------------------------------------------------------------------


def test_count_above_max() -> None:
    message = error_of({"replicas": {"count": 40}})
    assert message == "config: replicas: count (40) is above max (32)"
    assert "count (5) is above max (4)" in error_of({"replicas": {"count": 5, "max": 4}})
    assert parse_config({"replicas": {"count": 4, "max": 4}}).replicas.count == 4
    assert parse_config({"replicas": {"count": 0}}).replicas.count == 0


def test_static_backend_needs_a_list() -> None:
    for static in (None, []):
        data: dict[str, Any] = {"replicas": {"backend": "static"}}
        if static is not None:
            data["replicas"]["static"] = static
        message = error_of(data)
        assert "replicas: " in message
        assert "non-empty replicas.static" in message


def test_static_backend_takes_count_from_list() -> None:
    c = parse_config({"replicas": {"backend": "static", "static": STATIC_TWO}})
    assert c.replicas.desired_count == 2
    assert c.replicas.count == 2
    assert [s.hostname for s in c.replicas.static] == ["web-1", "web-2"]
    assert c.replicas.static[1].address == "10.0.0.5:8080"
    same = parse_config({"replicas": {"backend": "static", "count": 2, "static": STATIC_TWO}})
    assert same == c


def test_static_count_mismatch() -> None:
    message = error_of({"replicas": {"backend": "static", "count": 3, "static": STATIC_TWO}})
    assert "replicas: count (3) differs from the 2 static replicas" in message


def test_static_list_is_ignored_by_process_backend() -> None:
    c = parse_config({"replicas": {"static": STATIC_TWO}})
    assert c.replicas.desired_count == 3


def test_static_duplicate_hostnames_case_insensitive() -> None:
    static = [
        {"hostname": "Web-1", "address": "127.0.0.1:8001"},
        {"hostname": "web-1", "address": "127.0.0.1:8002"},
    ]
    message = error_of({"replicas": {"backend": "static", "static": static}})
    assert "replicas: replicas.static has duplicate hostnames" in message


def test_static_more_than_max() -> None:
    static = [{"hostname": f"web-{i}", "address": f"127.0.0.1:{8000 + i}"} for i in range(3)]
    message = error_of({"replicas": {"backend": "static", "max": 2, "static": static}})
    assert "count (3) is above max (2)" in message


@pytest.mark.parametrize(
    "address", ["localhost", "host:", ":8080", "host:http", "host:0", "host:65536", "host:-1", ""]
)
def test_static_bad_address(address: str) -> None:
    static = [{"hostname": "web-1", "address": address}]
    message = error_of({"replicas": {"backend": "static", "static": static}})
    assert "replicas.static.0.address" in message
    assert "is not host:port" in message


@pytest.mark.parametrize("address", ["h:1", "10.0.0.5:65535", "[::1]:8080", "web.internal:80"])
def test_static_good_address(address: str) -> None:
    static = [{"hostname": "web-1", "address": address}]
    c = parse_config({"replicas": {"backend": "static", "static": static}})
    assert c.replicas.static[0].address == address


@pytest.mark.parametrize("hostname", ["a", "-web", "has space", "x" * 64])
def test_static_bad_hostname(hostname: str) -> None:
    static = [{"hostname": hostname, "address": "h:1"}]
    message = error_of({"replicas": {"backend": "static", "static": static}})
    assert "replicas.static.0.hostname" in message


# --- hashing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "request_id",
        "client_ip",
        "path",
        "header:X-User",
        "cookie:sid",
        "query:user",
        "header:X-Request-Id",
        "query:a.b[0]",
    ],
)
def test_hashing_key_accepted(key: str) -> None:
    assert parse_config({"hashing": {"key": key}}).hashing.key == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "Path",
        "request-id",
        "header",
        "header:",
        "cookie:",
        "query:",
        "header:X User",
        "param:user",
        "path ",
        " client_ip",
        "header:X-\u00fcser",
        "request_id:x",
    ],
)
def test_hashing_key_rejected(key: str) -> None:
    message = error_of({"hashing": {"key": key}})
    assert message.startswith("config: hashing.key: ")
    assert "request_id, client_ip, path, header:<name>" in message


def test_ring_must_fit() -> None:
    message = error_of({"hashing": {"function": "assignment"}, "replicas": {"max": 100}})
    assert "hashing.slots (512)" in message
    assert "100 x 9 = 900" in message
    # 56 x 9 = 504 fits in 512, 57 x 9 = 513 does not.
    parse_config({"hashing": {"function": "assignment"}, "replicas": {"max": 56}})
    assert "hashing.slots" in error_of(
        {"hashing": {"function": "assignment"}, "replicas": {"max": 57}}
    )
    # A bigger ring lets more replicas in: M = 1024 gives K = 10, 100 x 10 = 1000 <= 1024.
    c = parse_config(
        {"hashing": {"function": "assignment", "slots": 1024}, "replicas": {"max": 100}}
    )
    assert c.hashing.scheme() == make_scheme("assignment", 1024)
    assert "hashing.slots (1000)" in error_of({"hashing": {"function": "ring", "slots": 1000}})
    # The default's table needs an entry per replica at least.
    parse_config({"hashing": {"slots": 32}, "replicas": {"max": 32}})
    message = error_of({"hashing": {"slots": 31}, "replicas": {"max": 32}})
    assert "hashing.slots (31) must have an entry for each of replicas.max (32)" in message


def test_default_table_size_and_virtual_nodes() -> None:
    assert parse_config({"hashing": {"slots": 65537}}).hashing.scheme().slots == 65537
    message = error_of({"hashing": {"virtual_nodes": 64}})
    assert message.startswith("config: hashing: virtual_nodes: virtual_nodes applies to")
    assert "hashing: slots: the default's table size must be 2..1048576" in error_of(
        {"hashing": {"slots": 1 << 21}}
    )
    ring = parse_config({"hashing": {"function": "ring", "virtual_nodes": 64}}).hashing
    assert ring.scheme() == make_scheme("ring", virtual_nodes=64)


@pytest.mark.parametrize("factor", [1, 1.0, 1.1, 1.25, "1.5", 100])
def test_balance_factor_accepted(factor: Any) -> None:
    c = parse_config({"hashing": {"balance_factor": factor}})
    assert c.hashing.balance_factor == float(factor)
    assert Config().hashing.balance_factor is None


@pytest.mark.parametrize(
    ("factor", "says"),
    [
        (0.99, "greater than or equal to 1"),
        (0, "greater than or equal to 1"),
        (-2, "greater than or equal to 1"),
        (100.5, "less than or equal to 100"),
        (".nan", "greater than or equal to 1"),
        (".inf", "less than or equal to 100"),
        ("yes", "must be a number, not a boolean"),
        ("fast", "valid number"),
        ("[1.2]", "valid number"),
    ],
)
def test_balance_factor_rejected(factor: str | float, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text(f"hashing: {{balance_factor: {factor}}}")
    assert str(info.value).startswith("config: hashing.balance_factor")
    assert says in str(info.value)


def test_weights_default_overrides_and_static() -> None:
    c = parse_config({"replicas": {"weight": 2, "weights": {"Server-1": 0.5, "big": 4}}})
    assert c.replicas.weight_of("server-1") == 0.5  # hostnames compare case-insensitively
    assert c.replicas.weight_of("BIG") == 4.0
    assert c.replicas.weight_of("server-2") == 2.0
    assert Config().replicas.weight_of("anyone") == 1.0
    static = [{**STATIC_TWO[0], "weight": 3}, STATIC_TWO[1]]
    s = parse_config({"replicas": {"backend": "static", "static": static}})
    assert [s.replicas.weight_of(h) for h in ("web-1", "web-2")] == [3.0, 1.0]
    # The by-name map wins over the entry's own weight.
    s = parse_config({"replicas": {"backend": "static", "static": static, "weights": {"web-1": 5}}})
    assert s.replicas.weight_of("web-1") == 5.0


@pytest.mark.parametrize(
    ("replicas", "field", "says"),
    [
        ({"weight": 0}, "replicas.weight", "greater than or equal to 0.001"),
        ({"weight": 1001}, "replicas.weight", "less than or equal to 1000"),
        ({"weight": True}, "replicas.weight", "not a boolean"),
        ({"weights": {"ab": -1}}, "replicas.weights.ab", "greater than or equal to 0.001"),
        ({"weights": {"a b": 1}}, "replicas.weights", "a b"),
        ({"weights": {"AB": 1, "ab": 2}}, "replicas.weights", "twice"),
        ({"weights": ["ab"]}, "replicas.weights", "valid dictionary"),
        (
            {"backend": "static", "static": [{**STATIC_TWO[0], "weight": "x"}]},
            "replicas.static.0.weight",
            "valid number",
        ),
    ],
)
def test_weights_rejected(replicas: dict[str, Any], field: str, says: str) -> None:
    message = error_of({"replicas": replicas})
    assert message.startswith(f"config: {field}")
    assert says in message


def test_weights_count_in_the_ring_fit() -> None:
    # 28 x 9 x 2 = 504 virtual nodes fit in 512; 29 x 18 do not.
    parse_config(
        {"hashing": {"function": "assignment"}, "replicas": {"max": 28, "weights": {"ab": 2}}}
    )
    message = error_of(
        {"hashing": {"function": "assignment"}, "replicas": {"max": 29, "weights": {"ab": 2}}}
    )
    assert "(29 x 9 x weight 2 = 522)" in message
    # The table's weights change shares, not the number of entries.
    parse_config({"replicas": {"max": 32, "weight": 100}})


def test_hashing_scheme_uses_overrides() -> None:
    c = parse_config(
        {
            "hashing": {
                "function": "modulo",
                "slots": 2048,
                "virtual_nodes": 4,
                "probing": "quadratic",
            }
        }
    )
    assert c.hashing.scheme() == make_scheme("modulo", 2048, 4)
    assert c.hashing.probing == "quadratic"


# --- health -------------------------------------------------------------------------------------


def test_backoff_max_below_initial_rejected() -> None:
    message = error_of({"health": {"backoff_initial": 5, "backoff_max": 1}})
    assert message == "config: health: backoff_max must be >= backoff_initial"
    c = parse_config({"health": {"backoff_initial": 2, "backoff_max": 2}})
    assert c.health.backoff_max == 2


# --- load_config --------------------------------------------------------------------------------


def test_load_config_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "config.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(info.value).startswith(f"{missing}: cannot read")


def test_load_config_errors_name_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("replicas:\n  cont: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: replicas.cont: unknown field"


def test_load_config_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


@pytest.mark.parametrize("content", [b"", b"\n  \n", b"# nothing but comments\n", b"---\n"])
def test_a_file_without_a_document_is_an_error(tmp_path: Path, content: bytes) -> None:
    # It cannot be told from a file cut short; {} states the defaults.
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: the file is empty")
    assert "{}" in str(info.value)
    path.write_text("{}\n")
    assert load_config(path) == Config()


def test_a_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"replicas:\n  name_prefix: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: not UTF-8 text (invalid continuation byte at byte 28)"


# --- admin and drain ----------------------------------------------------------------------------


def test_admin_and_drain_defaults() -> None:
    c = Config()
    assert c.admin.host == "127.0.0.1"
    assert c.admin.port == 5001
    assert c.admin.token is None
    assert c.admin.on_main_port is True
    assert c.replicas.drain_timeout == 30.0


def test_admin_token_is_a_secret() -> None:
    token = "0123456789abcdef-token"
    c = parse_config({"admin": {"token": token, "port": 0, "on_main_port": False}})
    assert c.admin.token is not None and c.admin.token.get_secret_value() == token
    assert token not in repr(c) and token not in c.model_dump_json()
    assert parse_config(c.model_dump()) == c  # round-trips, as reloads and overrides need
    assert with_overrides(c, **{"admin.port": 7}).admin.token == c.admin.token


@pytest.mark.parametrize(
    ("admin", "fragment"),
    [
        ({"token": "short"}, "at least 16 characters"),
        ({"token": "has a space in it, long enough"}, "printable ASCII"),
        ({"token": "x" * 5000}, "at most 4096"),
        ({"port": 70000}, "admin.port"),
        ({"on_main_port": "perhaps"}, "admin.on_main_port"),
        ({"tokn": "x"}, "admin.tokn: unknown field"),
    ],
)
def test_admin_errors_name_the_field(admin: dict[str, Any], fragment: str) -> None:
    message = error_of({"admin": admin})
    assert fragment in message
    assert "admin." in message


@pytest.mark.parametrize("value", [0, -1, 100_000])
def test_drain_timeout_bounds(value: float) -> None:
    assert "replicas.drain_timeout" in error_of({"replicas": {"drain_timeout": value}})


# --- with_overrides -----------------------------------------------------------------------------


def test_with_overrides_applies_dotted_fields() -> None:
    base = Config()
    c = with_overrides(
        base,
        **{
            "listen.port": 0,
            "replicas.count": 5,
            "log_level": "debug",
            "replicas.process.output": "discard",
        },
    )
    assert c.listen.port == 0
    assert c.replicas.count == 5
    assert c.log_level == "debug"
    assert c.replicas.process.output == "discard"
    assert c.health == base.health
    # The original is untouched.
    assert base.listen.port == 5000
    assert base.replicas.count == 3
    assert with_overrides(base) == base


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"listen.port": -1}, "listen.port"),
        ({"replicas.count": 33}, "count (33) is above max (32)"),
        ({"hashing.function": "assignment", "replicas.max": 100}, "hashing.slots"),
        ({"health.backoff_max": 0.1}, "backoff_max must be >= backoff_initial"),
        ({"listen.bogus": 1}, "listen.bogus: unknown field"),
    ],
)
def test_with_overrides_revalidates(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        with_overrides(Config(), **overrides)
    assert str(info.value).startswith("overrides: ")
    assert fragment in str(info.value)


def test_with_overrides_on_static_config() -> None:
    # A static config without an explicit count must survive the dump/re-validate round trip.
    c = parse_config({"replicas": {"backend": "static", "static": STATIC_TWO}})
    o = with_overrides(c, **{"listen.port": 0})
    assert o.listen.port == 0
    assert o.replicas.desired_count == 2
    assert o.replicas.static == c.replicas.static


def test_model_dump_round_trips() -> None:
    for data in (
        {},
        {"replicas": {"backend": "static", "static": STATIC_TWO}},
        {"hashing": {"function": "assignment", "probing": "quadratic"}, "replicas": {"max": 50}},
        {"hashing": {"balance_factor": 1.25}, "replicas": {"weight": 2, "weights": {"ab": 3}}},
    ):
        c = parse_config(data)
        assert parse_config(c.model_dump()) == c


# --- immutability -------------------------------------------------------------------------------


def test_config_is_frozen() -> None:
    c = Config()
    with pytest.raises(ValidationError):
        c.log_level = "debug"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        c.listen.port = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        c.replicas.count = 9  # type: ignore[misc]
    assert c.log_level == "info"
    assert c.listen.port == 5000
    assert c.replicas.count == 3


def test_config_equality() -> None:
    assert Config() == Config()
    assert parse_config({"listen": {"port": 1}}) != Config()


# --- docker backend -----------------------------------------------------------------------------


def test_docker_backend_defaults_and_fields() -> None:
    c = parse_config({"replicas": {"backend": "docker", "docker": {"environment": {"A_B": "1"}}}})
    d = c.replicas.docker
    assert c.replicas.backend == "docker"
    assert c.replicas.desired_count == 3
    assert d.image == "lbproxy/server:latest"
    assert d.network == "lbproxy-net"
    assert d.instance == "lbproxy"
    assert d.port == 5000
    assert d.remove_on_shutdown is True
    assert d.environment == {"A_B": "1"}


@pytest.mark.parametrize(
    ("docker", "fragment"),
    [
        ({"environment": {"SERVER_ID": "x"}}, "replicas.docker.environment: SERVER_ID is set by"),
        ({"environment": {"1BAD": "x"}}, "replicas.docker.environment: '1BAD' is not"),
        ({"network": "bad net"}, "replicas.docker.network"),
        ({"instance": ""}, "replicas.docker.instance"),
        ({"port": 0}, "replicas.docker.port"),
        ({"image": ""}, "replicas.docker.image"),
        ({"cpus": 0}, "replicas.docker.cpus"),
        ({"pull": True}, "replicas.docker.pull: unknown field"),
    ],
)
def test_docker_backend_errors_name_the_field(docker: dict[str, Any], fragment: str) -> None:
    assert fragment in error_of({"replicas": {"backend": "docker", "docker": docker}})


@pytest.mark.parametrize(
    ("value", "count"), [(1, 1), (2, 2), (256, 256), ("auto", len(os.sched_getaffinity(0)))]
)
def test_workers_takes_a_count_or_auto(value: object, count: int) -> None:
    config = parse_config({"workers": value})
    assert config.workers == value
    assert config.worker_count() == count


@pytest.mark.parametrize("value", [0, -1, 257, True, 2.5, "two", "", None, [2]])
def test_workers_refuses_anything_else_naming_the_field(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^config: workers: must be a whole number from 1 "):
        parse_config({"workers": value})
