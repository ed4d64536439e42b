"""Translation as the MMU does it: one VA with a per-level trace, or many VAs at once."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._lazynp import np  # numpy on first use: a mode with scalar hooks translates one VA without it
from .errors import MemoryReadError, PagewalkError
from .memory.base import MappedMemory
from .mode import HwKind, PagingMode


@dataclass
class Step:
    """One level of a translation: which table, which index, which entry, what it means."""

    level: str
    table_pa: int
    index: int
    entry: int | None  # None: the table is not in the image
    flags: str
    kind: str  # "table", "leaf", "fault", "missing"
    perm: int = 0  # permission word folded down to this level


@dataclass
class Translation:
    """Result of translate(): the trace, then the PA and page size, or why it faulted."""

    va: int
    steps: list[Step] = field(default_factory=list)
    pa: int | None = None
    page_size: int | None = None
    fault: str | None = None
    perm: int = 0  # effective permission word (arch-defined bits) of the final entry

    @property
    def ok(self) -> bool:
        return self.pa is not None


def translate(mem: MappedMemory, mode: PagingMode, root_pa: int, va: int) -> Translation:
    """Walk `va` from `root_pa` as the MMU would and record every level.

    >>> t = translate(mem, X86_64_4LEVEL, 0x1000, 0xffffffff81000000)  # doctest: +SKIP
    >>> hex(t.pa)  # doctest: +SKIP
    """
    tr = Translation(va=va)
    if not mode.is_canonical(va):
        tr.fault = f"{va:#x} is not a canonical address for {mode.name} ({mode.va_bits}-bit)"
        return tr
    off = mode.table_offset(va)
    table_pa = root_pa
    window = mode.extra.get("index_window")  # partial tables (s390 TF/TL): see runs.discover()
    # (hw_classify, perm, perm_combine) of one entry as an int, where the mode has them (x86)
    scalar = mode.extra.get("scalar_hooks") if window is None else None
    perm = mode.perm_top if scalar else np.uint64(mode.perm_top)
    parent: np.ndarray | None = None
    for i, lvl in enumerate(mode.levels):
        idx = (off >> lvl.shift) & (lvl.entries - 1)
        entry_pa = table_pa + idx * mode.entry_bytes
        if window is not None:
            lo, hi = (int(x[0]) for x in window(i, parent))
            if not lo <= idx < hi:
                order = "little" if mode.byteorder == "<" else "big"
                try:  # shown in the trace; the CPU does not read it
                    raw_out: int | None = int.from_bytes(mem.read(entry_pa, mode.entry_bytes), order)
                except MemoryReadError:
                    raw_out = None
                flags = f"outside the table (indexes {lo}..{hi - 1})"
                tr.steps.append(Step(lvl.name, table_pa, idx, raw_out, flags, "fault"))
                tr.fault = f"{lvl.name} index {idx} outside the table's {lo}..{hi - 1}: {mode.extra['window_fault'](i)}"
                return tr
        try:
            raw = mem.read(entry_pa, mode.entry_bytes)
        except MemoryReadError:
            tr.steps.append(Step(lvl.name, table_pa, idx, None, "", "missing"))
            tr.fault = f"the {lvl.name} table at PA {table_pa:#x} is not in the image"
            return tr
        entry = int.from_bytes(raw, "little" if mode.byteorder == "<" else "big")
        if scalar:
            hw_one, perm_one, combine_one = scalar
            arr = None
            k, o = hw_one(i, entry)
            perm = combine_one(perm, perm_one(i, entry))
        else:
            arr = np.array([entry], dtype=np.uint64)
            kind, out = mode.hw_classify(i, arr)
            k, o = int(kind[0]), int(out[0])
            perm = mode.perm_combine(np.array([perm], np.uint64), mode.perm(i, arr))[0]
        flags = mode.describe(lvl.name, entry)
        if k == HwKind.FAULT:
            tr.steps.append(Step(lvl.name, table_pa, idx, entry, flags, "fault", int(perm)))
            tr.fault = f"{lvl.name} entry {entry:#018x}: {mode.fault_reason(o)}"
            return tr
        if k == HwKind.LEAF:
            leaf_check = mode.extra.get("leaf_check")  # e.g. arm64: an inconsistent contiguous run
            note = leaf_check(mem, i, table_pa, idx) if leaf_check else None
            if note:
                flags += f"  [warning: {note}]"
            tr.steps.append(Step(lvl.name, table_pa, idx, entry, flags, "leaf", int(perm)))
            tr.page_size = lvl.entry_span
            leaf_pa = mode.extra.get("leaf_pa")  # e.g. riscv Svnapot: the PA depends on more than the entry
            tr.pa = leaf_pa(mode, i, entry, va) if leaf_pa else o + (off & (lvl.entry_span - 1))
            tr.perm = int(perm)
            return tr
        tr.steps.append(Step(lvl.name, table_pa, idx, entry, flags, "table", int(perm)))
        table_pa = o
        parent = arr
    raise PagewalkError(f"{mode.name}: the walk of {va:#x} did not end at the last level")  # pragma: no cover


def translate_many(
    mem: MappedMemory, mode: PagingMode, root_pa: int, vas: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Translate an array of VAs at once: (pa, page_size, ok); faults have ok False, pa 0.

    One gather per level for all addresses still walking.
    >>> pa, size, ok = translate_many(mem, mode, root, np.array([va1, va2], np.uint64))  # doctest: +SKIP
    """
    vas = np.asarray(vas, dtype=np.uint64)
    n = len(vas)
    pa = np.zeros(n, np.uint64)
    size = np.zeros(n, np.uint64)
    ok = np.zeros(n, bool)
    if mode.canonical:
        off = vas & np.uint64((1 << mode.va_bits) - 1)
        sign = (off >> np.uint64(mode.va_bits - 1)) & np.uint64(1)
        high = vas >> np.uint64(mode.va_bits - 1)
        expect = np.where(sign == 1, np.uint64((1 << (65 - mode.va_bits)) - 1), np.uint64(0))
        live = high == expect
    else:
        # VAs are an offset from a base (0, or arm64's TTBR1 region at the top of the space)
        with np.errstate(over="ignore"):
            off = vas - np.uint64(mode.canonical_va(0))
        live = (off >> np.uint64(mode.va_bits)) == 0 if mode.va_bits < 64 else np.ones(n, bool)
    idx_live = np.nonzero(live)[0]
    table = np.full(len(idx_live), root_pa, dtype=np.uint64)
    window = mode.extra.get("index_window")  # partial tables (s390 TF/TL): see runs.discover()
    parent = None
    for i, lvl in enumerate(mode.levels):
        if len(idx_live) == 0:
            break
        o = off[idx_live]
        index = (o >> np.uint64(lvl.shift)) & np.uint64(lvl.entries - 1)
        if window is not None:
            lo, hi = window(i, parent)
            inside = (index >= lo) & (index < hi)
            idx_live, table, o, index = idx_live[inside], table[inside], o[inside], index[inside]
        ent_pa = table + index * np.uint64(mode.entry_bytes)
        ent, have = mem.gather(ent_pa, mode.dtype)
        kind, out = mode.hw_classify(i, ent.astype(np.uint64))
        kind = np.where(have, kind, np.uint8(HwKind.FAULT))
        leaf = kind == HwKind.LEAF
        if leaf.any():
            li = idx_live[leaf]
            m = np.uint64(lvl.entry_span - 1)
            leaf_pa = mode.extra.get("leaf_pa")
            if leaf_pa:
                pa[li] = leaf_pa(mode, i, ent[leaf].astype(np.uint64), vas[li])
            else:
                pa[li] = out[leaf] + (o[leaf] & m)
            size[li] = lvl.entry_span
            ok[li] = True
        cont = kind == HwKind.TABLE
        idx_live = idx_live[cont]
        table = out[cont]
        parent = ent[cont].astype(np.uint64)
    return pa, size, ok
