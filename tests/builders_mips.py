"""MIPS64 entry formats for tests/builders.py (registered at import).

A table entry is the XKPHYS (cached, CCA 3) kernel address of the next table, as the kernel's
pmd_populate_kernel()/pud_populate() store it; a leaf is pfn << PFN_PTE_SHIFT plus the flags given,
with _PAGE_HUGE added above the PTE level (pmd_mkhuge()). Empty entries stay 0 here (the kernel
writes the address of an invalid table instead; make_mode() treats 0 as none too).
"""

from __future__ import annotations

import builders

from pagewalk.arch import mips
from pagewalk.mode import PagingMode

B = mips.DEBIAN_5KC_MALTA.bits()
M_P, M_W, M_A, M_M, M_H = B["_PAGE_PRESENT"], B["_PAGE_WRITE"], B["_PAGE_ACCESSED"], B["_PAGE_MODIFIED"], B["_PAGE_HUGE"]
M_G, M_V, M_D = B["_PAGE_GLOBAL"], B["_PAGE_VALID"], B["_PAGE_DIRTY"]
M_CCA_UNCACHED = 2 << B["_CACHE_SHIFT"]
M_KERNEL = M_P | M_W | M_A | M_M | M_G | M_V | M_D | M_CCA_UNCACHED  # a vmalloc PTE of the capture: 0x170f


def _mips_formats(mode: PagingMode):
    bits = mode.extra["bits"]
    ps = mode.extra["config"].page_shift
    last = len(mode.levels) - 1

    def make_table_entry(pa: int) -> int:
        return mips.phys_to_virt_xkphys(pa)

    def make_leaf(level: int, pa: int, flags: int) -> int:
        return ((pa >> ps) << bits["PFN_PTE_SHIFT"]) | flags | (bits.get("_PAGE_HUGE", 0) if level != last else 0)

    return make_table_entry, make_leaf


builders.ARCH_ENTRY_FORMATS.setdefault("mips64", _mips_formats)
