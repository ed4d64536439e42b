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

`root_runs()` holds the whole list (and refuses more than MAX_RUNS runs). `iter_runs()` streams
the same address space as chunks in VA order, each of at most about STREAM_CHUNK_RUNS runs, so
memory is bounded by the number of distinct tables, not by the addresses they map (README
"Limits"); see `_Stream`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .errors import PagewalkError, run_limit_error
from .memory.base import MappedMemory
from .mode import Kind, PagingMode

SKIP_KLEVEL = -3  # klevel of entries the kernel neither reports nor descends into (Kind.SKIP)
MISSING_BASE = -10  # klevel MISSING_BASE - k: an entry at level k whose table the image does not hold


def missing_level(klevel: int) -> int | None:
    """The note_page level of the entry behind a missing-table run, None for other runs."""
    return MISSING_BASE - klevel if klevel <= MISSING_BASE else None
MAX_RUNS = 4_000_000  # beyond this a walk is a page-table bomb; see README "Limits"
ABSENT_COLLAPSE = 1024  # absent tables of one level kept apart; the rest share one row
_CHUNK_TABLES = 1024  # bottom-level tables decoded per numpy batch (bounds peak memory)


@dataclass
class LevelTables:
    """All distinct tables of one hardware level, decoded."""

    pas: np.ndarray  # uint64, sorted, unique
    ok: np.ndarray  # bool: the image holds the table
    entries: np.ndarray | None  # (n, entries) raw values; None for the bottom level (read in chunks)
    kind: np.ndarray | None  # Kind per entry
    child: np.ndarray | None  # index into the next level's tables, -1 where not a table entry
    # distinct tables the image does not hold beyond those in `pas`: past ABSENT_COLLAPSE of them,
    # entries naming absent tables share one absent row (their runs show the parent entry anyway)
    absent_extra: int = 0


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
    # partial tables (s390 TF/TL): mode.extra["index_window"](level, parent entries or None for
    # the root) gives each table's present indexes [lo, hi); entries outside are holes. A table
    # reached through entries with different windows gets their intersection.
    window = mode.extra.get("index_window")
    if window is not None:
        lo, hi = window(0, None)
    extra = 0
    for i, lvl in enumerate(mode.levels):
        if i == nlev - 1:
            _, ok = mem.file_offsets(pas, lvl.entries * mode.entry_bytes)
            out.append(LevelTables(pas, ok, None, None, None, extra))
            break
        ent, ok = mem.gather_tables(pas, lvl.entries, mode.dtype)
        kind, addr = mode.classify(i, ent)
        kind = np.where(ok[:, None], kind, np.uint8(Kind.SKIP))
        if window is not None:
            col = np.arange(lvl.entries, dtype=np.uint64)[None, :]
            kind = np.where((col < lo[:, None]) | (col >= hi[:, None]), np.uint8(Kind.HOLE), kind)
        is_table = kind == Kind.TABLE
        child_pas = addr[is_table]
        nxt, inv = sorted_unique(child_pas)
        nxt, inv, next_extra = _collapse_absent(mem, mode, i + 1, nxt, inv)
        child = np.full(kind.shape, -1, dtype=np.int64)
        child[is_table] = inv.reshape(-1)
        out.append(LevelTables(pas, ok, ent, kind, child, extra))
        extra = next_extra
        if window is not None:
            plo, phi = window(i + 1, ent[is_table].astype(np.uint64))
            lo, hi = np.zeros(len(nxt), np.uint64), np.full(len(nxt), np.iinfo(np.uint64).max, np.uint64)
            np.maximum.at(lo, inv, plo)
            np.minimum.at(hi, inv, phi)
        pas = nxt
    return out


