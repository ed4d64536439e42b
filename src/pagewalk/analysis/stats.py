"""Statistics of one view's page tables: tables per level, their bytes, leaves by size, sharing.

Two ways of counting, both useful:

* *entries*: every distinct table once (as the tables sit in memory, `discover()`'s
  de-duplicated view): how many tables, how many bytes, what their entries are;
* *mapped*: per reference, as the address space sees them (a table shared by 512 entries maps
  512 times): bytes mapped by leaves of each size, from the interval arrays.

>>> s = stats(target, "kernel")  # doctest: +SKIP
>>> s.table_bytes, [(lv.name, lv.tables) for lv in s.levels]  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..mode import HwKind, Kind
from ..runs import discover
from .mappings import FAULT, MAPPED, MISSING, STATUS_NAMES, UNWALKED, arch_bits, compute

U64 = np.uint64


@dataclass
class LevelStats:
    level: int  # hardware level, 0 = root
    name: str
    entry_span: int  # bytes one entry maps
    tables: int  # distinct tables the image holds
    tables_missing: int  # distinct tables referenced but not in the image
    table_bytes: int
    references: int  # entries of the level above pointing at these tables (1 for the root)
    shared_tables: int  # tables referenced more than once
    max_references: int
    entries: dict[str, int]  # empty / table / leaf / not_present / reserved / hidden

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class LeafSize:
    size: int
    level: str
    entries: int  # distinct leaf entries of this size (each table counted once)
    mapped_bytes: int  # bytes the address space maps with them (per reference)
    mapped_pages: int  # mapped_bytes / size

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Stats:
    view: str | None
    mode: str
    root_pa: int
    levels: list[LevelStats]
    leaves: list[LeafSize]
    shared: list[dict]  # the most-referenced tables: level, pa, references
    intervals: dict[str, int]  # interval counts by status
    mapped_bytes: int
    table_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.table_bytes = sum(lv.table_bytes for lv in self.levels)

    def as_dict(self) -> dict:
        return {
            "view": self.view,
            "mode": self.mode,
            "root_pa": self.root_pa,
            "table_bytes": self.table_bytes,
            "mapped_bytes": self.mapped_bytes,
            "levels": [lv.as_dict() for lv in self.levels],
            "leaves": [x.as_dict() for x in self.leaves],
            "shared": self.shared,
            "intervals": self.intervals,
        }


def _entry_counts(mode, i: int, e: np.ndarray, kind: np.ndarray | None, valid) -> dict[str, int]:
    e = e.astype(U64, copy=False)
    hwk, _ = mode.hw_classify(i, e)
    empty = e == 0
    leaf = hwk == HwKind.LEAF
    v = valid(e)
    out = {
        "empty": int(empty.sum()),
        "leaf": int(leaf.sum()),
        "not_present": int((~empty & ~v).sum()),
        "reserved": int((v & (hwk == HwKind.FAULT)).sum()),
    }
    if kind is not None:
        table = (kind == Kind.TABLE) & (hwk == HwKind.TABLE)
        hidden = ((kind == Kind.HOLE) | (kind == Kind.SKIP)) & (hwk != HwKind.FAULT) & ~empty & v
        out["table"] = int(table.sum())
        out["hidden"] = int(hidden.sum())
    else:
        out["table"] = out["hidden"] = 0
    return out


def stats(target, view: str = "kernel", *, top_shared: int = 10) -> Stats:
    """Tables per level, bytes of page tables, leaves by size and sharing of one view.

    >>> stats(resolve(open_image("core.elf"))).table_bytes  # doctest: +SKIP
    1138688
    """
    mode = target.mode_for(view)
    root = target.root(view)
    mem = target.mem
    tables = discover(mem, mode, root)
    valid = arch_bits(mode).valid
    levels: list[LevelStats] = []
    shared: list[tuple[int, int, int]] = []
    refs = np.ones(1, np.int64)
    for i, lt in enumerate(tables):
        lvl = mode.levels[i]
        tb = lvl.entries * mode.entry_bytes
        if lt.entries is not None:
            counts = _entry_counts(mode, i, lt.entries[lt.ok], lt.kind[lt.ok], valid.for_level(i, len(tables)))
        else:
            counts = {"empty": 0, "leaf": 0, "not_present": 0, "reserved": 0, "table": 0, "hidden": 0}
            pas = lt.pas[lt.ok]
            for c0 in range(0, len(pas), 1024):
                ent, _ = mem.gather_tables(pas[c0 : c0 + 1024], lvl.entries, mode.dtype)
                for k, v in _entry_counts(mode, i, ent, None, valid.for_level(i, len(tables))).items():
                    counts[k] += v
        sh = refs > 1
        for t in np.flatnonzero(sh).tolist():
            shared.append((int(refs[t]), i, int(lt.pas[t])))
        levels.append(LevelStats(
            level=i, name=lvl.name, entry_span=lvl.entry_span, tables=int(lt.ok.sum()),
            tables_missing=int((~lt.ok).sum()) + lt.absent_extra, table_bytes=int(lt.ok.sum()) * tb, references=int(refs.sum()),
            shared_tables=int(sh.sum()), max_references=int(refs.max()) if len(refs) else 0, entries=counts,
        ))
        if lt.child is not None and i + 1 < len(tables):
            c = lt.child[lt.ok].reshape(-1)
            refs = np.bincount(c[c >= 0], minlength=len(tables[i + 1].pas)).astype(np.int64)
    m = compute(mem, mode, root, view, tables=tables)
    mapped = m.status == MAPPED
    leaves: list[LeafSize] = []
    for i, lv in enumerate(levels):
        sel = mapped & (m.level == i)
        nbytes = int(m.size[sel].sum(dtype=U64))
        if lv.entries["leaf"] or nbytes:
            leaves.append(LeafSize(lv.entry_span, lv.name, lv.entries["leaf"], nbytes, nbytes // lv.entry_span))
    shared.sort(key=lambda x: -x[0])
    counts = np.bincount(m.status.astype(np.int64), minlength=len(STATUS_NAMES))
    return Stats(
        view=view, mode=mode.name, root_pa=root, levels=levels, leaves=leaves,
        shared=[{"level": mode.levels[i].name, "pa": pa, "references": r} for r, i, pa in shared[:top_shared]],
        intervals={name: int(counts[k]) for k, name in enumerate(STATUS_NAMES)},
        mapped_bytes=int(m.size[mapped].sum(dtype=U64)),
    )


__all__ = ["FAULT", "MISSING", "UNWALKED", "LeafSize", "LevelStats", "Stats", "stats"]
