"""ARC entry formats for tests/builders.py (registered at import).

Upper entries hold the next table's kernel address, which is its physical address (asm/page.h:
__pa() is the identity); a leaf is the PA plus the flags given, with _PAGE_HW_SZ added at the PMD
level (pmd_mkhuge()).
"""

from __future__ import annotations

import builders

from pagewalk.arch import arc
from pagewalk.mode import PagingMode


def _arc_formats(mode: PagingMode):
    last = len(mode.levels) - 1

    def make_table_entry(pa: int) -> int:
        return pa

    def make_leaf(level: int, pa: int, flags: int) -> int:
        return pa | flags | (arc._PAGE_HW_SZ if level != last else 0)

    return make_table_entry, make_leaf


builders.ARCH_ENTRY_FORMATS.setdefault("arc", _arc_formats)
