"""Whole-table walking: discover the tables top-down, compress them into runs bottom-up.

This is the fast path behind ptdump and the analyses. It computes the event stream that
mm/ptdump.c's callbacks would hand to note_page() (spec §2.2: leaves at any level, every PTE
slot, holes with their depth, nothing for table entries or non-present non-leaf entries), but
one event per *run* of equal entries instead of one per entry, decoding whole tables per numpy
operation:

1. `discover()` reads the tables level by level. Tables are de-duplicated by physical address,
   so a table shared by a million upper entries (KASAN's early shadow, or a hostile image) is
   read and decoded once.
2. `compress()` works upwards. A table's run list is its own leaves and holes plus its
   children's run lists, shifted to the entry's VA and with permissions folded through the
   entry (x86 effective_prot(), v5.8+); adjacent runs that are equal are merged. A table shared
   by many entries is therefore merged once and copied as a few runs, never walked again.

The result is the root table's run list: starts (VA offsets), and for each run the note_page()
level, the first entry's raw value, the ptdump key (value & key mask) and the effective
permission word. Runs carry the hardware level too, so consumers know the entry size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import PagewalkError
from .memory.base import MappedMemory
from .mode import Kind, PagingMode

SKIP_KLEVEL = -3  # klevel of entries the kernel neither reports nor descends into (Kind.SKIP)
MISSING_BASE = -10  # klevel MISSING_BASE - k: an entry at level k whose table the image does not hold


def missing_level(klevel: int) -> int | None:
    """The note_page level of the entry behind a missing-table run, None for other runs."""
    return MISSING_BASE - klevel if klevel <= MISSING_BASE else None
MAX_RUNS = 4_000_000  # beyond this a walk is a page-table bomb; see README "Limits"
_CHUNK_TABLES = 1024  # bottom-level tables decoded per numpy batch (bounds peak memory)


@dataclass
class LevelTables:
    """All distinct tables of one hardware level, decoded."""

    pas: np.ndarray  # uint64, sorted, unique
    ok: np.ndarray  # bool: the image holds the table
    entries: np.ndarray | None  # (n, entries) raw values; None for the bottom level (read in chunks)
    kind: np.ndarray | None  # Kind per entry
    child: np.ndarray | None  # index into the next level's tables, -1 where not a table entry


@dataclass
class Runs:
    """Run lists of many tables in CSR form: runs of table t are off[t]:off[t+1]."""

    off: np.ndarray  # int64, len n+1
    start: np.ndarray  # uint64: VA offset of the run in its table's span
    klevel: np.ndarray  # int8: note_page level (hole depth for holes); see missing_level()
    hw: np.ndarray  # int8: hardware level of the entries in the run
    val: np.ndarray  # uint64: raw value of the run's first entry (0 for holes)
    key: np.ndarray  # uint64: val & ptdump key mask
    eff: np.ndarray  # uint64: permission word folded from this table down
    zero: np.ndarray  # bool: the value is 0 (x86 note_page: effective protection 0)

    def __len__(self) -> int:
        return len(self.start)


def discover(mem: MappedMemory, mode: PagingMode, root_pa: int) -> list[LevelTables]:
    """Read and classify every distinct table reachable from `root_pa`, one level at a time."""
    out: list[LevelTables] = []
    pas = np.array([root_pa], dtype=np.uint64)
    nlev = len(mode.levels)
    for i, lvl in enumerate(mode.levels):
        if i == nlev - 1:
            _, ok = mem.file_offsets(pas, lvl.entries * mode.entry_bytes)
            out.append(LevelTables(pas, ok, None, None, None))
            break
        ent, ok = mem.gather_tables(pas, lvl.entries, mode.dtype)
        kind, addr = mode.classify(i, ent)
        kind = np.where(ok[:, None], kind, np.uint8(Kind.SKIP))
        is_table = kind == Kind.TABLE
        child_pas = addr[is_table]
        nxt, inv = sorted_unique(child_pas)
        child = np.full(kind.shape, -1, dtype=np.int64)
        child[is_table] = inv.reshape(-1)
        out.append(LevelTables(pas, ok, ent, kind, child))
        pas = nxt
    return out


def sorted_unique(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(a, return_inverse=True) by sorting (much faster than numpy 2's hash path here)."""
    order = np.argsort(a, kind="stable")
    s = a[order]
    first = np.ones(len(s), dtype=bool)
    first[1:] = s[1:] != s[:-1]
    ids = np.cumsum(first) - 1
    inv = np.empty(len(a), dtype=np.int64)
    inv[order] = ids
    return s[first], inv