def _collapse_absent(
    mem: MappedMemory, mode: PagingMode, level: int, pas: np.ndarray, inv: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Past ABSENT_COLLAPSE distinct tables of `level` that the image does not hold (a wrong root,
    corrupt entries), let them all share the first absent one's row: memory then follows the
    tables the image holds, not the addresses its entries name. Returns pas, inv and the number
    of absent tables folded away."""
    _, ok = mem.file_offsets(pas, mode.levels[level].entries * mode.entry_bytes)
    absent = np.flatnonzero(~ok)
    if len(absent) <= ABSENT_COLLAPSE:
        return pas, inv, 0
    keep = ok.copy()
    keep[absent[0]] = True
    new_index = np.cumsum(keep) - 1
    new_index[~keep] = new_index[absent[0]]
    return pas[keep], new_index[inv], len(absent) - 1


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


def _upper_runs(
    mode: PagingMode, i: int, lt: LevelTables, child: Runs, child_ok: np.ndarray, limit: int | None = MAX_RUNS
) -> Runs:
    """Run lists of the tables of level `i` from their entries and their children's run lists.

    More than `limit` runs in all raises PagewalkError (None: no limit; the caller bounds them).
    """
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
    if limit is not None and total > limit:
        raise PagewalkError(
            f"the page tables expand to more than {limit} distinct runs at the {lvl.name} level "
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


# ---- streaming ------------------------------------------------------------------------------
STREAM_CHUNK_RUNS = 1 << 16  # the bound on the runs of one computed chunk (memory: ~40 bytes a run)
CACHE_TABLE_RUNS = 1 << 18  # a shared table's run list is kept only up to this many runs
CACHE_RUNS = 1 << 19  # and all kept lists together up to this many (about 20 MB)
# runs a streamed walk may produce before it is stopped: 2^25, about 3 GB of ptdump text and a
# minute or two of output (a real kernel makes a few million at most; more is a bomb with varied
# contents under shared tables, whose output has no useful end). 0 or None: no limit.
MAX_STREAM_RUNS = 1 << 25
_BIG = 2.0**62  # expansion bounds are float64, capped here


def _empty_runs(n: int = 0) -> Runs:
    z = np.zeros(0, np.uint64)
    return Runs(np.zeros(n + 1, np.int64), z, np.zeros(0, np.int8), np.zeros(0, np.int8), z, z, z, np.zeros(0, bool))


def _concat_runs(parts: list[Runs]) -> Runs:
    """Run lists of several tables (CSR each) as one CSR, in order."""
    if len(parts) == 1:
        return parts[0]
    offs = [parts[0].off]
    base = int(parts[0].off[-1])
    for r in parts[1:]:
        offs.append(r.off[1:] + base)
        base += int(r.off[-1])
    cols = ("start", "klevel", "hw", "val", "key", "eff", "zero")
    return Runs(np.concatenate(offs), *(np.concatenate([getattr(r, c) for r in parts]) for c in cols))


def _slice_runs(r: Runs, a: int, b: int) -> Runs:
    """Runs a:b of a one-table run list, as a one-table run list."""
    return Runs(np.array([0, b - a], np.int64), r.start[a:b], r.klevel[a:b], r.hw[a:b], r.val[a:b], r.key[a:b], r.eff[a:b], r.zero[a:b])


class _Stream:
    """The root's run list, produced in VA order a bounded chunk at a time.

    Every distinct table gets an upper bound of the runs its subtree can expand to (a bottom
    table: its entry count; an upper one: the sum over its entries of 1 or the child's bound).
    Shared tables (two or more referencing entries) whose bound is small get their run list
    computed once, bottom-up, and kept (memory: CACHE_RUNS); their bound becomes their exact
    length, so a bomb of identical contents collapses to a few runs at every level. The walk
    then goes down from the root: a table whose bound fits in a chunk is compressed whole (by
    `_upper_runs()`, reusing kept lists); a bigger one is cut into groups of consecutive entries
    that fit, and an entry that alone does not fit is descended into, its permission folded
    into the ones above. Chunks are not merged with each other: a consumer sees equal adjacent
    runs as one (the kernel's note_page() ignores an event equal to its state).
    """

    def __init__(self, mem: MappedMemory, mode: PagingMode, root_pa: int, chunk_runs: int, max_runs: int | None):
        self.mem = mem
        self.mode = mode
        self.tables = discover(mem, mode, root_pa)
        self.nlev = len(self.tables)
        self.chunk = max(1, int(chunk_runs))
        self.max_runs = max_runs
        self.emitted = 0
        self.read_tables = 0
        self.cache: list[dict[int, Runs]] = [{} for _ in range(self.nlev)]
        self.bound: list[np.ndarray] = [np.zeros(0)] * self.nlev
        self._bounds_and_cache()

    # -- bounds and the cache of shared tables --------------------------------------------------
    def _entry_bounds(self, i: int, rows) -> np.ndarray:
        """Per entry of tables `rows` of level i: the runs it can expand to."""
        lt = self.tables[i]
        child = lt.child[rows]
        eb = np.ones(child.shape, dtype=np.float64)
        tab = child >= 0
        if tab.any():
            c = child[tab]
            nxt = self.tables[i + 1]
            eb[tab] = np.where(nxt.ok[c], self.bound[i + 1][c], 1.0)
        return eb

    def _bounds_and_cache(self) -> None:
        last = self.nlev - 1
        self.bound[last] = np.full(len(self.tables[last].pas), float(self.mode.levels[last].entries))
        budget = CACHE_RUNS
        for i in range(last, -1, -1):
            if i < last:
                self.bound[i] = np.minimum(self._entry_bounds(i, slice(None)).sum(axis=1), _BIG)
            if i == 0 or budget <= 0:
                continue
            up = self.tables[i - 1]
            refs = np.bincount(up.child[up.child >= 0], minlength=len(self.tables[i].pas))
            cand = np.flatnonzero((refs >= 2) & self.tables[i].ok & (self.bound[i] <= CACHE_TABLE_RUNS))
            # compute them in batches whose bounds fit a chunk (bounds the work memory)
            k = 0
            while k < len(cand) and budget > 0:
                acc = 0.0
                j = k
                while j < len(cand) and (j == k or acc + self.bound[i][cand[j]] <= self.chunk * 4):
                    acc += self.bound[i][cand[j]]
                    j += 1
                rows = cand[k:j]
                runs = self._subtree(i, rows)
                self._released()
                for n, t in enumerate(rows.tolist()):
                    a, b = int(runs.off[n]), int(runs.off[n + 1])
                    if b - a > budget:
                        budget = 0
                        break
                    self.cache[i][t] = _slice_runs(runs, a, b)
                    self.bound[i][t] = float(b - a)
                    budget -= b - a
                k = j

    def _released(self) -> None:
        if self.read_tables >= _CHUNK_TABLES:
            release = getattr(self.mem, "release", None)
            if release is not None:
                release()  # the tables were copied out: drop the file pages from our RSS
            self.read_tables = 0

    # -- compression of a part of the tree --------------------------------------------------------
    def _subtree(self, i: int, rows: np.ndarray, lo: int = 0, hi: int | None = None) -> Runs:
        """Run lists (CSR) of the tables `rows` of level i, entries lo:hi, from kept lists and below."""
        lt = self.tables[i]
        if i == self.nlev - 1:
            self.read_tables += len(rows)
            return _bottom_runs(self.mem, self.mode, LevelTables(lt.pas[rows], lt.ok[rows], None, None, None))
        kind = lt.kind[rows, lo:hi]
        child = lt.child[rows, lo:hi]
        ent = lt.entries[rows, lo:hi]
        tab = child >= 0
        kids, inv = sorted_unique(child[tab])
        nxt = self.tables[i + 1]
        kids_ok = nxt.ok[kids]
        cache = self.cache[i + 1]
        kept = np.array([t in cache for t in kids.tolist()], dtype=bool) if cache else np.zeros(len(kids), bool)
        need = kids_ok & ~kept
        sub = self._subtree(i + 1, kids[need]) if need.any() else _empty_runs()
        counts = np.zeros(len(kids), np.int64)
        if kept.any():
            parts: list[Runs] = []
            sub_n = 0
            for n, t in enumerate(kids.tolist()):
                if kept[n]:
                    parts.append(cache[t])
                elif need[n]:
                    parts.append(_slice_runs(sub, int(sub.off[sub_n]), int(sub.off[sub_n + 1])))
                    sub_n += 1
                else:
                    parts.append(_empty_runs(1))
            child_runs = _concat_runs(parts) if parts else _empty_runs()
        else:
            counts[need] = np.diff(sub.off)
            off = np.zeros(len(kids) + 1, np.int64)
            np.cumsum(counts, out=off[1:])
            child_runs = Runs(off, sub.start, sub.klevel, sub.hw, sub.val, sub.key, sub.eff, sub.zero)
        cidx = np.full(child.shape, -1, dtype=np.int64)
        cidx[tab] = inv
        sub_lt = LevelTables(lt.pas[rows], lt.ok[rows], ent, kind, cidx)
        return _upper_runs(self.mode, i, sub_lt, child_runs, kids_ok, limit=None)

    # -- the walk ---------------------------------------------------------------------------------
    def _out(self, runs: Runs, base: int, cum: np.ndarray | None) -> Iterator[Runs]:
        """A one-table run list placed at VA offset `base`, permissions folded through `cum`."""
        n = len(runs)
        for a in range(0, n, self.chunk):
            b = min(n, a + self.chunk)
            r = runs if (a == 0 and b == n) else _slice_runs(runs, a, b)
            eff = r.eff if cum is None else np.where(r.zero, np.uint64(0), self.mode.perm_combine(cum, r.eff))
            self.emitted += b - a
            if self.max_runs is not None and self.emitted > self.max_runs:
                raise run_limit_error(self.max_runs)
            yield Runs(np.array([0, b - a], np.int64), r.start + np.uint64(base), r.klevel, r.hw, r.val, r.key, eff, r.zero)

    def walk(self, i: int = 0, t: int = 0, base: int = 0, cum: np.ndarray | None = None) -> Iterator[Runs]:
        if t in self.cache[i]:
            yield from self._out(self.cache[i][t], base, cum)
            return
        if self.bound[i][t] <= self.chunk or i == self.nlev - 1:
            runs = self._subtree(i, np.array([t]))
            self._released()
            yield from self._out(runs, base, cum)
            return
        lt = self.tables[i]
        shift = self.mode.levels[i].shift
        eb = self._entry_bounds(i, t).tolist()
        child = lt.child[t].tolist()
        N = len(eb)
        j = 0
        while j < N:
            if eb[j] > self.chunk:  # descend into an entry whose subtree alone is more than a chunk
                e = lt.entries[t, j : j + 1].astype(np.uint64)
                perm = self.mode.perm(i, e)
                down = perm if cum is None else self.mode.perm_combine(cum, perm)
                yield from self.walk(i + 1, child[j], base + (j << shift), down)
                j += 1
                continue
            k, acc = j, 0.0
            while k < N and eb[k] <= self.chunk and acc + eb[k] <= self.chunk:
                acc += eb[k]
                k += 1
            runs = self._subtree(i, np.array([t]), j, k)
            self._released()
            yield from self._out(runs, base + (j << shift), cum)
            j = k


def iter_runs(
    mem: MappedMemory,
    mode: PagingMode,
    root_pa: int,
    chunk_runs: int = STREAM_CHUNK_RUNS,
    max_runs: int | None = -1,
) -> Iterator[Runs]:
    """The address space under `root_pa` as one-table `Runs` chunks in VA order (root offsets).

    Together they are `root_runs()`'s list, except that runs equal across a chunk boundary are
    not merged (consumers: `ptdump.core.drive()`, `ptdump.vector.breaks_stream()`). Memory is
    bounded by the distinct tables and `chunk_runs`; a walk producing more than `max_runs` runs
    (a page-table bomb with varied contents) raises PagewalkError when it gets there; by default
    the module's MAX_STREAM_RUNS, read at the call (a front end may set it); 0 or None: no limit.
    """
    if max_runs == -1:
        max_runs = MAX_STREAM_RUNS
    return _Stream(mem, mode, root_pa, chunk_runs, max_runs or None).walk()


def with_ends(mode: PagingMode, chunks: Runs | Iterable[Runs]) -> Iterator[tuple[Runs, int]]:
    """(chunk, end offset of its last run) for run-list chunks in VA order (one `Runs`: itself).

    A chunk's last run ends where the next chunk starts (the chunks tile the root's span), the
    last chunk's at the top of the span; empty chunks are dropped.
    """
    top = 1 << mode.va_bits
    if isinstance(chunks, Runs):
        chunks = (chunks,)
    prev = None
    for r in chunks:
        if len(r) == 0:
            continue
        if prev is not None:
            yield prev, int(r.start[0])
        prev = r
    if prev is not None:
        yield prev, top
