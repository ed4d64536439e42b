"""The leaf mappings of one view as interval arrays: what the MMU maps where, with which rights.

This is the data every analysis here works on (aliases, diff, check, stats, pagemap, the map).
It is computed from `runs.discover()`'s de-duplicated tables with whole-table numpy operations,
and keeps what ptdump's run lists drop: the physical address. Bottom-up, each table gets its
items: its own entries' intervals, coalesced within the table, and its children, either copied in
(a child that flattens to at most INLINE_MAX intervals: a shared table costs its few intervals
once per reference and coalesces with its neighbours, so KASAN's early shadow stays one interval)
or deferred; top-down, the deferred children are placed at their entries' VAs with the permission
word folded through the path (`mode.perm_combine`), every bottom interval copied once, and
neighbours across tables coalesced in one pass. Time and memory go with the number of intervals
(about 43 bytes each), never with pages. Two intervals coalesce when they are VA-contiguous, of the same level
and status, with equal attributes and effective permissions, and either

* PA-contiguous (the ordinary case: a direct map, a kernel image), or
* mapping the *same* physical block again (`repeat`: KASAN's early shadow maps one zero page
  behind a whole region; such an interval maps `[pa_start, pa_start + entry span)` at
  `size / span` virtual places, and costs one interval however large the region is).

Shared tables are expanded once per reference (each reference has its own VA), so the total is
bounded by MAX_INTERVALS (a page-table bomb with varied contents under shared tables is refused
with a PagewalkError, as runs.MAX_RUNS refuses it for the dump).

Which entries are mappings is the MMU's business (`mode.hw_classify()`: a present leaf), which
tables are read is the kernel walker's (`discover()` follows `mode.classify()`). Entries where
the two disagree get their own status: a valid entry the MMU faults on (reserved bits or
encodings), an entry the kernel's walker skips as bad although the MMU would follow it, a table
the image does not hold.

Attributes (the coalescing key) are the entry bits ptdump compares (`mode.ptdump_key_mask`)
without the status bits the hardware updates (Accessed, Dirty): two boots, or two moments, differ
in those all over the direct map, and they grant nothing.

Per-architecture meaning of the permission word and the leaf entry (user / read / write /
supervisor-exec / user-exec / global / valid) is the data in ARCH_BITS, read from the constants of
`pagewalk.arch.*`.

>>> m = mappings(target, "kernel")  # doctest: +SKIP
>>> m.va_start[:3], m.size[:3], m.pa_start[:3]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..arch import arm64 as _a64
from ..arch import riscv as _rv
from ..arch import x86 as _x86
from ..errors import PagewalkError
from ..memory.base import MappedMemory
from ..mode import HwKind, Kind, PagingMode
from ..runs import LevelTables, discover

U64 = np.uint64
TOP = 1 << 64

MAX_INTERVALS = 20_000_000  # beyond this a view is a page-table bomb (about 1 GB of arrays)
_CHUNK_TABLES = 1024  # bottom-level tables decoded per numpy batch

# status of an interval
MAPPED = 0  # a present leaf: the MMU translates these VAs to pa_start...
FAULT = 1  # a valid entry the MMU rejects (reserved bits / encodings); pa_start is 0
MISSING = 2  # a table entry whose next table the image does not hold; pa_start is that table's PA
UNWALKED = 3  # an entry the kernel's walker skips (p?d_bad) although the MMU follows it
STATUS_NAMES = ("mapped", "fault", "missing", "unwalked")


# -- per-architecture bits, as data --------------------------------------------------------------

@dataclass(frozen=True)
class Bit:
    """A test on a word: true where `word & mask == value` (mask 0: always true with value 0,
    never with another value: `NEVER`).

    Optional, for architectures whose bits move with the level or live in the entry only:
    `entry` tests the raw leaf entry instead of the effective permission word (arm short
    descriptors: Linux's software PTE bits; `also`, a test on the permission word it must pass
    as well: a table's PXN over them), and `at` gives per-level overrides as
    (level, Bit) pairs, the level an index into `mode.levels` (negative from the bottom: -1 is
    the last level), e.g. s390, whose PTE invalid bit is the large-page bit one level up. For
    `valid` an override may also be a function of the entries (mips64: a table pointer is
    valid unless it points at the next level's invalid table).
    `test()` applies both; calling the Bit applies its own mask only (the same at every level).
    """

    mask: int
    value: int
    entry: bool = False
    at: tuple[tuple[int, Bit | Callable[[np.ndarray], np.ndarray]], ...] = ()
    also: Bit | None = None

    def __call__(self, word: np.ndarray) -> np.ndarray:
        if not self.mask:
            return np.full(np.shape(word), self.value == 0, bool)
        return (np.asarray(word, U64) & U64(self.mask)) == U64(self.value)

    def for_level(self, level: int, nlevels: int) -> Bit | Callable[[np.ndarray], np.ndarray]:
        """The Bit that applies to entries of level `level` (an override of `at`, or this one)."""
        for lv, bit in self.at:
            if lv % nlevels == level:
                return bit
        return self

    def test(self, perm: np.ndarray, entry: np.ndarray, level: np.ndarray | None = None, nlevels: int = 0) -> np.ndarray:
        """The test on arrays of intervals: the permission word or the entry (see `entry`), with
        the per-level overrides where `level` (the intervals' levels) is given."""
        out = self._one(perm, entry)
        if self.at and level is not None and nlevels:
            level = np.asarray(level)
            for lv, bit in self.at:
                sel = level == lv % nlevels
                if sel.any():
                    out = np.where(sel, bit._one(perm, entry), out)
        return out

    def _one(self, perm: np.ndarray, entry: np.ndarray) -> np.ndarray:
        out = self(entry if self.entry else perm)
        return out if self.also is None else out & self.also(perm)


NEVER = Bit(0, 1)  # a right the architecture does not have (s390's user bit: user mode has its own ASCE)


@dataclass(frozen=True)
class ArchBits:
    """What the bits of one architecture mean to the analyses.

    `user`, `read`, `write`, `kexec`, `uexec` test the *effective permission word* (the
    hierarchy already folded in by `mode.perm_combine`); `valid`, `glob` test the raw leaf entry.
    `kexec` is "the kernel can execute it" (supervisor / EL1 / S-mode), `uexec` "user mode can".
    """

    valid: Bit  # the MMU looks at the entry at all (P, V, descriptor bit 0)
    user: Bit  # user mode may read it
    read: Bit
    write: Bit
    kexec: Bit
    uexec: Bit
    glob: Bit  # the TLB entry survives address-space switches
    status_mask: int  # entry bits the hardware updates (not attributes)
    memtype_mask: int = 0  # memory-type bits at the same place at every level (diff compares them)
    implicit_pxn_if_user_write: bool = False  # arm64: EL0-writable is never EL1-executable
    napot_bit: int = 0  # riscv Svnapot: a 4 KiB leaf whose PA takes VA bits 15:12
    napot_shift: int = 16
    kernel_va_start: int | None = None  # first VA of the kernel's part (default: the upper half, 1 << 63)


# SDM Vol. 3A §4.6. SMEP is assumed (Linux sets CR4.SMEP whenever the CPU has it): the kernel
# does not execute user pages. Protection keys are not modelled.
_X86 = ArchBits(
    valid=Bit(_x86._PAGE_PRESENT, _x86._PAGE_PRESENT),
    user=Bit(_x86._PAGE_USER, _x86._PAGE_USER),
    read=Bit(0, 0),
    write=Bit(_x86._PAGE_RW, _x86._PAGE_RW),
    kexec=Bit(_x86._PAGE_USER | _x86._PAGE_NX, 0),
    uexec=Bit(_x86._PAGE_USER | _x86._PAGE_NX, _x86._PAGE_USER),
    glob=Bit(_x86._PAGE_GLOBAL, _x86._PAGE_GLOBAL),
    status_mask=_x86._PAGE_ACCESSED | _x86._PAGE_DIRTY,
    memtype_mask=_x86._PAGE_PWT | _x86._PAGE_PCD,  # PAT moves between bit 7 and 12 with the level
)
# Arm ARM D8.4: AP[1] (PTE_USER) EL0 access, AP[2] (PTE_RDONLY) no write, PXN / UXN; a page
# writable at EL0 is treated as PXN at EL1 (D8.4.1.2 "implicit PXN"). EL0 execution is UXN's
# alone, whatever AP[1] says: that is why the kernel's W+X check also counts non-UXN pages.
_ARM64 = ArchBits(
    valid=Bit(_a64.PTE_VALID, _a64.PTE_VALID),
    user=Bit(_a64.PTE_USER, _a64.PTE_USER),
    read=Bit(0, 0),
    write=Bit(_a64.PTE_RDONLY, 0),
    kexec=Bit(_a64.PTE_PXN, 0),
    uexec=Bit(_a64.PTE_UXN, 0),
    glob=Bit(_a64.PTE_NG, 0),
    status_mask=_a64.PTE_DBM | _a64.PTE_DIRTY,
    memtype_mask=_a64.PTE_ATTRINDX_MASK,
    implicit_pxn_if_user_write=True,
)
# RISC-V privileged spec §10.3.1: S-mode never executes U pages, U-mode only U pages.
_RISCV = ArchBits(
    valid=Bit(_rv._PAGE_PRESENT, _rv._PAGE_PRESENT),
    user=Bit(_rv._PAGE_USER, _rv._PAGE_USER),
    read=Bit(_rv._PAGE_READ, _rv._PAGE_READ),
    write=Bit(_rv._PAGE_WRITE, _rv._PAGE_WRITE),
    kexec=Bit(_rv._PAGE_EXEC | _rv._PAGE_USER, _rv._PAGE_EXEC),
    uexec=Bit(_rv._PAGE_EXEC | _rv._PAGE_USER, _rv._PAGE_EXEC | _rv._PAGE_USER),
    glob=Bit(_rv._PAGE_GLOBAL, _rv._PAGE_GLOBAL),
    status_mask=_rv._PAGE_ACCESSED | _rv._PAGE_DIRTY,
    memtype_mask=_rv._PAGE_MTMASK_SVPBMT,
    napot_bit=_rv._PAGE_NAPOT,
    napot_shift=12 + _rv.NAPOT_64K_BITS,
)
_RISCV32 = ArchBits(**{**_RISCV.__dict__, "napot_bit": 0})

ARCH_BITS: dict[str, ArchBits] = {
    "x86_64": _X86,
    "i386": _X86,  # 2-level entries have no NX bit: the same masks read it as clear
    "arm64": _ARM64,
    "riscv64": _RISCV,
    "riscv32": _RISCV32,
}


def arch_bits(mode: PagingMode) -> ArchBits:
    """The ArchBits of a mode's architecture (PagewalkError for one the analyses do not know).

    An architecture module can bring its own: `mode.extra["arch_bits"]` (an ArchBits, or a
    function of the mode returning one, so that the module need not import this one) wins."""
    own = mode.extra.get("arch_bits") if isinstance(getattr(mode, "extra", None), dict) else None
    if callable(own) and not isinstance(own, ArchBits):
        own = own(mode)
    if isinstance(own, ArchBits):
        return own
    try:
        return ARCH_BITS[mode.arch]
    except KeyError:
        raise PagewalkError(f"the analyses do not know the bits of {mode.arch} yet") from None


@dataclass
class Perms:
    """Decoded rights of many mappings (bool arrays of equal length)."""

    user: np.ndarray
    read: np.ndarray
    write: np.ndarray
    kexec: np.ndarray
    uexec: np.ndarray
    glob: np.ndarray

    @property
    def exec(self) -> np.ndarray:
        """Executable at some privilege."""
        return self.kexec | self.uexec

    def code(self) -> np.ndarray:
        """The rights packed in one small integer per mapping (bit 0 user, 1 read, 2 write,
        3 kexec, 4 uexec, 5 global): equal codes, equal rights."""
        c = np.zeros(len(self.user), np.uint64)
        for k, name in enumerate(("user", "read", "write", "kexec", "uexec", "glob")):
            c |= getattr(self, name).astype(np.uint64) << np.uint64(k)
        return c


def decode(mode: PagingMode, perm: np.ndarray, entry: np.ndarray, level: np.ndarray | None = None) -> Perms:
    """The rights an effective permission word and a leaf entry give (arrays in, arrays out);
    `level`, the leaves' levels, for the architectures whose bits depend on it (Bit.at).

    >>> p = decode(X86_64_4LEVEL, np.array([2], np.uint64), np.array([0x103], np.uint64))  # doctest: +SKIP
    >>> bool(p.write[0]), bool(p.kexec[0]), bool(p.glob[0])  # doctest: +SKIP
    (True, True, True)
    """
    b = arch_bits(mode)
    perm = np.asarray(perm, U64)
    entry = np.asarray(entry, U64)
    n = len(mode.levels)

    def t(bit: Bit, word: np.ndarray) -> np.ndarray:
        if not bit.entry and not bit.at and bit.also is None:
            return bit(word)  # the common case: one mask for every level
        return bit.test(perm, entry, level, n)

    user = t(b.user, perm)
    write = t(b.write, perm)
    kexec = t(b.kexec, perm)
    if b.implicit_pxn_if_user_write:
        kexec = kexec & ~(user & write)
    return Perms(user=user, read=t(b.read, perm), write=write, kexec=kexec, uexec=t(b.uexec, perm),
                 glob=b.glob.test(entry, entry, level, n) if b.glob.at else b.glob(entry))


def perm_strings(p: Perms) -> list[str]:
    """One short text per mapping: "kernel rw-", "user r-x", with " G" when global.

    `x` means executable at the privilege that owns the page; an arm64 kernel page that EL0 can
    execute (UXN clear) gets "X" instead.
    """
    names = [_perm_text(c) for c in range(64)]
    return [names[c] for c in p.code().tolist()]


def _perm_text(code: int) -> str:
    u, r, w, kx, ux, g = ((code >> k) & 1 for k in range(6))
    x = "x" if (ux if u else kx) else "-"
    if not u and ux:
        x = "X"
    return f"{'user' if u else 'kernel'} {'r' if r else '-'}{'w' if w else '-'}{x}{' G' if g else ''}"


# -- the interval arrays ---------------------------------------------------------------------------

@dataclass
class Mappings:
    """Intervals of one view, sorted by VA; see the module docstring.

    `va_start`, `size`, `pa_start` in bytes; `level` the hardware level of the entries (0 = root);
    `entry` the raw entry of the interval's first page; `perm` the effective permission word;
    `repeat` true where every entry maps the same block (`pa_size` bytes at `pa_start`);
    `status` MAPPED for real mappings (see `mapped()`), else FAULT / MISSING / UNWALKED.
    """

    mode: PagingMode
    root_pa: int
    view: str | None
    va_start: np.ndarray
    size: np.ndarray
    pa_start: np.ndarray
    level: np.ndarray
    entry: np.ndarray
    perm: np.ndarray
    repeat: np.ndarray
    status: np.ndarray
    _perms: Perms | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.va_start)

    @property
    def va_end(self) -> np.ndarray:
        """Exclusive ends (uint64: a mapping of the last page of the address space ends at 0)."""
        with np.errstate(over="ignore"):
            return self.va_start + self.size

    @property
    def span(self) -> np.ndarray:
        """Bytes one entry of each interval maps (the page size of its level)."""
        spans = np.array([lvl.entry_span for lvl in self.mode.levels], U64)
        return spans[self.level.astype(np.int64)]

    @property
    def pa_size(self) -> np.ndarray:
        """Bytes of physical memory each interval maps (one span for a repeat interval)."""
        return np.where(self.repeat, self.span, self.size)

    @property
    def pa_end(self) -> np.ndarray:
        return self.pa_start + self.pa_size

    @property
    def perms(self) -> Perms:
        if self._perms is None:
            self._perms = decode(self.mode, self.perm, self.entry, self.level)
        return self._perms

    @property
    def page_size(self) -> int:
        """The smallest page of the mode (the unit of the kernel's W+X page counts)."""
        return self.mode.levels[-1].entry_span

    def select(self, mask: np.ndarray) -> Mappings:
        """The intervals where `mask` is true, in the same order."""
        sub = Mappings(self.mode, self.root_pa, self.view, *(getattr(self, n)[mask] for n in _COLUMNS))
        if self._perms is not None:
            sub._perms = Perms(**{k: v[mask] for k, v in self._perms.__dict__.items()})
        return sub

    def mapped(self) -> Mappings:
        """Only the present leaf mappings (status MAPPED)."""
        return self.select(self.status == MAPPED)

    def level_names(self) -> list[str]:
        names = [lvl.name for lvl in self.mode.levels]
        return [names[i] for i in self.level.tolist()]

    def lookup(self, vas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(interval index, hit) of each VA: the interval holding it, hit False in a gap."""
        vas = np.asarray(vas, U64)
        if not len(self):
            return np.zeros(len(vas), np.int64), np.zeros(len(vas), bool)
        i = np.searchsorted(self.va_start, vas, side="right").astype(np.int64) - 1
        ic = np.maximum(i, 0)
        with np.errstate(over="ignore"):
            return ic, (i >= 0) & ((vas - self.va_start[ic]) < self.size[ic])

    def pa_of(self, idx: np.ndarray, vas: np.ndarray) -> np.ndarray:
        """The PA each VA translates to in interval `idx` (the VA must lie in it)."""
        delta = np.asarray(vas, U64) - self.va_start[idx]
        span = self.span[idx]
        return self.pa_start[idx] + np.where(self.repeat[idx], delta % span, delta)


_COLUMNS = ("va_start", "size", "pa_start", "level", "entry", "perm", "repeat", "status")


DEFERRED = -1  # item status of a child table whose intervals are placed when the view is flattened
INLINE_MAX = 4  # a child table flattening to at most this many intervals is copied into its parent


@dataclass
class _Items:
    """The item lists of the tables of one level, in CSR form (items of table t are
    off_csr[t]:off_csr[t+1], in entry order, coalesced within the table).

    An item is an interval (an own entry, or one of an inlined child table's intervals) or a
    deferred child table (status DEFERRED, `child` its index, `cnt` its intervals when flattened).
    `perm` is relative to the table: folded through this table's entries and those below only.
    """

    off_csr: np.ndarray  # int64, n + 1
    cols: dict[str, np.ndarray]  # off (VA offset in the table's span), size, pa, level, entry, perm, repeat, status, child
    cnt: np.ndarray | None  # int64 per item: intervals it flattens to (None: 1 each, the bottom level)
    count: np.ndarray  # int64 per table: intervals the table flattens to
    flat: np.ndarray  # bool per table: no deferred child


def _coalesce(mode: PagingMode, keymask: int, table: np.ndarray | None, c: dict[str, np.ndarray],
              split_at: list[int] | None = None) -> tuple[np.ndarray | None, dict]:
    """Merge neighbours (within each table when `table` is given; see the module docstring); `c`
    the columns in (table, off) order, consumed. Returns the tables of the kept items and the columns."""
    off, size, pa, rep, st, ent = c["off"], c["size"], c["pa"], c["repeat"], c["status"], c["entry"]
    n = len(off)
    if n < 2:
        return table, c
    spans = np.array([lvl.entry_span for lvl in mode.levels], U64)
    a = slice(None, -1)
    b = slice(1, None)
    adj = off[a] + size[a] == off[b]
    adj &= st[b] == MAPPED
    adj &= st[a] == MAPPED
    if table is not None:
        adj &= table[b] == table[a]
    adj &= c["level"][b] == c["level"][a]
    adj &= c["perm"][b] == c["perm"][a]
    adj &= ((ent[b] ^ ent[a]) & U64(keymask)) == 0
    for s_off in split_at or ():  # VA windows: contiguous offsets, not contiguous VAs
        adj &= off[b] != U64(s_off)
    if not adj.any():
        return table, c
    single = (~rep) & (size == spans[c["level"].astype(np.intp)])
    link_c = adj & ~rep[a] & ~rep[b] & (pa[b] == pa[a] + size[a])
    link_r = adj & (rep[a] | single[a]) & (rep[b] | single[b]) & (pa[b] == pa[a])
    del adj, single
    link = np.zeros(n, np.int8)  # link[k]: between k - 1 and k; 1 contiguous, 2 repeat
    link[1:][link_c] = 1
    link[1:][link_r] = 2
    del link_c, link_r
    prev = np.zeros(n, np.int8)
    prev[1:] = link[:-1]
    first = np.flatnonzero((link == 0) | ((prev != 0) & (prev != link)))
    del prev
    if len(first) == n:
        return table, c
    new_size = np.add.reduceat(size, first).astype(U64, copy=False)
    nxt = first + 1
    has_next = np.zeros(len(first), bool)
    has_next[:-1] = first[1:] > nxt[:-1]
    has_next[-1] = nxt[-1] < n
    nl = np.zeros(len(first), np.int8)
    nl[has_next] = link[nxt[has_next]]
    del link, nxt, has_next
    new_rep = rep[first] | (nl == 2)
    out = {}
    for k in list(c):
        v = c.pop(k)  # one column at a time: the old column is freed as the new one is made
        out[k] = new_size if k == "size" else new_rep if k == "repeat" else v[first]
        del v
    return (table[first] if table is not None else None), out


def _csr(table: np.ndarray, n: int) -> np.ndarray:
    off = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(table, minlength=n), out=off[1:])
    return off


def _check_total(total: int, mode: PagingMode, i: int, max_intervals: int) -> None:
    if total > max_intervals:
        raise PagewalkError(
            f"the mappings expand to more than {max_intervals} intervals at the {mode.levels[i].name} level "
            "(many entries share tables with varied contents: a page-table bomb?)"
        )


def _leaf_pa(bits: ArchBits, level: int, last: int, entry: np.ndarray, out: np.ndarray, slot_off: np.ndarray) -> np.ndarray:
    """Output PA of leaf entries; a riscv Svnapot PTE takes PA bits 15:12 from the VA."""
    if bits.napot_bit and level == last:
        napot = (entry & U64(bits.napot_bit)) != 0
        low = U64((1 << bits.napot_shift) - 1)
        return np.where(napot, out + (slot_off & low), out)
    return out


_COLS = {"off": U64, "size": U64, "pa": U64, "level": np.int8, "entry": U64, "perm": U64, "repeat": bool,
         "status": np.int8, "child": np.int64}


def _empty_cols(n: int = 0) -> dict[str, np.ndarray]:
    return {k: np.empty(n, t) for k, t in _COLS.items()}


def _finish(cols: dict[str, np.ndarray], table: np.ndarray, n: int, mode: PagingMode, i: int,
            max_intervals: int) -> _Items:
    cnt = cols.pop("cnt", None)
    off_csr = _csr(table, n)
    if cnt is None:  # every item is one interval (the bottom level: no child column either)
        return _Items(off_csr, cols, None, np.diff(off_csr), np.ones(n, bool))
    count = np.zeros(n, np.int64)
    if len(cnt):
        nz = off_csr[:-1] < off_csr[1:]
        count[nz] = np.add.reduceat(cnt, off_csr[:-1][nz])
    if count.size:
        _check_total(int(count.max()), mode, i, max_intervals)
    deferred = cols["status"] == DEFERRED
    flat = np.bincount(table[deferred], minlength=n) == 0
    return _Items(off_csr, cols, cnt, count, flat)


def _bottom(mem: MappedMemory, mode: PagingMode, lt: LevelTables, bits: ArchBits, keymask: int, max_intervals: int) -> _Items:
    """Items of every bottom-level table: its leaves (and faulting valid entries), coalesced per table."""
    i = len(mode.levels) - 1
    lvl = mode.levels[i]
    n, N = len(lt.pas), lvl.entries
    parts = []
    total = 0
    for c0 in range(0, n, _CHUNK_TABLES):
        pas = lt.pas[c0 : c0 + _CHUNK_TABLES]
        ent, ok = mem.gather_tables(pas, N, mode.dtype)
        e = ent.astype(U64, copy=False)
        hwk, out = mode.hw_classify(i, e)
        leaf = hwk == HwKind.LEAF
        sel = (leaf | ((hwk == HwKind.FAULT) & bits.valid.for_level(i, len(mode.levels))(e))) & ok[:, None]
        idx = np.flatnonzero(sel)
        del sel, hwk
        slot_off = (idx % N).astype(U64) << U64(lvl.shift)
        ef = e.reshape(-1)[idx]
        is_leaf = leaf.reshape(-1)[idx]
        pa = np.where(is_leaf, _leaf_pa(bits, i, i, ef, out.reshape(-1)[idx], slot_off), U64(0))
        del ent, e, out, leaf
        cols = {
            "off": slot_off,
            "size": np.full(len(idx), lvl.entry_span, U64),
            "pa": pa,
            "level": np.full(len(idx), i, np.int8),
            "entry": ef,
            "perm": mode.perm(i, ef),
            "repeat": np.zeros(len(idx), bool),
            "status": np.where(is_leaf, MAPPED, FAULT).astype(np.int8),
        }
        t, cols = _coalesce(mode, keymask, (idx // N + c0).astype(np.int64), cols)
        total += len(t)
        _check_total(total, mode, i, max_intervals)
        parts.append((t, cols))
        release = getattr(mem, "release", None)
        if release is not None and n > _CHUNK_TABLES:
            release()
    if parts:
        t = np.concatenate([p[0] for p in parts])
        cols = {}
        for k in list(parts[0][1]):
            cols[k] = np.concatenate([p[1].pop(k) for p in parts])
    else:
        t = np.zeros(0, np.int64)
        cols = _empty_cols()
        del cols["child"]
    return _finish(cols, t, n, mode, i, max_intervals)


def _upper(mode: PagingMode, i: int, lt: LevelTables, child_ok: np.ndarray, child: _Items, bits: ArchBits,
           keymask: int, max_intervals: int, root: bool) -> _Items:
    """Items of the tables of level `i`: own entries, inlined small flat children, deferred others."""
    lvl = mode.levels[i]
    n, N = lt.kind.shape
    kind = lt.kind.reshape(-1)
    ent = lt.entries.reshape(-1).astype(U64, copy=False)
    cidx = lt.child.reshape(-1)
    hwk, out = mode.hw_classify(i, ent)
    okrow = np.repeat(lt.ok, N)
    is_tab = kind == Kind.TABLE
    leaf = (hwk == HwKind.LEAF) & ((kind == Kind.LEAF) | is_tab) & okrow
    walk = is_tab & (hwk == HwKind.TABLE)
    tab_ok = walk.copy()
    tab_ok[walk] = child_ok[cidx[walk]]
    missing = walk & ~tab_ok
    valid = bits.valid.for_level(i, len(mode.levels))
    fault = (hwk == HwKind.FAULT) & valid(ent) & okrow
    unwalked = ((kind == Kind.HOLE) | (kind == Kind.SKIP)) & (hwk != HwKind.FAULT) & valid(ent) & okrow
    own = leaf | missing | fault | unwalked
    ccount = np.zeros(n * N, np.int64)
    ccount[tab_ok] = child.count[cidx[tab_ok]]
    cflat = np.zeros(n * N, bool)
    cflat[tab_ok] = child.flat[cidx[tab_ok]]
    inline = tab_ok & cflat & (ccount <= INLINE_MAX) & (ccount > 0)
    defer = tab_ok & ~inline & (ccount > 0)
    items = np.zeros(n * N, np.int64)
    items[own] = 1
    items[defer] = 1
    citems = child.off_csr[1:] - child.off_csr[:-1]
    items[inline] = citems[cidx[inline]]
    total = int(items.sum())
    pos = np.zeros(n * N + 1, np.int64)
    np.cumsum(items, out=pos[1:])
    entry_off = (np.arange(n * N, dtype=U64) % U64(N)) << U64(lvl.shift)
    r_table = np.repeat(np.arange(n * N, dtype=np.int64) // N, items)
    c = _empty_cols(total)
    c["cnt"] = np.ones(total, np.int64)
    # the entry's own interval
    p = pos[:-1][own]
    e_own = ent[own]
    st = np.select([leaf[own], fault[own], missing[own]], [MAPPED, FAULT, MISSING], UNWALKED).astype(np.int8)
    c["off"][p] = entry_off[own]
    c["size"][p] = lvl.entry_span
    c["pa"][p] = np.where(st == FAULT, U64(0), _leaf_pa(bits, i, len(mode.levels) - 1, e_own, out[own], entry_off[own]))
    c["level"][p] = i
    c["entry"][p] = e_own
    c["perm"][p] = mode.perm(i, e_own)
    c["repeat"][p] = False
    c["status"][p] = st
    c["child"][p] = -1
    # deferred children: one item each
    p = pos[:-1][defer]
    e_def = ent[defer]
    c["off"][p] = entry_off[defer]
    c["size"][p] = lvl.entry_span
    c["pa"][p] = 0
    c["level"][p] = i
    c["entry"][p] = e_def
    c["perm"][p] = mode.perm(i, e_def)
    c["repeat"][p] = False
    c["status"][p] = DEFERRED
    c["child"][p] = cidx[defer]
    c["cnt"][p] = ccount[defer]
    # inlined children: their intervals, moved to the entry's VA, permissions folded through the entry
    if inline.any():
        tc = items[inline]
        src0 = child.off_csr[cidx[inline]]
        k = np.arange(int(tc.sum()), dtype=np.int64) - np.repeat(np.cumsum(tc) - tc, tc)
        dst = np.repeat(pos[:-1][inline], tc) + k
        src = np.repeat(src0, tc) + k
        parent_perm = np.repeat(mode.perm(i, ent[inline]), tc)
        c["off"][dst] = np.repeat(entry_off[inline], tc) + child.cols["off"][src]
        for name in ("size", "pa", "level", "entry", "repeat", "status"):
            c[name][dst] = child.cols[name][src]
        c["child"][dst] = child.cols["child"][src] if "child" in child.cols else -1
        c["perm"][dst] = mode.perm_combine(parent_perm, child.cols["perm"][src])
    t, c = _coalesce(mode, keymask, r_table, c, split_at=window_offsets(mode)[1:] if root else None)
    return _finish(c, t, n, mode, i, max_intervals)


def _flatten(mode: PagingMode, levels: list[_Items], max_intervals: int) -> dict[str, np.ndarray]:
    """All intervals of the root table in VA order: the deferred children placed top-down, each
    bottom table's items copied once per reference (in bounded chunks)."""
    total = int(levels[0].count[0]) if len(levels[0].count) else 0
    _check_total(total, mode, 0, max_intervals)
    out = {k: np.empty(total, t) for k, t in _COLS.items() if k != "child"}
    refs = np.zeros(1, np.int64) if total else np.zeros(0, np.int64)
    base = np.zeros(len(refs), U64)
    pos = np.zeros(len(refs), np.int64)
    rperm: np.ndarray | None = None  # the root's items are not folded through anything
    for i, it in enumerate(levels):
        if not len(refs):
            break
        # exclusive prefix of `cnt` within each table: an item's first interval in its table's output
        if it.cnt is not None:
            cs = np.zeros(len(it.cnt) + 1, np.int64)
            np.cumsum(it.cnt, out=cs[1:])
            start_in_table = cs[:-1] - np.repeat(cs[it.off_csr[:-1]], np.diff(it.off_csr))
        nitems = it.off_csr[refs + 1] - it.off_csr[refs]
        bounds = np.cumsum(nitems)
        new_refs, new_base, new_pos, new_perm = [], [], [], []
        r0 = 0
        while r0 < len(refs):  # chunks of about 1M items: bounded temporaries
            r1 = int(np.searchsorted(bounds, (bounds[r0 - 1] if r0 else 0) + (1 << 20), side="right"))
            r1 = max(r1, r0 + 1)
            sl = slice(r0, r1)
            k = nitems[sl]
            m = int(k.sum())
            ramp = np.arange(m, dtype=np.int64) - np.repeat(np.cumsum(k) - k, k)
            src = np.repeat(it.off_csr[refs[sl]], k) + ramp
            ref_of = np.repeat(np.arange(r0, r1, dtype=np.int64), k)
            if it.cnt is None:  # one interval per item: its place in the table is its index there
                dst = pos[ref_of] + (src - it.off_csr[refs[ref_of]])
            else:
                dst = pos[ref_of] + start_in_table[src]
            off = base[ref_of] + it.cols["off"][src]
            perm = it.cols["perm"][src]
            if rperm is not None:
                perm = mode.perm_combine(rperm[ref_of], perm)
            st = it.cols["status"][src]
            iv = st != DEFERRED
            every = bool(iv.all())
            d = dst if every else dst[iv]
            s_iv = src if every else src[iv]
            if len(d) and int(d[-1]) - int(d[0]) == len(d) - 1:  # increasing: contiguous in the output
                d = slice(int(d[0]), int(d[-1]) + 1)
            if len(s_iv) and int(s_iv[-1]) - int(s_iv[0]) == len(s_iv) - 1 and bool(np.all(np.diff(s_iv) == 1)):
                s_iv = slice(int(s_iv[0]), int(s_iv[-1]) + 1)  # tables in VA order: a block copy
            out["off"][d] = off if every else off[iv]
            out["perm"][d] = perm if every else perm[iv]
            for name in ("size", "pa", "level", "entry", "repeat", "status"):
                out[name][d] = it.cols[name][s_iv]
            df = ~iv
            if not every:
                new_refs.append(it.cols["child"][src[df]])
                new_base.append(off[df])
                new_pos.append(dst[df])
                new_perm.append(perm[df])
            r0 = r1
        if new_refs:
            refs, base, pos, rperm = (np.concatenate(x) for x in (new_refs, new_base, new_pos, new_perm))
        else:
            refs = np.zeros(0, np.int64)
        levels[i] = None  # type: ignore[call-overload]  # free each level once placed
    return out


def attribute_mask(mode: PagingMode) -> int:
    """Entry bits that are attributes for coalescing: ptdump's key bits without A/D-like status."""
    return mode.ptdump_key_mask & ~arch_bits(mode).status_mask & ((1 << 64) - 1)


def compute(mem: MappedMemory, mode: PagingMode, root_pa: int, view: str | None = None, *,
            tables: list[LevelTables] | None = None, max_intervals: int = MAX_INTERVALS) -> Mappings:
    """The intervals of the address space under `root_pa` (all statuses; see `Mappings.mapped()`).

    Bottom-up, each table's items (coalesced within the table; a child table that flattens to
    at most INLINE_MAX intervals is copied into its parent, so a table shared by a million
    entries, KASAN's early shadow, costs one interval); then top-down, the deferred children are
    placed once per reference, every column copied once; then neighbours across tables are
    coalesced in one pass. Time and memory go with the intervals, never with the pages.

    >>> m = compute(target.mem, target.mode, target.root("kernel"))  # doctest: +SKIP
    """
    bits = arch_bits(mode)
    keymask = attribute_mask(mode)
    if tables is None:
        tables = discover(mem, mode, root_pa)
    nlev = len(tables)
    levels: list[_Items] = [None] * nlev  # type: ignore[list-item]
    levels[-1] = _bottom(mem, mode, tables[-1], bits, keymask, max_intervals)
    for i in range(nlev - 2, -1, -1):
        levels[i] = _upper(mode, i, tables[i], tables[i + 1].ok, levels[i + 1], bits, keymask, max_intervals,
                           root=(i == 0))
    c = _flatten(mode, levels, max_intervals)
    del levels
    _, c = _coalesce(mode, keymask, None, c, split_at=window_offsets(mode)[1:])
    va = to_va(mode, c.pop("off"))
    return Mappings(mode, root_pa, view, va, c["size"], c["pa"], c["level"], c["entry"], c["perm"], c["repeat"],
                    c["status"])


def _windows(mode: PagingMode) -> list[tuple[int, int]]:
    """(offset in the root table's span, VA) of the start of each of the mode's VA windows
    (`mode.va_windows()`: both canonical halves, arm64 TTBR1, ppc64 quadrant 3, mips64 XKSEG and
    CKSSEG), by offset."""
    out = sorted({(mode.table_offset(va0 % TOP), va0 % TOP) for va0, _ in mode.va_windows()})
    return out or [(0, mode.canonical_va(0) % TOP)]


def window_offsets(mode: PagingMode) -> list[int]:
    """Offsets in the root table's span where a VA window starts (the first is the lowest)."""
    return [o for o, _ in _windows(mode)]


def to_va(mode: PagingMode, off: np.ndarray) -> np.ndarray:
    """Virtual addresses of offsets in the root table's span, through the mode's VA windows
    (canonical halves, TTBR1 numbering, mips64's XKSEG and compatibility segments)."""
    off = np.asarray(off, U64)
    wins = _windows(mode)
    with np.errstate(over="ignore"):
        out = off + U64((wins[0][1] - wins[0][0]) % TOP)
        for o0, va0 in wins[1:]:
            out = np.where(off >= U64(o0), off + U64((va0 - o0) % TOP), out)
    return out


def mappings(target, view: str = "kernel", **kw) -> Mappings:
    """The intervals of one view of a resolved Target (all statuses).

    >>> m = mappings(resolve(open_image("core.elf")), "kernel").mapped()  # doctest: +SKIP
    """
    mode = target.mode_for(view)
    return compute(target.mem, mode, target.root(view), view, **kw)


def kernel_half_start(mode: PagingMode) -> int:
    """First VA of the kernel's half: the upper half of a 64-bit space (x86-64, arm64 TTBR1,
    riscv64); riscv32's kernel starts at PAGE_OFFSET, 0xC0000000 by default; an architecture's
    ArchBits.kernel_va_start when it gives one."""
    if mode.arch == "riscv32":
        return 0xC0000000
    start = arch_bits(mode).kernel_va_start
    return (1 << 63) if start is None else start


Decoder = Callable[[PagingMode, np.ndarray, np.ndarray], Perms]


# -- per-page views, like the kernel's pagemap / hmm and mincore users ----------------------------

PM_PRESENT = 1 << 63  # /proc/PID/pagemap bit 63: page present (Documentation/admin-guide/mm/pagemap.rst)
PM_PFRAME_MASK = (1 << 55) - 1  # bits 0-54: the page frame number
MAX_PAGES = 1 << 26  # per call: 512 MiB of uint64 output


def _pages(m: Mappings, va_start: int, va_end: int) -> np.ndarray:
    page = m.page_size
    if va_end <= va_start:
        raise PagewalkError(f"empty range {va_start:#x}-{va_end:#x}")
    first = va_start - va_start % page
    n = -(-(va_end - first) // page)
    if n > MAX_PAGES:
        raise PagewalkError(f"{n} pages in {va_start:#x}-{va_end:#x}: more than {MAX_PAGES} per call; split the range")
    return U64(first % TOP) + np.arange(n, dtype=U64) * U64(page)


def pagemap(target, va_start: int, va_end: int, view: str = "kernel", *, m: Mappings | None = None) -> np.ndarray:
    """One uint64 per page of [va_start, va_end) in /proc/PID/pagemap's format: bit 63 present,
    bits 0-54 the PFN (the frame of the page's first byte); 0 where nothing is mapped.

    Pages are the mode's smallest (4 KiB, or the arm64 granule); a 2 MiB leaf gives 512
    consecutive PFNs, as the kernel's pagemap and hmm_range_fault() report them.

    >>> pm = pagemap(target, 0xffffffff81000000, 0xffffffff81004000)  # doctest: +SKIP
    >>> [hex(x & PM_PFRAME_MASK) for x in pm]  # doctest: +SKIP
    ['0x1000', '0x1001', '0x1002', '0x1003']
    """
    m = (m if m is not None else mappings(target, view)).mapped()
    vas = _pages(m, va_start, va_end)
    idx, hit = m.lookup(vas)
    out = np.zeros(len(vas), U64)
    if hit.any():
        pa = m.pa_of(idx[hit], vas[hit])
        shift = U64(m.page_size.bit_length() - 1)
        out[hit] = ((pa >> shift) & U64(PM_PFRAME_MASK)) | U64(PM_PRESENT)
    return out


def mincore(target, va_start: int, va_end: int, view: str = "kernel", *, in_image: bool = False,
            m: Mappings | None = None) -> np.ndarray:
    """Residency of each page of [va_start, va_end), like mincore(2) for mapped memory: True where
    a present leaf maps the page. With `in_image`, the image must also hold the physical page
    (a minimised core holds only the page tables).

    >>> mincore(target, 0xffffffff81000000, 0xffffffff81002000).tolist()  # doctest: +SKIP
    [True, True]
    """
    m = (m if m is not None else mappings(target, view)).mapped()
    vas = _pages(m, va_start, va_end)
    idx, hit = m.lookup(vas)
    if in_image and hit.any():
        pa = m.pa_of(idx[hit], vas[hit])
        _, ok = target.mem.file_offsets(pa, m.page_size)
        hit[np.flatnonzero(hit)[~ok]] = False
    return hit


def leaf_entries(mem: MappedMemory, mode: PagingMode, root_pa: int, vas: np.ndarray) -> np.ndarray:
    """The raw leaf entry the MMU uses for each VA (0 where the walk faults), one gather per
    level for all addresses (translate_many()'s walk, keeping the entry)."""
    vas = np.asarray(vas, U64)
    out = np.zeros(len(vas), U64)
    off = vas & U64((1 << mode.va_bits) - 1)
    live = np.flatnonzero(np.array([mode.is_canonical(v) for v in vas.tolist()], bool)) if len(vas) < 64 else \
        np.flatnonzero(to_va(mode, off) == vas)
    table = np.full(len(live), root_pa, U64)
    for i, lvl in enumerate(mode.levels):
        if not len(live):
            break
        o = off[live]
        ent_pa = table + ((o >> U64(lvl.shift)) & U64(lvl.entries - 1)) * U64(mode.entry_bytes)
        ent, have = mem.gather(ent_pa, mode.dtype)
        ent = ent.astype(U64)
        kind, nxt = mode.hw_classify(i, ent)
        kind = np.where(have, kind, np.uint8(HwKind.FAULT))
        leaf = kind == HwKind.LEAF
        out[live[leaf]] = ent[leaf]
        cont = kind == HwKind.TABLE
        live = live[cont]
        table = nxt[cont]
    return out