def _merge(table: np.ndarray, *cols: np.ndarray) -> np.ndarray:
    """Mask of runs to keep: the first of every group of adjacent equal runs in one table."""
    keep = np.ones(len(table), dtype=bool)
    if len(table) > 1:
        same = table[1:] == table[:-1]
        for c in cols:
            same &= c[1:] == c[:-1]
        keep[1:] = ~same
    return keep


def _bottom_runs(mem: MappedMemory, mode: PagingMode, lt: LevelTables) -> Runs:
    """Run lists of every bottom-level (PTE) table: every slot is a note_page() event."""
    i = len(mode.levels) - 1
    lvl = mode.levels[i]
    n = len(lt.pas)
    N = lvl.entries
    parts = []
    kmask = np.uint64(mode.ptdump_key_mask)
    for c0 in range(0, n, _CHUNK_TABLES):
        pas = lt.pas[c0 : c0 + _CHUNK_TABLES]
        ent, _ = mem.gather_tables(pas, N, mode.dtype)
        e = ent.astype(np.uint64, copy=False)
        key = e & kmask
        zero = e == 0
        eff = mode.perm(i, e)
        eff[zero] = 0
        # a run starts at slot 0 of every table and wherever (key, eff, zero) changes
        change = np.ones(e.shape, dtype=bool)
        change[:, 1:] = (key[:, 1:] != key[:, :-1]) | (eff[:, 1:] != eff[:, :-1]) | (zero[:, 1:] != zero[:, :-1])
        idx = np.flatnonzero(change)
        parts.append(
            (
                idx // N + c0,
                (idx % N).astype(np.uint64) << np.uint64(lvl.shift),
                e.reshape(-1)[idx],
                key.reshape(-1)[idx],
                eff.reshape(-1)[idx],
                zero.reshape(-1)[idx],
            )
        )
        del ent, e, key, zero, eff, change
        release = getattr(mem, "release", None)
        if release is not None and n > _CHUNK_TABLES:
            release()  # the chunk was copied out: drop the file pages from our RSS
    if parts:
        t, start, val, key, eff, zero = (np.concatenate(p) for p in zip(*parts))
    else:
        t = np.zeros(0, np.int64)
        start = val = key = eff = np.zeros(0, np.uint64)
        zero = np.zeros(0, bool)
    del parts
    off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(t, minlength=n), out=off[1:])
    klevel = np.full(len(t), lvl.klevel, dtype=np.int8)
    hw = np.full(len(t), i, dtype=np.int8)
    return Runs(off, start, klevel, hw, val, key, eff, zero)


