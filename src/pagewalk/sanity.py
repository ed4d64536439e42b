"""A cheap look at the tables near the root: does this root, read in this paging mode, look like
a kernel's page tables at all?

A wrong root (`--reg cr3=` an address of kernel text, data, zeros or random bytes) or a wrong mode
(a 4-level table read as 5-level, Sv39 as Sv57) still walks: `dump` would print a confident ptdump
of garbage. The MMU's own view tells them apart for little: among the *valid* entries of the upper
levels (the root and the tables below it, at most MAX_TABLES tables and MAX_ENTRIES valid
entries), a real kernel's have no reserved bit set (`mode.hw_classify` -> HwKind.FAULT, the
`reserved` count of `pagewalk stats` and the `reserved-bits` finding of `pagewalk check`) and
their table pointers land in the image (`extract` keeps every table). Garbage fails one or the
other for a good part of its entries (BAD_FRACTION below). Leaves are not followed: a minimised
core holds tables only. A kernel root without any valid entry is wrong as well: it maps the kernel.

x86 modes carry single-entry hooks (`mode.extra["scalar_hooks"]`): their survey runs on Python
ints and does not import numpy (the compiled x86-64 dump runs without it, README "How it is
fast"); the other architectures use the array hooks.
"""

from __future__ import annotations

from ._lazynp import np  # numpy on first use: the x86 survey never touches it
from .errors import PagewalkError
from .mode import HwKind

MAX_TABLES = 64  # tables read: the root, then tables of the levels below it, breadth first
MAX_ENTRIES = 512  # valid entries looked at (a bomb's or a random root's tables are full of them)
PER_TABLE = 64  # valid entries looked at per table, spread evenly over it (the rest tell no more)
MAX_LEVELS = 4  # levels looked at, from the root (never the last: its entries are leaves only)
# Warn when at least this fraction of the valid entries surveyed is wrong (reserved or pointing
# outside the image), and at least MIN_BAD are. Calibrated on the committed captures (every
# architecture, view, with and without kallsyms: 5 to 163 valid entries surveyed, none wrong) and
# on wrong roots and modes made from them: random bytes, text or code as the root have 30-100% wrong
# (or no valid entry), a core read with more levels than it has 50% or more, a lower-level table of
# the capture taken for the root 8.6% or more (or none: a PMD can look like a fine PGD).
BAD_FRACTION = 1 / 16
MIN_BAD = 1
KERNEL_VIEWS = ("kernel", "current_kernel")  # a kernel root always maps the kernel: never empty

_X86_PRESENT = 1  # Intel SDM Vol. 3A tables 4-4 to 4-20: bit 0 P; an entry with P=0 is not looked at


class Survey:
    """What the MMU makes of the valid entries near one root."""

    __slots__ = ("absent", "levels", "reserved", "tables", "valid")

    def __init__(self) -> None:
        self.valid = 0  # valid entries looked at (P=1, V=1, descriptor bit 0, ...)
        self.reserved = 0  # of them, faulting: reserved bits or encodings (HwKind.FAULT)
        self.absent = 0  # of them, table pointers to a table the image does not hold
        self.tables = 0  # tables read
        self.levels = 0  # levels looked at

    @property
    def bad(self) -> int:
        return self.reserved + self.absent

    def __repr__(self) -> str:
        return (f"Survey(valid={self.valid}, reserved={self.reserved}, absent={self.absent}, "
                f"tables={self.tables}, levels={self.levels})")


