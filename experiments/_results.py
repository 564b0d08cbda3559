"""Writing results: raw numbers as CSV and JSON, tables as Markdown, plots as PNG."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

HASH_COLORS = {"assignment": "#d62728", "modulo": "#ff7f0e", "default": "#1f77b4"}


@dataclass
class Report:
    """What one experiment produced: a Markdown section, headline figures and its files."""

    name: str
    title: str
    markdown: str
    headline: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    #: Printed when the run ends, for figures worth seeing without opening the files.
    console: str = ""


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return path


def pyplot() -> ModuleType:
    """matplotlib's pyplot, drawing to files only (imported on first use: it is slow to load,
    and ``--help`` or a failed start need none of it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def panels(count: int, width: float = 4.2, height: float = 3.8) -> tuple[Any, list[Any]]:
    """A figure with ``count`` side-by-side panels sharing the y axis (one per hash choice)."""
    fig, axes = pyplot().subplots(1, count, figsize=(width * count, height), sharey=True)
    return fig, [axes] if count == 1 else list(axes)


def save_figure(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
