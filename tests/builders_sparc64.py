"""sparc64 entry formats for tests/builders.py (registered at import).

Upper entries hold the physical address of the next table (pmd_set()/pud_set() store __pa());
a leaf is the PA plus the TTE flags given, with _PAGE_PMD_HUGE added above the PTE level.
"""

from __future__ import annotations

import builders

from pagewalk.arch import sparc64
from pagewalk.mode import PagingMode

V4 = dict(sparc64.SUN4V.flags)
U4 = dict(sparc64.SUN4U.flags)
# PAGE_KERNEL of sun4v (init_64.c: _PAGE_VALID | _PAGE_SZ8K_4V | _PAGE_CP_4V | _PAGE_CV_4V | _PAGE_P_4V
# | _PAGE_W_4V | _PAGE_EXEC_4V | __ACCESS_BITS_4V (READ, ACCESSED) | __DIRTY_BITS_4V (W, MODIFIED)
# | _PAGE_PRESENT_4V); the sun4u one likewise
SUN4V_KERNEL = (V4["VALID"] | V4["MODIFIED"] | V4["ACCESSED"] | V4["READ"] | V4["WRITE"] | V4["CP"] | V4["CV"]
                | V4["P"] | V4["EXEC"] | V4["W"] | V4["PRESENT"])
SUN4U_KERNEL = (U4["VALID"] | U4["MODIFIED"] | U4["ACCESSED"] | U4["READ"] | U4["WRITE"] | U4["CP"] | U4["CV"]
                | U4["P"] | U4["EXEC"] | U4["W"] | U4["PRESENT"])


def _sparc64_formats(mode: PagingMode):
    last = len(mode.levels) - 1

    def make_table_entry(pa: int) -> int:
        return pa

    def make_leaf(level: int, pa: int, flags: int) -> int:
        return pa | flags | (sparc64._PAGE_PMD_HUGE if level != last else 0)

    return make_table_entry, make_leaf


builders.ARCH_ENTRY_FORMATS.setdefault("sparc64", _sparc64_formats)
