"""Replica hostnames: Docker's container-name rules, and random names for new replicas."""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Collection

#: Docker's rule for container names; hostnames double as container names and network aliases.
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
#: A hostname is also a DNS label on the replicas' network, which caps it at 63 characters.
MAX_NAME_LENGTH = 63
_ALPHABET = string.ascii_lowercase + string.digits


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid replica hostname, or None when it is."""
    if not isinstance(name, str):
        return f"hostname {name!r} is not a string"
    if len(name) > MAX_NAME_LENGTH:
        return f"hostname {name[:20]!r}... is longer than {MAX_NAME_LENGTH} characters"
    if not _NAME_RE.fullmatch(name):
        return (
            f"hostname {name!r} is not a valid container name "
            "(2+ characters from [a-zA-Z0-9_.-], starting with a letter or digit)"
        )
    return None


def random_name(prefix: str, taken: Collection[str], length: int = 6) -> str:
    """A fresh ``<prefix>-xxxxxx`` name that is not in ``taken`` (compared case-insensitively)."""
    lowered = {t.lower() for t in taken}
    while True:
        name = f"{prefix}-{''.join(secrets.choice(_ALPHABET) for _ in range(length))}"
        if name.lower() not in lowered:
            return name