def survey(mem, mode, root_pa: int, *, max_tables: int = MAX_TABLES, max_entries: int = MAX_ENTRIES,
           max_levels: int = MAX_LEVELS) -> Survey | None:
    """Count the valid, reserved and absent-table entries of the upper levels below `root_pa`
    (None: the root table is not in the image; resolve() reports that itself).

    Breadth first; what is left of the table and entry budgets is shared out evenly among the
    levels still to come, and a level with more tables than its share is sampled evenly across
    the address space, so that a few big regions (x86's preallocated vmalloc PUDs) do not use it up.
    """
    levels = max(1, min(max_levels, len(mode.levels) - 1))
    scalar = mode.extra.get("scalar_hooks")
    if scalar is not None and mode.arch in ("x86_64", "i386") and "index_window" not in mode.extra:
        table = _scalar_table(mode, scalar[0])
    else:
        table = _array_table(mode)
    s = Survey()
    todo: list[tuple[int, object]] = [(root_pa, None)]  # (table PA, the entry pointing at it)
    for i in range(levels):
        size = _table_size(mode, i)
        next_size = _table_size(mode, i + 1) if i + 1 < len(mode.levels) else size
        share = max(1, (max_tables - s.tables) // (levels - i))
        todo = _spread(todo, share)
        entry_share = (max_entries - s.valid) // (levels - i)
        nxt: dict[int, object] = {}
        held: dict[int, bool] = {}
        for pa, parent in todo:
            raw = _read(mem, pa, size)
            if raw is None:
                if i == 0:
                    return None
                continue
            s.tables += 1
            if raw.count(0) == size or entry_share <= 0:
                continue
            valid, reserved, children = table(i, raw, parent, entry_share)
            entry_share -= valid
            s.valid += valid
            s.reserved += reserved
            for child, entry in children:
                ok = held.get(child)
                if ok is None:
                    ok = held[child] = mem.contains(child, next_size)
                if not ok:
                    s.absent += 1
                elif child not in nxt:
                    nxt[child] = entry
        s.levels = i + 1
        todo = list(nxt.items())
        if not todo:
            break
    return s


def _spread(items, n: int):
    """At most `n` of `items` (a list or an array), evenly spaced, first included."""
    if len(items) <= n:
        return items
    return [items[k * len(items) // n] for k in range(n)] if isinstance(items, list) else items[
        (np.arange(n) * len(items)) // n]


def _table_size(mode, i: int) -> int:
    return mode.levels[i].entries * mode.entry_bytes


def _read(mem, pa: int, size: int) -> bytes | None:
    try:
        return mem.read(pa, size)
    except (PagewalkError, OverflowError, ValueError):
        return None


def _scalar_table(mode, hw_one):
    """One table's (valid, reserved, [(child table PA, entry)]) on Python ints through x86's
    hw_classify_one (no numpy)."""
    code = "Q" if mode.entry_bytes == 8 else "I"

    def table(i: int, raw: bytes, parent: object, budget: int) -> tuple[int, int, list[tuple[int, int]]]:
        present = [e for e in memoryview(raw).cast(code) if e & _X86_PRESENT]
        present = _spread(present, min(budget, PER_TABLE))
        reserved = 0
        children = []
        seen: dict[int, tuple[int, int]] = {}
        for e in present:
            k = seen.get(e)
            if k is None:
                k = seen[e] = hw_one(i, e)
            if k[0] == HwKind.FAULT:
                reserved += 1
            elif k[0] == HwKind.TABLE:
                children.append((k[1], e))
        return len(present), reserved, children

    return table


def _array_table(mode):
    """One table's (valid, reserved, [(child table PA, entry)]) through the array hooks."""
    valid_bits = _valid_tests(mode)
    window = mode.extra.get("index_window")  # partial tables (s390 TF/TL), as runs.discover() reads them
    count = [lvl.entries for lvl in mode.levels]

    def table(i: int, raw: bytes, parent: object, budget: int) -> tuple[int, int, list[tuple[int, int]]]:
        e = np.frombuffer(raw, dtype=mode.dtype).astype(np.uint64)
        if window is not None:
            lo, hi = window(i, None if parent is None else np.array([parent], np.uint64))
            col = np.arange(count[i], dtype=np.uint64)
            e = np.where((col >= np.uint64(int(lo[0]))) & (col < np.uint64(int(hi[0]))), e, np.uint64(0))
        valid = np.asarray(valid_bits(i, e), bool) & (e != 0)
        if not valid.any():
            return 0, 0, []
        kind, out = mode.hw_classify(i, e[None, :])  # whole rows: some hooks look at neighbours
        idx = _spread(np.flatnonzero(valid), min(budget, PER_TABLE))
        ev, kind, out = e[idx], np.asarray(kind).reshape(-1)[idx], np.asarray(out).reshape(-1)[idx]
        tab = np.flatnonzero(kind == HwKind.TABLE)
        children = list(zip(out[tab].tolist(), ev[tab].tolist()))
        return len(idx), int((kind == HwKind.FAULT).sum()), children

    return table


def _valid_tests(mode):
    """level, entries -> which entries the MMU looks at (analysis.mappings' ArchBits.valid)."""
    try:
        from .analysis.mappings import arch_bits

        bits = arch_bits(mode).valid
    except PagewalkError:  # an architecture the analyses do not know: any non-zero entry
        return lambda i, e: e != 0
    n = len(mode.levels)
    return lambda i, e: bits.for_level(i, n)(e)


def root_warning(target, view: str = "kernel") -> str | None:
    """One line saying that the root or the paging mode of `view` looks wrong, or None.

    >>> root_warning(resolve(open_image("core.elf"), regs={"cr3": 0x1000000}))  # doctest: +SKIP
    '410 of 410 valid entries looked at in the root table of the kernel view point at tables outside ...'
    """
    try:
        root = target.root(view)
        mode = target.mode_for(view)
    except PagewalkError:
        return None  # the command itself says why
    s = survey(target.mem, mode, root)
    if s is None:
        return None
    ask = f"is the root (PA {root:#x}) or the paging mode ({mode.name}) right? (--reg sets them)"
    if s.valid == 0:
        if view in KERNEL_VIEWS:  # a user root may be empty (arm64 TTBR0 of a kernel thread)
            return f"the root table of the {view} view has no valid entry, yet a kernel's maps the kernel: {ask}"
        return None
    if s.bad < MIN_BAD or s.bad < BAD_FRACTION * s.valid:
        return None
    where = "the root table" if s.levels <= 1 else f"the top {s.levels} levels"
    if s.reserved and s.absent:
        what = (f"have reserved bits set ({s.reserved}) or point at tables outside the image "
                f"({s.absent})")
    elif s.reserved:
        what = "have reserved bits set (the MMU faults on them)"
    else:
        what = "point at tables outside the image"
    return f"{s.bad} of {s.valid} valid entries looked at in {where} of the {view} view {what}: {ask}"
