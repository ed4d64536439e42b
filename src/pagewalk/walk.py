"""The kernel's generic page walker, per entry and with the kernel's semantics.

Mirrors mm/pagewalk.c (v6.13; kernel page-walk specification §1, "Generic page walker"): callers
give a `WalkOps` of optional per-level callbacks and the walker calls them in address order,
exactly where and how often the kernel would. This is the slow, per-entry API for callers that
want callbacks; ptdump and the analyses use the whole-table fast path in runs.py instead.

How a PagingMode maps onto the kernel's five loops (pgd, p4d, pud, pmd, pte = depth 0..4):
each hardware level owns the kernel depths from just below the previous level's `klevel` down
to its own `klevel`. One loop of that group indexes the table; the others are folded: their loop
runs once per entry of the parent loop with the same raw value (p?d_offset() returns the parent
pointer, p?d_addr_end() returns `end`). The none/bad/leaf/present tests of a group happen at
its bottom depth, the level named by the mode: a folded level's p?d_none()/p?d_bad()/p?d_leaf()
are 0 and p?d_present() is 1. Which loop indexes and what real_depth() makes of a hole depends
on how the architecture folds (`folding()`):

* "compile" (x86, arm, arm64, riscv32, ppc64, mips64, sparc64, arc): the levels are folded with
  include/asm-generic/pgtable-nop4d.h, -nopud.h, -nopmd.h (PTRS_PER_P?D == 1), or at run time
  with PTRS_PER_P4D == 1 (x86-64 4-level: ptrs_per_p4d, pgd_none() 0 when
  !pgtable_l5_enabled()). The topmost loop of a group indexes the table (its P?D_SHIFT is the
  table's); real_depth() merges the folded depths upwards, so with x86-64 4-level paging the
  folded p4d loop reports the top-level holes at real_depth(1) == 0.
* "runtime-top" (riscv64 Sv39/Sv48): CONFIG_PGTABLE_LEVELS=5 with runtime folding.
  PGDIR_SHIFT/P4D_SHIFT follow pgtable_l4_enabled/pgtable_l5_enabled, so the pgd loop indexes
  the root (arch/riscv/include/asm/pgtable-64.h, PGDIR_SHIFT / P4D_SHIFT), p4d_offset()/
  pud_offset() return the parent pointer (arch/riscv/mm/pgtable.c) and pgd_none()/p4d_none()
  are 0 on the folded levels; but PTRS_PER_P4D/PUD/PMD are PAGE_SIZE / 8 = 512 at compile time
  (pgtable-64.h), so real_depth() merges nothing: an Sv39 root hole is found by pud_none() and
  reported at depth 2, an Sv48 one by p4d_none() at depth 1.
* "runtime-bottom" (s390x): the ASCE type says which levels exist; PTRS_PER_P4D/PUD/PMD are
  _CRST_ENTRIES (arch/s390/include/asm/pgtable.h), so real_depth() merges nothing. PGDIR_SHIFT,
  P4D_SHIFT and PUD_SHIFT are fixed (53, 42, 31): pgd_offset_raw() indexes the root with the
  shift of its table type, the generic p?d_addr_end() of the levels above the root's own return
  `end`, pgd_none()/p4d_none()/pud_none() are 0 for entries of a lower table type
  (pgd_folded()/p4d_folded()/pud_folded()) and p4d_offset()/pud_offset()/pmd_offset() return
  the parent pointer. So the loops above the root's level run once and the loop of the root's
  own level indexes it: a region-third root hole is reported by walk_pud_range() at depth 2.

Which entries are holes, leaves, tables or non-present comes from `mode.classify()` alone, and
from the mode's partial tables where it has them (s390 TF/TL: `mode.extra["index_window"]`, as
runs.discover() reads them): an entry outside its table's window is a hole.

Where the walker deliberately differs from the kernel (an image is read-only and may be
hostile):
* p?d_clear_bad() does not clear a bad pgd/p4d entry, it is only reported as a hole.
* VMA walks never split huge entries: leaf and non-present PUD/PMD entries are not descended
  into in VMA walks either (the kernel would call split_huge_pud()/split_huge_pmd()).
* A pgd/p4d entry the mode classifies as a leaf or not present (impossible on x86-64) gets its
  p?d_entry callback but is not descended into; the kernel would read its output as a table.
* A table the image does not hold is reported (`ops.table_missing`, else `pte_hole` with the
  level's depth) and the walk goes on, where the kernel would have faulted or retried.
* ACTION_AGAIN repeated more than AGAIN_LIMIT times on one entry raises PagewalkError where the
  kernel would loop forever.
* hugetlb VMAs (hugetlb_entry) are not modelled: every VMA is walked through the page tables.
* arm64 kernels built for 52-bit VAs (LPA2, v6.9+) that run with fewer levels fold the missing
  top level at run time (pgtable_l5_enabled()/pgtable_l4_enabled(), PTRS_PER_P4D/PUD > 1,
  arch/arm64/include/asm/pgtable.h): their pte_hole() depth of a root hole is 1 or 2 (their
  ptdump's note_page() maps it back to 0). A table does not tell such a kernel from a 48-bit
  one, so arm64 modes fold like the latter; `extra["kernel_folding"] = "runtime-bottom"` on a
  mode gives the LPA2 kernels' walk.
* Addresses outside the mode's VA space (the non-canonical hole of x86-64) are not walked: a
  range is cut into its canonical pieces, as the x86 ptdump ranges are; the kernel would wrap
  the top-level index and walk the same table again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Callable, Iterable

import numpy as np

from .errors import MemoryReadError, PagewalkError
from .memory.base import PhysicalMemory
from .mode import Kind, PagingMode

__all__ = [
    "AGAIN_LIMIT",
    "EINVAL",
    "VM_PFNMAP",
    "Action",
    "KernelDepth",
    "MmWalk",
    "Vma",
    "WalkOps",
    "folding",
    "kernel_depths",
    "real_depth",
    "walk_page_range",
    "walk_page_range_novma",
]

BITS_PER_LONG = 64
ULONG_MASK = (1 << BITS_PER_LONG) - 1
EINVAL = 22  # include/uapi/asm-generic/errno-base.h; returned negated, as the kernel does
VM_PFNMAP = 0x00000400  # include/linux/mm.h: "Page-ranges managed without struct page"
AGAIN_LIMIT = 1000  # ACTION_AGAIN repeats per entry before the walk gives up
KERNEL_DEPTH_NAMES = ("pgd", "p4d", "pud", "pmd", "pte")
PTE_DEPTH = 4


class Action(IntEnum):
    """enum page_walk_action, include/linux/pagewalk.h: read by the PUD and PMD loops only."""

    SUBTREE = 0  # descend to the next level
    CONTINUE = 1  # next entry at this level, ignoring any subtree
    AGAIN = 2  # call again for this entry


EntryCallback = Callable[[int, int, int, "MmWalk"], "int | None"]
HoleCallback = Callable[[int, int, int, "MmWalk"], "int | None"]
RangeCallback = Callable[[int, int, "MmWalk"], "int | None"]
MissingCallback = Callable[[int, int, int, int, "MmWalk"], "int | None"]


@dataclass
class WalkOps:
    """struct mm_walk_ops: every callback is optional; a return of None counts as 0.

    Entry callbacks get `(entry, va, next_va, walk)`, the raw entry value and the half-open VA
    range it covers within the walk. `pte_hole(va, next_va, depth, walk)` gets depth 0..3 for
    none/bad entries (folded levels merged, real_depth()) and -1 where the depth is unknown.
    `table_missing(table_pa, va, next_va, depth, walk)` is pagewalk's own: a table the image
    does not hold; without it such a table goes to `pte_hole` with the depth of its level.
    """

    pgd_entry: EntryCallback | None = None
    p4d_entry: EntryCallback | None = None
    pud_entry: EntryCallback | None = None
    pmd_entry: EntryCallback | None = None
    pte_entry: EntryCallback | None = None
    pte_hole: HoleCallback | None = None
    test_walk: RangeCallback | None = None
    pre_vma: RangeCallback | None = None
    post_vma: Callable[["MmWalk"], None] | None = None
    table_missing: MissingCallback | None = None


@dataclass
class Vma:
    """The part of a vm_area_struct the walker looks at: [start, end) and vm_flags."""

    start: int
    end: int
    flags: int = 0


@dataclass
class MmWalk:
    """struct mm_walk, plus where the entry given to the current callback lives.

    `table_pa`/`index` locate that entry (`entry_pa` is its address), `depth` is the kernel
    loop (0 pgd .. 4 pte), `hw_level` the mode's level index and `kind` how the loop sees the
    entry (Kind.TABLE on a folded level, whose p?d_leaf() is always false).
    """

    ops: WalkOps
    mode: PagingMode
    mem: PhysicalMemory
    root_pa: int
    vma: Vma | None = None
    action: Action = Action.SUBTREE
    no_vma: bool = False
    private: Any = None
    table_pa: int | None = None
    index: int | None = None
    depth: int | None = None
    hw_level: int | None = None
    kind: Kind | None = None

    @property
    def entry_pa(self) -> int | None:
        """Physical address of the current entry."""
        if self.table_pa is None or self.index is None:
            return None
        return self.table_pa + self.index * self.mode.entry_bytes


@dataclass(frozen=True)
class KernelDepth:
    """How one of the kernel's five loops maps onto the mode's hardware levels."""

    depth: int  # 0 pgd .. 4 pte
    hw: int  # hardware level index whose table this loop walks
    iterates: bool  # the loop indexes the table; else folded: it runs once per parent entry
    checks: bool  # none/bad/leaf/present are tested here (the level the mode names)
    shift: int  # shift of the table's entries (the P?D_SHIFT of the loop that indexes it)
    one_ptr: bool = False  # PTRS_PER_P?D == 1: real_depth() merges this depth's holes upwards


# How each architecture's kernel folds the levels a mode does not have (module docstring).
# Architectures not listed fold at compile time (pgtable-nop?d.h) or like it (x86-64 4-level).
FOLDING = {
    # arch/riscv/include/asm/pgtable-64.h: PGDIR_SHIFT/P4D_SHIFT by pgtable_l{4,5}_enabled,
    # PTRS_PER_P4D/PUD/PMD = PAGE_SIZE / sizeof(p?d_t); pgd_none()/p4d_none() 0 when folded
    "riscv64": "runtime-top",
    # arch/s390/include/asm/pgtable.h: PTRS_PER_P?D = _CRST_ENTRIES, fixed P?D_SHIFTs,
    # pgd_offset_raw() picks the root's shift from its table type, p?d_folded()
    "s390x": "runtime-bottom",
}


def folding(mode: PagingMode) -> str:
    """How the kernel folds `mode`'s missing levels: "compile", "runtime-top" or "runtime-bottom".

    A mode may say it itself with `extra["kernel_folding"]`; else the architecture decides.

    >>> from pagewalk.arch.riscv import SV32, SV39
    >>> folding(SV32), folding(SV39)
    ('compile', 'runtime-top')
    """
    style = mode.extra.get("kernel_folding") or FOLDING.get(mode.arch, "compile")
    if style not in ("compile", "runtime-top", "runtime-bottom"):
        raise PagewalkError(f"{mode.name}: unknown kernel folding {style!r}")
    return style


def kernel_depths(mode: PagingMode) -> tuple[KernelDepth, ...]:
    """The kernel's pgd..pte loops for `mode`, folded levels included.

    >>> from pagewalk.arch.x86 import X86_64_4LEVEL
    >>> [(d.depth, d.hw, d.iterates, d.checks) for d in kernel_depths(X86_64_4LEVEL)][:2]
    [(0, 0, True, False), (1, 0, False, True)]
    >>> from pagewalk.arch.s390 import REGION3
    >>> [(d.depth, d.hw, d.iterates, d.checks, d.one_ptr) for d in kernel_depths(REGION3)][:3]
    [(0, 0, False, False, False), (1, 0, False, False, False), (2, 0, True, True, False)]
    """
    klevels = [lvl.klevel for lvl in mode.levels]
    if klevels[-1] != PTE_DEPTH or any(b <= a for a, b in zip(klevels, klevels[1:])) or klevels[0] < 0:
        raise PagewalkError(f"{mode.name}: level numbers {klevels} do not fit the kernel's pgd..pte")
    style = folding(mode)
    out = []
    first = 0
    for hw, klevel in enumerate(klevels):
        for d in range(first, klevel + 1):
            iterates = d == (klevel if style == "runtime-bottom" else first)
            one_ptr = style == "compile" and d != first
            out.append(KernelDepth(d, hw, iterates, d == klevel, mode.levels[hw].shift, one_ptr))
        first = klevel + 1
    return tuple(out)


def real_depth(mode: PagingMode, depth: int) -> int:
    """real_depth(), mm/pagewalk.c: the depth of a hole with folded levels merged upwards.

    Only levels with PTRS_PER_P?D == 1 are merged: on riscv64 and s390x the runtime-folded
    levels keep their depth (module docstring).

    >>> from pagewalk.arch.x86 import X86_64_4LEVEL, X86_64_5LEVEL
    >>> from pagewalk.arch.riscv import SV39
    >>> real_depth(X86_64_4LEVEL, 1), real_depth(X86_64_5LEVEL, 1), real_depth(SV39, 2)
    (0, 1, 2)
    """
    depths = kernel_depths(mode)

    def folded(d: int) -> bool:  # PTRS_PER_P?D == 1
        return depths[d].one_ptr

    if depth == 3 and folded(3):
        depth = 2
    if depth == 2 and folded(2):
        depth = 1
    if depth == 1 and folded(1):
        depth = 0
    return depth


@dataclass
class _Table:
    """One table as read from the image, classified once with mode.classify()."""

    pa: int
    raw: np.ndarray
    entries: list[int]
    kinds: list[int]
    outs: list[int]
    lo: int = 0  # indexes present in the table: [lo, hi) (s390 TF/TL); the others are holes
    hi: int = 1 << 62


def _locate(walk: MmWalk, d: int | None, hw: int | None, table: _Table | None, idx: int, kind: Kind | None) -> None:
    """Point `walk` at the entry the next callback is about (or at nothing)."""
    walk.depth, walk.hw_level, walk.kind = d, hw, kind
    walk.table_pa, walk.index = (None, None) if table is None else (table.pa, idx)


def _ret(value: int | None) -> int:
    """A callback's return value: None means 0, anything else is passed on unchanged."""
    return 0 if value is None else value