def _upper_runs(mode: PagingMode, i: int, lt: LevelTables, child: Runs, child_ok: np.ndarray) -> Runs:
    """Run lists of the tables of level `i` from their entries and their children's run lists."""
    lvl = mode.levels[i]
    n, N = lt.kind.shape
    kind = lt.kind.reshape(-1)
    ent = lt.entries.reshape(-1).astype(np.uint64, copy=False)
    cidx = lt.child.reshape(-1)
    ccount = np.diff(child.off)
    is_tab = kind == Kind.TABLE
    tab_ok = is_tab.copy()
    tab_ok[is_tab] = child_ok[cidx[is_tab]]  # the image holds the child table
    missing = is_tab & ~tab_ok
    # SKIP entries get a run too: no note_page() event happens in them (the run before goes on),
    # but a consumer must know where they are: a range start or an address marker inside one
    # is not an event (the kernel's next event is the first entry after it)
    skip = kind == Kind.SKIP
    own = (kind == Kind.HOLE) | (kind == Kind.LEAF) | missing | skip
    cnt = np.zeros(n * N, dtype=np.int64)
    cnt[own] = 1
    cnt[tab_ok] = ccount[cidx[tab_ok]]
    total = int(cnt.sum())
    if total > MAX_RUNS:
        raise PagewalkError(
            f"the page tables expand to more than {MAX_RUNS} distinct runs at the {lvl.name} level "
            "(many entries share tables with varied contents: a page-table bomb?)"
        )
    pos = np.zeros(n * N + 1, dtype=np.int64)
    np.cumsum(cnt, out=pos[1:])
    entry_va = (np.arange(n * N, dtype=np.uint64) % np.uint64(N)) << np.uint64(lvl.shift)
    table_of = np.arange(n * N, dtype=np.int64) // N
    r_table = np.repeat(table_of, cnt)
    r_start = np.empty(total, np.uint64)
    r_klevel = np.empty(total, np.int8)
    r_hw = np.empty(total, np.int8)
    r_val = np.empty(total, np.uint64)
    r_key = np.empty(total, np.uint64)
    r_eff = np.empty(total, np.uint64)
    r_zero = np.empty(total, bool)
    # the entry's own run: a hole, a leaf, or a table the image does not hold
    p = pos[:-1][own]
    hole = kind[own] == Kind.HOLE
    leaf = kind[own] == Kind.LEAF
    e_own = ent[own]
    r_start[p] = entry_va[own]
    sk = kind[own] == Kind.SKIP
    r_klevel[p] = np.where(
        hole, lvl.hole_depth, np.where(leaf, lvl.klevel, np.where(sk, SKIP_KLEVEL, MISSING_BASE - lvl.klevel))
    )
    r_hw[p] = i
    r_val[p] = np.where(hole, np.uint64(0), e_own)
    r_key[p] = np.where(hole | sk, np.uint64(0), np.where(leaf, e_own & np.uint64(mode.ptdump_key_mask), e_own))
    r_eff[p] = np.where(leaf, mode.perm(i, e_own), np.uint64(0))
    r_zero[p] = hole
    # the children's runs, moved to the entry's VA, permissions folded through the entry
    if tab_ok.any():
        tc = cnt[tab_ok]
        src0 = child.off[cidx[tab_ok]]
        grp_start = pos[:-1][tab_ok]
        rep_dst0 = np.repeat(grp_start, tc)
        k = np.arange(int(tc.sum()), dtype=np.int64) - np.repeat(np.cumsum(tc) - tc, tc)
        dst = rep_dst0 + k
        src = np.repeat(src0, tc) + k
        parent_perm = np.repeat(mode.perm(i, ent[tab_ok]), tc)
        r_start[dst] = np.repeat(entry_va[tab_ok], tc) + child.start[src]
        r_klevel[dst] = child.klevel[src]
        r_hw[dst] = child.hw[src]
        r_val[dst] = child.val[src]
        r_key[dst] = child.key[src]
        cz = child.zero[src]
        r_zero[dst] = cz
        r_eff[dst] = np.where(cz, np.uint64(0), mode.perm_combine(parent_perm, child.eff[src]))
    keep = _merge(r_table, r_klevel, r_key, r_eff, r_zero)
    off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(r_table[keep], minlength=n), out=off[1:])
    return Runs(off, r_start[keep], r_klevel[keep], r_hw[keep], r_val[keep], r_key[keep], r_eff[keep], r_zero[keep])


def compress(mem: MappedMemory, mode: PagingMode, tables: list[LevelTables]) -> Runs:
    """The root table's run list, built bottom-up from `discover()`'s tables."""
    runs = _bottom_runs(mem, mode, tables[-1])
    for i in range(len(tables) - 2, -1, -1):
        runs = _upper_runs(mode, i, tables[i], runs, tables[i + 1].ok)
    return runs


def root_runs(mem: MappedMemory, mode: PagingMode, root_pa: int) -> Runs:
    """Discover and compress: the whole address space under `root_pa` as runs."""
    return compress(mem, mode, discover(mem, mode, root_pa))
