"""Paging modes as data: the VA split per level, entry format, and a few whole-table hooks.

A mode describes one hardware translation regime the way the kernel's generic code sees it:
levels from the root down, each with its kernel name and its note_page()/pte_hole() level
numbers (folded levels accounted for, as `real_depth()` in mm/pagewalk.c does). Sizes are
computed from the shifts, never typed in. Everything an architecture knows about its entries
lives in the hooks, which take one level and a numpy array of raw entries and work on all of them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from ._lazynp import np  # numpy on first use: resolving a target does not need it
from ._record import FrozenRecord


class Kind(enum.IntEnum):
    """How the kernel's generic walker treats one entry (mm/pagewalk.c, walk_p?d_range())."""

    HOLE = 0  # p?d_none() or p?d_bad(): pte_hole(addr, next, depth)
    LEAF = 1  # p?d_leaf(), or any PTE slot: note_page(addr, level, val)
    TABLE = 2  # descend into the next-level table
    SKIP = 3  # not none, not a leaf, not present: neither reported nor descended into


class HwKind(enum.IntEnum):
    """What the MMU does with one entry during a translation."""

    FAULT = 0
    LEAF = 1
    TABLE = 2


class Level(FrozenRecord):
    """One hardware level: which VA bits index it and what the kernel calls it."""

    _fields = ("name", "shift", "bits", "klevel", "hole_depth")

    def __init__(self, name: str, shift: int, bits: int, klevel: int, hole_depth: int) -> None:
        self._set(
            name=name,  # kernel name: pgd, p4d, pud, pmd, pte
            shift=shift,  # VA bit where this level's index starts (log2 of the size one entry maps)
            bits=bits,  # index width: the table has 1 << bits entries
            klevel=klevel,  # level number of note_page() events for entries of this table (0 pgd .. 4 pte)
            hole_depth=hole_depth,  # depth that pte_hole() reports for a none entry (folded levels merged)
        )

    @property
    def entries(self) -> int:
        return 1 << self.bits

    @property
    def entry_span(self) -> int:
        """Bytes of VA one entry maps."""
        return 1 << self.shift

    @property
    def table_span(self) -> int:
        """Bytes of VA one whole table maps."""
        return 1 << (self.shift + self.bits)


# Hook signatures. `level` is the hardware level index, 0 = root.
Classify = Callable[[int, "np.ndarray"], "tuple[np.ndarray, np.ndarray]"]
Perm = Callable[[int, "np.ndarray"], "np.ndarray"]
Combine = Callable[["np.ndarray", "np.ndarray"], "np.ndarray"]


def _no_reason(code: int) -> str:
    return "fault"


def _no_description(level: str, entry: int) -> str:
    return ""


class PagingMode(FrozenRecord):
    """A paging mode: geometry plus whole-array hooks for the kernel's and the MMU's view.

    `classify(level, entries)` gives (Kind per entry, next-table or output PA per entry) as the
    kernel's walker sees them; `hw_classify` the same as the MMU sees them (HwKind, and a reason
    code the arch explains in `fault_reason`). `perm` extracts the bits that are inherited down the
    levels and `perm_combine(parent, child)` folds them, as x86's effective_prot() does.
    `extra` (architecture specifics) takes no part in equality.
    """

    _fields = (
        "name", "arch", "levels", "entry_bytes", "byteorder", "va_bits", "canonical", "pa_bits", "classify",
        "hw_classify", "perm", "perm_combine", "perm_top", "ptdump_key_mask", "root_align", "fault_reason",
        "describe", "extra",
    )
    _compare = _fields[:-1]

    def __init__(
        self,
        name: str,
        arch: str,
        levels: tuple[Level, ...],
        entry_bytes: int,
        byteorder: str,
        va_bits: int,
        canonical: bool,
        pa_bits: int,
        classify: Classify,
        hw_classify: Classify,
        perm: Perm,
        perm_combine: Combine,
        perm_top: int,
        ptdump_key_mask: int,
        root_align: int = 4096,
        fault_reason: Callable[[int], str] = _no_reason,
        describe: Callable[[str, int], str] = _no_description,
        extra: dict | None = None,
    ) -> None:
        self._set(
            name=name,
            arch=arch,
            levels=levels,
            entry_bytes=entry_bytes,
            byteorder=byteorder,  # "<" little-endian, ">" big-endian
            va_bits=va_bits,  # VA bits translated from the root
            canonical=canonical,  # upper half addressed by sign extension (x86-64, arm64 TTBR1, riscv)
            pa_bits=pa_bits,
            classify=classify,
            hw_classify=hw_classify,
            perm=perm,
            perm_combine=perm_combine,
            perm_top=perm_top,  # permission word above the root (the identity of perm_combine)
            ptdump_key_mask=ptdump_key_mask,  # entry bits whose change starts a new ptdump run
            root_align=root_align,
            fault_reason=fault_reason,
            describe=describe,
            extra={} if extra is None else extra,
        )

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(f"{self.byteorder}u{self.entry_bytes}")

    @property
    def top_span(self) -> int:
        """Bytes of VA the root table maps (1 << va_bits)."""
        return self.levels[0].table_span

    def canonical_va(self, rel: int) -> int:
        """The VA of offset `rel` in the root table's span (sign-extended where canonical)."""
        if self.canonical and rel >> (self.va_bits - 1):
            return rel | ((1 << 64) - (1 << self.va_bits))
        return rel

    def table_offset(self, va: int) -> int:
        """Offset of `va` in the root table's span (the inverse of canonical_va)."""
        return va & ((1 << self.va_bits) - 1)

    def span_offset(self, va: int) -> int:
        """A VA (or an address marker, possibly non-canonical) in the root table's offset space,
        as ptdump compares it with walk positions: a non-canonical address maps to the start of
        the upper half, the first canonical address above it."""
        top = 1 << self.va_bits
        if not self.canonical:
            return min(va, top)
        half = top >> 1
        if va < half:
            return va
        if va < (1 << 64) - half:
            return half
        return va - ((1 << 64) - top)

    def span_range(self, start: int, end: int) -> tuple[int, int]:
        """A ptdump_range [start, end) in the root table's offset space (end ~0UL: the top)."""
        return self.span_offset(start), (1 << self.va_bits) if end >= (1 << 64) - 1 else self.span_offset(end)

    def is_canonical(self, va: int) -> bool:
        return self.canonical_va(self.table_offset(va)) == va

    def va_windows(self) -> list[tuple[int, int]]:
        """The VA ranges [start, end) the root table translates, ascending.

        [0, 2^va_bits), or both canonical halves, or a range that starts higher (arm64 TTBR1).
        """
        span = self.top_span
        if self.va_bits >= 64:
            return [(0, 1 << 64)]
        if self.canonical:
            return [(0, span >> 1), ((1 << 64) - (span >> 1), 1 << 64)]
        base = self.canonical_va(0)
        return [(base, base + span)]