class _Walker:
    """The loops of mm/pagewalk.c over one MmWalk."""

    def __init__(self, walk: MmWalk) -> None:
        self.walk = walk
        self.ops = walk.ops
        self.mode = walk.mode
        self.depths = kernel_depths(walk.mode)
        self.page_size = walk.mode.levels[-1].entry_span  # PAGE_SIZE
        ops = walk.ops
        entry_cbs = (ops.pgd_entry, ops.p4d_entry, ops.pud_entry, ops.pmd_entry, ops.pte_entry)
        # has_handler of each loop: is there a callback below depth d?
        self.has_lower = tuple(any(cb is not None for cb in entry_cbs[d + 1 :]) for d in range(5))
        self.entry_cb = entry_cbs
        self.hole_depth = tuple(real_depth(walk.mode, d) for d in range(5))

    # -- helpers -------------------------------------------------------------------------------
    def _window(self, hw: int, parent: _Table | None, pidx: int) -> tuple[int, int]:
        """[lo, hi) of the indexes present in a level-`hw` table (s390 TF/TL), as runs.discover()
        reads them: the root's from `index_window(0, None)`, a child's from its parent entry."""
        window = self.mode.extra.get("index_window")
        if window is None:
            return 0, self.mode.levels[hw].entries
        if parent is None:
            lo, hi = window(0, None)
        else:
            lo, hi = window(hw, np.array([parent.entries[pidx]], dtype=np.uint64))
        return int(lo[0]), int(hi[0])

    def _read_table(self, hw: int, pa: int, parent: _Table | None, pidx: int) -> _Table:
        lvl = self.mode.levels[hw]
        raw = self.walk.mem.table(pa, lvl.entries, self.mode.dtype)
        kinds, outs = self.mode.classify(hw, raw)
        lo, hi = self._window(hw, parent, pidx)
        if lo > 0 or hi < lvl.entries:
            col = np.arange(lvl.entries)
            kinds = np.where((col < lo) | (col >= hi), np.uint8(Kind.HOLE), kinds)
        return _Table(pa, raw, raw.tolist(), kinds.tolist(), outs.tolist(), lo, hi)

    def _reread(self, hw: int, table: _Table, idx: int) -> None:
        """`goto again`: the kernel re-reads *pud / *pmd; refresh the one entry from the image."""
        one = table.raw[idx : idx + 1]
        kinds, outs = self.mode.classify(hw, one)
        table.entries[idx] = int(one[0])
        table.kinds[idx] = int(kinds[0]) if table.lo <= idx < table.hi else int(Kind.HOLE)
        table.outs[idx] = int(outs[0])

    def _index(self, hw: int, va: int) -> int:
        lvl = self.mode.levels[hw]
        return (self.mode.table_offset(va) >> lvl.shift) & (lvl.entries - 1)

    def _addr_end(self, d: int, va: int, end: int) -> int:
        """p?d_addr_end(), include/linux/pgtable.h; `end` itself on a folded level."""
        info = self.depths[d]
        if not info.iterates:
            return end
        size = 1 << info.shift
        boundary = ((va + size) & ULONG_MASK) & ~(size - 1)
        return boundary if (boundary - 1) & ULONG_MASK < (end - 1) & ULONG_MASK else end

    def _kind(self, d: int, table: _Table, idx: int) -> int:
        # A folded parent's p?d_none()/p?d_bad()/p?d_leaf() are 0, p?d_present() is 1.
        return table.kinds[idx] if self.depths[d].checks else Kind.TABLE

    def _call_entry(self, d: int, table: _Table, idx: int, kind: int, va: int, next_va: int) -> int:
        cb = self.entry_cb[d]
        if cb is None:
            return 0
        _locate(self.walk, d, self.depths[d].hw, table, idx, Kind(kind))
        return _ret(cb(table.entries[idx], va, next_va, self.walk))

    def _hole(
        self, va: int, next_va: int, depth: int, d: int | None = None, table: _Table | None = None, idx: int = 0
    ) -> int:
        """pte_hole(); the walk points at the none/bad entry when there is one."""
        if self.ops.pte_hole is None:
            return 0
        _locate(self.walk, d, None if d is None else self.depths[d].hw, table, idx, Kind.HOLE)
        return _ret(self.ops.pte_hole(va, next_va, depth, self.walk))

    def _open(self, d: int, va: int, end: int, parent: _Table | None, pidx: int) -> _Table | int:
        """The table loop `d` walks: the root, the parent's next table, or the parent loop's own
        table when both loops belong to one hardware level (a folded level).

        A table the image does not hold is reported here; the int returned is then the
        callback's verdict (0: go on with the parent's next entry).
        """
        info = self.depths[d]
        if d > 0 and self.depths[d - 1].hw == info.hw:
            assert parent is not None
            return parent
        pa = self.walk.root_pa if parent is None else parent.outs[pidx]
        try:
            return self._read_table(info.hw, pa, parent, pidx)
        except MemoryReadError:
            depth = self.hole_depth[d]  # real_depth(); 4 for a PTE table
            next_va = end & ULONG_MASK
            _locate(self.walk, None, None, None, 0, None)
            if self.ops.table_missing is not None:
                return _ret(self.ops.table_missing(pa, va, next_va, depth, self.walk))
            return self._hole(va, next_va, depth)

    def _slot(self, d: int, va: int) -> int:
        """p?d_offset(): the entry of `va` in the loop's table (a folded loop's: its parent's)."""
        return self._index(self.depths[d].hw, va)

    def _descend(self, d: int, va: int, end: int, table: _Table, idx: int) -> int:
        """walk_p4d_range() / walk_pud_range() / walk_pmd_range() / walk_pte_range() below `d`."""
        child = d + 1
        if child == PTE_DEPTH:
            return self._walk_pte(va, end, table, idx)
        if child <= 1:
            return self._walk_upper(child, va, end, table, idx)
        return self._walk_mid(child, va, end, table, idx)

    # -- the loops -----------------------------------------------------------------------------
    def walk_pgd_range(self, va: int, end: int) -> int:
        """walk_pgd_range(), mm/pagewalk.c; `walk->pgd + pgd_index(addr)` is the root table."""
        return self._walk_upper(0, va, end & ULONG_MASK, None, 0)

    def _walk_upper(self, d: int, va: int, end: int, parent: _Table | None, pidx: int) -> int:
        """Mirrors walk_pgd_range() (d = 0) and walk_p4d_range() (d = 1), mm/pagewalk.c (v6.13).

        Neither loop looks at walk->action, p?d_leaf() or p?d_present(): ACTION_CONTINUE set by
        pgd_entry/p4d_entry has no effect.
        """
        table = self._open(d, va, end, parent, pidx)
        if isinstance(table, int):
            return table
        err = 0
        while True:
            next_va = self._addr_end(d, va, end)
            idx = self._slot(d, va)
            kind = self._kind(d, table, idx)
            # p?d_none_or_clear_bad(); depth literally 0 in the pgd loop, real_depth(1) in the
            # p4d loop (mm/pagewalk.c walk_pgd_range() / walk_p4d_range())
            if kind == Kind.HOLE:
                err = self._hole(va, next_va, 0 if d == 0 else self.hole_depth[d], d, table, idx)
                if err:
                    break
            else:
                err = self._call_entry(d, table, idx, kind, va, next_va)
                if err:
                    break
                # The kernel descends whatever the entry is; a leaf or non-present entry here
                # would be read as a table (never the case on x86-64), so only TABLE descends.
                if self.has_lower[d] and kind == Kind.TABLE:
                    err = self._descend(d, va, next_va, table, idx)
                if err:
                    break
            va = next_va
            if va == end:
                break
        return err

    def _walk_mid(self, d: int, va: int, end: int, parent: _Table, pidx: int) -> int:
        """Mirrors walk_pud_range() (d = 2) and walk_pmd_range() (d = 3), mm/pagewalk.c (v6.13)."""
        table = self._open(d, va, end, parent, pidx)
        if isinstance(table, int):
            return table
        hw = self.depths[d].hw
        w = self.walk
        err = 0
        while True:
            idx = self._slot(d, va)
            again = 0
            while True:  # again:
                next_va = self._addr_end(d, va, end)
                kind = self._kind(d, table, idx)
                if kind == Kind.HOLE:  # p?d_none(): real_depth(2) / real_depth(3)
                    err = self._hole(va, next_va, self.hole_depth[d], d, table, idx)
                    break
                w.action = Action.SUBTREE
                err = self._call_entry(d, table, idx, kind, va, next_va)
                if err:
                    break
                if w.action == Action.AGAIN:
                    again = self._again(d, va, again)
                    self._reread(hw, table, idx)
                    continue
                if w.action == Action.CONTINUE:
                    break
                if not self.has_lower[d]:  # no handlers for lower page tables
                    break
                if kind in (Kind.LEAF, Kind.SKIP):  # p?d_leaf() || !p?d_present(): nothing to do
                    break
                err = self._descend(d, va, next_va, table, idx)
                if err:
                    break
                # v6.5+: walk_pte_range() sets ACTION_AGAIN when it cannot map the PTE table,
                # and the PMD loop re-evaluates the entry (a pte_entry may set it too).
                if d == 3 and w.action == Action.AGAIN:
                    again = self._again(d, va, again)
                    self._reread(hw, table, idx)
                    continue
                break
            if err:
                break
            va = next_va
            if va == end:
                break
        return err

    def _again(self, d: int, va: int, count: int) -> int:
        count += 1
        if count > AGAIN_LIMIT:
            raise PagewalkError(
                f"ACTION_AGAIN returned {AGAIN_LIMIT} times in a row for the {KERNEL_DEPTH_NAMES[d]} "
                f"entry at {va:#x}; the kernel would loop forever"
            )
        return count

    def _walk_pte(self, va: int, end: int, parent: _Table, pidx: int) -> int:
        """Mirrors walk_pte_range_inner(), mm/pagewalk.c: pte_entry for every slot, none or not.

        The loop ends with the termination fix (upstream c02a98753e0a): `addr >= end -
        PAGE_SIZE`, in unsigned long arithmetic, so a range ending at ~0UL (or 0) terminates and
        the last page's `next` wraps to 0.
        """
        table = self._open(PTE_DEPTH, va, end, parent, pidx)
        if isinstance(table, int):
            return table
        page = self.page_size
        last = (end - page) & ULONG_MASK
        n = len(table.entries)
        idx = self._index(self.depths[PTE_DEPTH].hw, va)
        err = 0
        while idx < n:
            next_va = (va + page) & ULONG_MASK
            err = self._call_entry(PTE_DEPTH, table, idx, Kind.LEAF, va, next_va)
            if err:
                break
            if va >= last:
                break
            va = next_va
            idx += 1
        return err


