"""book3s64 radix entry formats for tests/builders.py (registered at import) and a builder that
writes the directory entries' NLS.

Entries are big-endian (the mode's byte order; PageTableBuilder writes them so). A leaf is
PA | _PAGE_PTE | flags (flags carry _PAGE_PRESENT and the rest, as Linux's pfn_pte() makes them);
a directory entry is PA | _PAGE_PRESENT | NLS, where NLS is the index width of the table it points
at (Linux: RADIX_P?D_VAL_BITS). `make_table_entry(pa)` does not know the level, so
`RadixTableBuilder` fills the NLS in as it creates tables; a plain PageTableBuilder leaves NLS 0,
which the kernel's walker ignores and the MMU rejects.
"""

from __future__ import annotations

import builders
from builders import PageTableBuilder

from pagewalk.arch.ppc64 import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_EXEC,
    _PAGE_PRESENT,
    _PAGE_PRIVILEGED,
    _PAGE_PTE,
    _PAGE_READ,
    _PAGE_WRITE,
    NLS_MASK,
)
from pagewalk.mode import PagingMode

PPC_P, PPC_L = _PAGE_PRESENT, _PAGE_PTE
PPC_R, PPC_W, PPC_X, PPC_PRIV = _PAGE_READ, _PAGE_WRITE, _PAGE_EXEC, _PAGE_PRIVILEGED
PPC_A, PPC_D = _PAGE_ACCESSED, _PAGE_DIRTY
# pgtable.h: PAGE_KERNEL = _PAGE_BASE | _PAGE_KERNEL_RW, PAGE_KERNEL_ROX, PAGE_KERNEL_X (no L: make_leaf adds it)
PPC_KERNEL_RW = PPC_P | PPC_A | PPC_PRIV | PPC_R | PPC_W | PPC_D
PPC_KERNEL_ROX = PPC_P | PPC_A | PPC_PRIV | PPC_R | PPC_X
PPC_KERNEL_RWX = PPC_KERNEL_RW | PPC_X


def _ppc64_formats(mode: PagingMode):
    def make_table_entry(pa: int) -> int:
        return pa | PPC_P

    def make_leaf(level: int, pa: int, flags: int) -> int:
        return pa | PPC_L | flags

    return make_table_entry, make_leaf


builders.ARCH_ENTRY_FORMATS.setdefault("ppc64", _ppc64_formats)


class RadixTableBuilder(PageTableBuilder):
    """PageTableBuilder whose directory entries carry the next table's NLS (what the MMU reads)."""

    def slot(self, va: int, level: int, *, create: bool = False) -> tuple[int, int]:
        table, idx = super().slot(va, level, create=create)
        t = self.root
        for i in range(level):
            j = self.index(va, i)
            e = self.entry(t, j)
            if not e & PPC_L and not e & NLS_MASK:
                e |= self.mode.levels[i + 1].bits
                self.set_entry(t, j, e)
            t = self._classify(i, e)[1]
        return table, idx
