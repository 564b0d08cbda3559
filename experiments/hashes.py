"""Experiment 4: the seed's ``i % 512`` (``modulo``) and the default against the assignment's.

It puts experiments 1 and 2 of the three hash choices side by side, and draws where each
choice puts its virtual nodes and its request ids on the ring (pure: the ring is computed,
not measured), which is what explains the skew the measurements show.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lbproxy import HashRing, build_ring, make_scheme

from ._results import HASH_COLORS, Report, md_table, pyplot, save_figure, write_csv
from ._settings import Settings
from .balance import BalanceRun

#: Columns of the drawn ring: every slot for the 512-slot rings, a sample of the 2^64 one.
_RING_PIXELS = 2048


def ring_layout(hash_name: str, n: int, ids: Sequence[str]) -> dict[str, Any]:
    """Where the ring of replicas 1..n puts its virtual nodes, its arcs and ``ids`` (for the
    default's table: which replica owns each entry, and no virtual nodes)."""
    scheme = make_scheme(hash_name)  # type: ignore[arg-type]
    ring = build_ring(scheme, range(1, n + 1))
    m = scheme.slots
    width = min(m, _RING_PIXELS)
    owners = [ring.owner_at(k * m // width) or 0 for k in range(width)]
    return {
        "hash": hash_name,
        "slots": m,
        "table": not isinstance(ring, HashRing),
        "vnodes": [(p / m, r) for p, r in ring.vnodes()] if isinstance(ring, HashRing) else [],
        "owners": owners,
        "key_positions": [scheme.key_position(i) / m for i in ids],
        "distinct_key_slots": len({scheme.key_position(i) for i in ids}) if m <= 1 << 20 else None,
        "shares": ring.shares(),
    }


def plot_ring(layouts: Sequence[dict[str, Any]], path: Any) -> Any:
    plt = pyplot()
    from matplotlib.colors import ListedColormap

    palette = ["#9467bd", "#2ca02c", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    fig, axes = plt.subplots(
        2 * len(layouts),
        1,
        figsize=(10, 2.1 * len(layouts)),
        gridspec_kw={"height_ratios": [1, 1.4] * len(layouts)},
    )
    for i, lay in enumerate(layouts):
        strip, hist = axes[2 * i], axes[2 * i + 1]
        n = max(lay["owners"])
        cmap = ListedColormap(palette[:n])
        strip.imshow(
            [lay["owners"]],
            aspect="auto",
            cmap=cmap,
            vmin=0.5,
            vmax=n + 0.5,
            extent=(0, 1, 0, 1),
            interpolation="nearest",
        )
        if len(lay["vnodes"]) <= 200:
            for pos, _ in lay["vnodes"]:
                strip.plot([pos, pos], [0, 1], color="black", lw=0.6)
        shares = ", ".join(f"{r}: {v:.1%}" for r, v in sorted(lay["shares"].items()))
        size = lay["slots"] if lay["slots"] <= 1 << 20 else "2^64"
        what = (
            f"table of {size} entries, coloured by owner"
            if lay["table"]
            else f"ring of {size} positions, arcs coloured by owner"
        )
        strip.set_title(
            f"{lay['hash']}: {what} (replica {shares})",
            fontsize=9,
            loc="left",
        )
        strip.set_yticks([])
        strip.set_xticks([])
        strip.set_xlim(0, 1)
        bins = 512 if lay["slots"] <= 1 << 20 else 256
        hist.hist(lay["key_positions"], bins=bins, range=(0, 1), color=HASH_COLORS[lay["hash"]])
        where = (
            f"; they hit {lay['distinct_key_slots']} distinct slots"
            if lay["distinct_key_slots"] is not None
            else ""
        )
        hist.set_title(
            f"where {len(lay['key_positions']):,} random 6-digit request ids land{where}",
            fontsize=8,
            loc="left",
        )
        hist.set_xlim(0, 1)
        hist.set_ylabel("ids", fontsize=8)
    axes[-1].set_xlabel("ring position / ring size")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_compare(exp1: Sequence[BalanceRun], exp2: Sequence[BalanceRun], path: Any) -> Any:
    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(exp1))
    for k, run in enumerate(exp1):
        xs = [i + (k - (len(exp1) - 1) / 2) * width for i in range(run.n)]
        bars = left.bar(xs, run.values, width, color=HASH_COLORS.get(run.hash), label=run.hash)
        left.bar_label(bars, fmt="%d", fontsize=7)
    if exp1:
        left.axhline(exp1[0].mean, color="black", ls="--", lw=1)
        left.set_xticks(range(exp1[0].n), [f"slot {i + 1}" for i in range(exp1[0].n)])
        left.set_title(f"Experiment 1 again: N = {exp1[0].n}, {exp1[0].requests:,} requests")
    left.set_ylabel("requests answered")
    left.legend(fontsize=8)
    for h in dict.fromkeys(r.hash for r in exp2):
        mine = [r for r in exp2 if r.hash == h]
        right.plot(
            [r.n for r in mine],
            [r.max_over_mean for r in mine],
            "o-",
            color=HASH_COLORS.get(h),
            label=h,
        )
    right.axhline(1, color="black", lw=0.8)
    right.set_xlabel("N replicas")
    right.set_ylabel("max / mean (1 = even)")
    right.set_title("Experiment 2 again: the busiest replica against the average")
    right.legend(fontsize=8)
    fig.suptitle("Experiment 4: the assignment's hash, the seed's i % 512 and the default")
    return save_figure(fig, path)


def report4(
    s: Settings, exp1: Sequence[BalanceRun], exp2: Sequence[BalanceRun], ids: Sequence[str]
) -> Report:
    layouts = [ring_layout(h, s.replicas, ids) for h in s.hashes]
    vnode_rows = [
        {"hash": lay["hash"], "slots": lay["slots"], "replica": r, "position": p}
        for lay in layouts
        if lay["slots"] <= 1 << 20
        for p, r in lay["vnodes"]
    ]
    files = [
        write_csv(s.out / "exp4_vnodes.csv", vnode_rows),
        plot_compare(exp1, exp2, s.out / "exp4_compare.png"),
        plot_ring(layouts, s.out / "exp4_ring.png"),
    ]
    by_hash = {r.hash: r for r in exp1}
    rows = []
    for lay in layouts:
        run = by_hash.get(lay["hash"])
        measured = (
            " / ".join(f"{v / run.answered:.1%}" for v in run.values)
            if run and run.answered
            else "—"
        )
        shares = " / ".join(f"{v:.1%}" for _, v in sorted(lay["shares"].items()))
        rows.append([lay["hash"], shares, measured, lay["distinct_key_slots"] or "(2^64 ring)"])
    md = md_table(
        [
            "hash",
            "share per replica (ring arcs, or table entries)",
            "measured share (exp 1)",
            "distinct slots the ids hit",
        ],
        rows,
    )
    worst = {h: max(r.max_over_mean for r in exp2 if r.hash == h) for h in s.hashes}
    return Report(
        "exp4",
        "Experiment 4: hash functions compared, and why the assignment's skew",
        f"![exp4 compare](exp4_compare.png)\n\n![exp4 ring](exp4_ring.png)\n\n{md}\n\n"
        + md_table(["hash", "worst max/mean over N = 2..6"], [[h, v] for h, v in worst.items()]),
        headline={"worst_max_over_mean": worst},
        files=[f.name for f in files],
    )
