"""The package's import floors, each checked in a fresh interpreter: a module loads only what
it uses, so a replica process and the pure core stay light (docs/design.md, module map)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Modules that do I/O (event loop, sockets, HTTP, Docker) or parse the configuration: the
#: pure core (hashing, ring, Maglev table) must load none of them.
IO_MODULES = (
    "asyncio",
    "socket",
    "ssl",
    "selectors",
    "subprocess",
    "aiohttp",
    "aiodocker",
    "httptools",
    "uvloop",
    "pydantic",
    "yaml",
)


def loaded_by(statement: str) -> set[str]:
    """The top-level names of the modules a fresh interpreter has loaded after ``statement``."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def present(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in names)


def test_the_probe_sees_what_a_module_loads() -> None:
    # Against a vacuous pass: the same probe finds the libraries where they are used.
    loaded = loaded_by("import lbproxy.backends._docker")
    assert present(loaded, ("aiodocker", "pydantic"))


def test_a_replica_loads_neither_docker_nor_the_configuration() -> None:
    loaded = loaded_by("import lbproxy.replica")
    assert "lbproxy.replica" in loaded
    assert present(loaded, ("aiodocker", "pydantic", "yaml")) == []
    # Nor any part of the balancer.
    balancer = {"lbproxy._server", "lbproxy.front", "lbproxy._config", "lbproxy.backends"}
    assert loaded & balancer == set()


def test_the_command_line_loads_the_configuration_only_to_run_the_balancer() -> None:
    # `lbproxy replica` (the console script) goes through lbproxy.cli.
    loaded = loaded_by("import lbproxy.cli")
    assert present(loaded, ("aiodocker", "pydantic", "yaml", "aiohttp")) == []


@pytest.mark.parametrize("module", ["lbproxy._hashing", "lbproxy._ring", "lbproxy._maglev"])
def test_the_pure_core_loads_no_io_library(module: str) -> None:
    loaded = loaded_by(f"import {module}")
    assert module in loaded
    assert present(loaded, IO_MODULES) == []


def test_importing_the_package_loads_none_of_it() -> None:
    loaded = loaded_by("import lbproxy")
    assert sorted(m for m in loaded if m.startswith("lbproxy.")) == []


def test_the_public_names_load_on_first_use() -> None:
    loaded = loaded_by(
        "import lbproxy\n"
        "from lbproxy import *\n"
        "assert lbproxy.Server.__module__ == 'lbproxy._server'\n"
        "assert sorted(dir(lbproxy)) == sorted(lbproxy.__all__)"
    )
    assert "lbproxy._server" in loaded


def test_an_unknown_name_is_an_attribute_error() -> None:
    import lbproxy

    with pytest.raises(AttributeError, match="no_such_name"):
        lbproxy.no_such_name  # noqa: B018


def test_a_process_balancer_does_not_load_docker() -> None:
    loaded = loaded_by(
        "from lbproxy import parse_config\n"
        "from lbproxy.backends import make_backend\n"
        "make_backend(parse_config({}))\n"
        "import lbproxy._server"
    )
    assert "lbproxy.backends._process" in loaded
    assert present(loaded, ("aiodocker",)) == []


def test_the_docker_backend_loads_when_chosen() -> None:
    loaded = loaded_by(
        "from lbproxy import parse_config\n"
        "from lbproxy.backends import make_backend\n"
        "make_backend(parse_config({'replicas': {'backend': 'docker'}}))"
    )
    assert "lbproxy.backends._docker" in loaded and "aiodocker" in loaded


def test_the_proxy_knows_the_request_only_by_its_protocol() -> None:
    loaded = loaded_by("import lbproxy._proxy")
    assert "lbproxy._exchange" in loaded
    assert loaded & {"lbproxy.front", "lbproxy._admin", "lbproxy._server"} == set()


def test_the_exchange_protocol_loads_no_io_library() -> None:
    loaded = loaded_by("import lbproxy._exchange, lbproxy._keys")
    assert present(loaded, IO_MODULES) == []
