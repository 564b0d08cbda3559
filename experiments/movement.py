"""Beyond the seed: how many keys move when the balancer scales, against the ideal.

Through the real balancer: send a fixed set of ids and note which replica answers each, then
``/add`` one replica (N -> N+1) or ``/rm`` one chosen at random (N -> N-1), resend, and
compare. A consistent ring moves only the keys it must: on an add, only keys that go to the
new replica, ideally 1/(N+1) of them; on a removal, only the removed replica's keys, ideally
1/N. Keys that move between two replicas that stayed are movement no scaling called for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._balancer import Balancer
from ._load import uniform_ids
from ._results import HASH_COLORS, Report, md_table, panels, save_figure, write_csv
from ._settings import Settings


@dataclass(frozen=True)
class Step:
    hash: str
    change: str  # "add" or "rm"
    replica: str  # the one added or removed
    before: int  # N before
    after: int  # N after
    compared: int  # ids answered both times
    moved: float  # fraction of compared ids answered by another replica after the change
    ideal: float  # 1 / max(before, after)
    #: The removed replica's share before (rm) or the new one's share after (add): what a
    #: consistent ring moves, whatever the hash's balance.
    own_share: float
    #: Fraction of compared ids that moved between two replicas present both times.
    between_others: float
    failed: int

    def row(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "change": self.change,
            "replica": self.replica,
            "N_before": self.before,
            "N_after": self.after,
            "compared": self.compared,
            "moved": round(self.moved, 4),
            "ideal": round(self.ideal, 4),
            "own_share": round(self.own_share, 4),
            "between_others": round(self.between_others, 4),
            "failed": self.failed,
        }

    @property
    def label(self) -> str:
        return f"{self.before}→{self.after}"


async def _owners(b: Balancer, ids: Sequence[str], s: Settings, label: str) -> tuple[dict, int]:
    load = await s.load(b, ids, label)
    return load.owners(), load.failed + load.cut + load.not_sent


def compare(
    hash_name: str,
    change: str,
    replica: str,
    before_names: Sequence[str],
    after_names: Sequence[str],
    before: dict[str, str],
    after: dict[str, str],
    failed: int,
) -> Step:
    """The movement between two passes over the same ids."""
    keys = [k for k in before if k in after]
    n = len(keys) or 1
    moved = [k for k in keys if before[k] != after[k]]
    stayed = set(before_names) & set(after_names)
    between = [k for k in moved if before[k] in stayed and after[k] in stayed]
    owners = before if change == "rm" else after
    own = sum(owners[k] == replica for k in keys)
    return Step(
        hash=hash_name,
        change=change,
        replica=replica,
        before=len(before_names),
        after=len(after_names),
        compared=len(keys),
        moved=len(moved) / n,
        ideal=1 / max(len(before_names), len(after_names)),
        own_share=own / n,
        between_others=len(between) / n,
        failed=failed,
    )


async def experiment_movement(s: Settings) -> list[Step]:
    ids = uniform_ids(s.requests, s.rng("movement"))
    sizes = sorted(s.sizes)
    steps: list[Step] = []
    for h in s.hashes:
        pick = s.rng(f"movement-rm-{h}")
        async with s.balancer(h, sizes[0]) as b:
            names = await b.rep()
            owners, failed = await _owners(b, ids, s, f"move {h} N={len(names)}")
            # Up one at a time to the largest N, then down one at a time to the smallest.
            plan = ["add"] * (sizes[-1] - sizes[0]) + ["rm"] * (sizes[-1] - sizes[0])
            for change in plan:
                if change == "add":
                    after_names = await b.add(1)
                    (replica,) = set(after_names) - set(names)
                else:
                    replica = pick.choice(names)
                    after_names = await b.rm(1, [replica])
                label = f"move {h} {change} {len(names)}→{len(after_names)}"
                new_owners, new_failed = await _owners(b, ids, s, label)
                steps.append(
                    compare(
                        h,
                        change,
                        replica,
                        names,
                        after_names,
                        owners,
                        new_owners,
                        failed + new_failed,
                    )
                )
                names, owners, failed = after_names, new_owners, new_failed
    return steps


def report_movement(s: Settings, steps: Sequence[Step]) -> Report:
    files = [write_csv(s.out / "movement.csv", [st.row() for st in steps])]
    hashes = list(dict.fromkeys(st.hash for st in steps))
    fig, axes = panels(len(hashes), 4.6, 3.9)
    for ax, h in zip(axes, hashes, strict=True):
        mine = [st for st in steps if st.hash == h]
        xs = range(len(mine))
        color = HASH_COLORS.get(h, "grey")
        ax.bar(xs, [st.moved for st in mine], color=color, alpha=0.8, label="moved (measured)")
        ax.bar(
            xs,
            [st.between_others for st in mine],
            color="black",
            alpha=0.6,
            label="of which between replicas that stayed",
        )
        ax.plot(xs, [st.ideal for st in mine], "k_", ms=18, mew=2, ls="", label="ideal 1/max(N)")
        ax.set_xticks(list(xs), [("+" if st.change == "add" else "-") + st.label for st in mine])
        ax.tick_params(axis="x", labelsize=8, rotation=45)
        ax.set_title(h)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("fraction of ids that change replica")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Keys moved by /add (+) and /rm (-) of one replica, {s.requests:,} fixed ids")
    files.append(save_figure(fig, s.out / "movement.png"))
    rows = [
        [
            st.hash,
            f"{st.change} {st.replica}",
            st.label,
            st.moved,
            st.ideal,
            st.own_share,
            st.between_others,
            st.failed,
        ]
        for st in steps
    ]
    md = md_table(
        [
            "hash",
            "change",
            "N",
            "moved",
            "ideal",
            "share of the added/removed replica",
            "moved between others",
            "failed",
        ],
        rows,
    )
    return Report(
        "movement",
        "Beyond the seed: keys moved when scaling N -> N+1 and N -> N-1",
        f"![movement](movement.png)\n\n{md}",
        headline={
            f"{st.hash} {st.change} {st.label}": {"moved": round(st.moved, 3), "ideal": st.ideal}
            for st in steps
        },
        files=[f.name for f in files],
    )