def _canonical_pieces(mode: PagingMode, start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) cut to the parts the mode translates (`mode.va_windows()`).

    `end` may be 2**64 (or ~0UL, which the kernel uses for "to the top").
    """
    out = []
    for lo, hi in mode.va_windows():
        s, e = max(start, lo), min(end, hi)
        if s < e:
            out.append((s, e))
    return out


def _check_range(start: int, end: int) -> None:
    if not (0 <= start <= ULONG_MASK and 0 <= end <= 1 << BITS_PER_LONG):
        raise ValueError(f"range [{start:#x}, {end:#x}) is not within 64-bit addresses")


def _walk_pgd_pieces(walker: _Walker, start: int, end: int) -> int:
    for s, e in _canonical_pieces(walker.mode, start, end):
        err = walker.walk_pgd_range(s, e)
        if err:
            return err
    return 0


def walk_page_range_novma(
    mem: PhysicalMemory,
    mode: PagingMode,
    root_pa: int,
    start: int,
    end: int,
    ops: WalkOps,
    private: Any = None,
) -> int:
    """Walk the tables under `root_pa` over [start, end) ignoring VMAs, as ptdump does.

    Mirrors walk_page_range_novma(), mm/pagewalk.c (v6.13): -EINVAL (-22) if start >= end,
    else the first non-zero callback return, else 0. `end` may be 2**64 or ~0UL (2**64 - 1).

    >>> holes = []
    >>> ops = WalkOps(pte_hole=lambda va, nxt, depth, w: holes.append((va, depth)),
    ...               pmd_entry=lambda e, va, nxt, w: 0)
    >>> walk_page_range_novma(mem, X86_64_4LEVEL, root, 0, 2**64, ops)  # doctest: +SKIP
    0
    """
    _check_range(start, end)
    if start >= end:
        return -EINVAL
    walk = MmWalk(ops=ops, mode=mode, mem=mem, root_pa=root_pa, no_vma=True, private=private)
    return _walk_pgd_pieces(_Walker(walk), start, end)


def _find_vma(vmas: list[Vma], va: int) -> int | None:
    """find_vma(): index of the first VMA ending above `va`, None if there is none."""
    for i, vma in enumerate(vmas):
        if vma.end > va:
            return i
    return None


def _walk_page_test(walker: _Walker, start: int, end: int) -> int:
    """walk_page_test(), mm/pagewalk.c: 0 walk, >0 skip, <0 abort."""
    walk, ops = walker.walk, walker.ops
    if ops.test_walk is not None:
        return _ret(ops.test_walk(start, end, walk))
    assert walk.vma is not None
    if walk.vma.flags & VM_PFNMAP:
        err = 1
        if ops.pte_hole is not None:
            _locate(walk, None, None, None, 0, None)
            err = _ret(ops.pte_hole(start, end, -1, walk))
        return err if err else 1
    return 0


def _walk_vma_range(walker: _Walker, start: int, end: int) -> int:
    """__walk_page_range(), mm/pagewalk.c (v6.13): pre_vma, the walk, post_vma (even on error)."""
    walk, ops = walker.walk, walker.ops
    err = 0
    _locate(walk, None, None, None, 0, None)
    if ops.pre_vma is not None:
        err = _ret(ops.pre_vma(start, end & ULONG_MASK, walk))
        if err:
            return err
    err = _walk_pgd_pieces(walker, start, end)
    if ops.post_vma is not None:
        ops.post_vma(walk)
    return err


def walk_page_range(
    mem: PhysicalMemory,
    mode: PagingMode,
    root_pa: int,
    vmas: Iterable[Vma],
    start: int,
    end: int,
    ops: WalkOps,
    private: Any = None,
) -> int:
    """Walk [start, end) VMA by VMA; areas without a VMA are holes of depth -1.

    Mirrors walk_page_range() / walk_page_range_mm(), mm/pagewalk.c (v6.13, i.e. after
    8782fb61cc84: outside VMAs pte_hole(start, next, -1) is called without touching the
    tables). Per VMA: test_walk (or VM_PFNMAP skipping), pre_vma, the walk, post_vma.

    >>> ops = WalkOps(pte_entry=lambda e, va, nxt, w: 0)
    >>> walk_page_range(mem, X86_64_4LEVEL, root, [Vma(0x400000, 0x600000)], 0, 1 << 47, ops)  # doctest: +SKIP
    0
    """
    _check_range(start, end)
    if start >= end:
        return -EINVAL
    areas = sorted(vmas, key=lambda v: v.start)
    for a, b in zip(areas, areas[1:]):
        if b.start < a.end:
            raise ValueError(f"VMAs [{a.start:#x}, {a.end:#x}) and [{b.start:#x}, {b.end:#x}) overlap")
    for v in areas:
        if v.start >= v.end:
            raise ValueError(f"empty VMA [{v.start:#x}, {v.end:#x})")
    walk = MmWalk(ops=ops, mode=mode, mem=mem, root_pa=root_pa, no_vma=False, private=private)
    walker = _Walker(walk)
    err = 0
    vi = _find_vma(areas, start)
    while True:
        _locate(walk, None, None, None, 0, None)
        if vi is None:  # after the last vma
            walk.vma = None
            next_va = end
            if ops.pte_hole is not None:
                err = _ret(ops.pte_hole(start, next_va & ULONG_MASK, -1, walk))
        elif start < areas[vi].start:  # outside vma
            walk.vma = None
            next_va = min(end, areas[vi].start)
            if ops.pte_hole is not None:
                err = _ret(ops.pte_hole(start, next_va & ULONG_MASK, -1, walk))
        else:  # inside vma
            vma = areas[vi]
            walk.vma = vma
            next_va = min(end, vma.end)
            vi = _find_vma(areas, vma.end)
            err = _walk_page_test(walker, start, next_va & ULONG_MASK)
            if err > 0:
                # "positive return values are purely for controlling the pagewalk, so should
                # never be passed to the callers."
                err = 0
                start = next_va
                if start < end:
                    continue
                break
            if err < 0:
                break
            err = _walk_vma_range(walker, start, next_va)
        if err:
            break
        start = next_va
        if not start < end:
            break
    return err
