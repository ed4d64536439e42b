"""arm64 entry formats for PageTableBuilder: table, block and page descriptors (Arm ARM D8.3).

Importing this module registers `builders.ARCH_ENTRY_FORMATS["arm64"]`. Output addresses are
encoded for the mode's descriptor format (FEAT_LPA2: OA[51:50] in bits 9:8; 64K FEAT_LPA:
OA[51:48] in bits 15:12). `flags` of a leaf are ORed in as they are; bits[1:0] are set here
(0b11 page at the last level, 0b01 block above it).
"""

from __future__ import annotations

import builders
from pagewalk.arch.arm64 import (
    AP_TABLE_NO_EL0, AP_TABLE_RDONLY, PTE_AF, PTE_ATTRINDX_SHIFT, PTE_CONT, PTE_NG, PTE_PXN, PTE_RDONLY,
    PTE_SHARED, PTE_USER, PTE_UXN, PTE_VALID, PXN_TABLE, UXN_TABLE, encode_oa,
)
from pagewalk.mode import PagingMode

__all__ = [
    "AP_TABLE_NO_EL0", "AP_TABLE_RDONLY", "KERNEL_RO_X", "KERNEL_RW", "PTE_AF", "PTE_CONT", "PTE_NG", "PTE_PXN",
    "PTE_RDONLY", "PTE_SHARED", "PTE_USER", "PTE_UXN", "PTE_VALID", "PXN_TABLE", "UXN_TABLE", "attr",
    "arm64_formats",
]


def attr(idx: int) -> int:
    """AttrIndx field (bits 4:2) for Linux's MT_* index `idx`."""
    return idx << PTE_ATTRINDX_SHIFT


# Linux's PAGE_KERNEL (RW, not executable) and PAGE_KERNEL_ROX, without the type bits
KERNEL_RW = PTE_AF | PTE_SHARED | PTE_PXN | PTE_UXN | attr(0)
KERNEL_RO_X = PTE_AF | PTE_SHARED | PTE_RDONLY | PTE_UXN | attr(0)


def arm64_formats(mode: PagingMode):
    ds = bool(mode.extra.get("ds"))
    lpa = bool(mode.extra.get("lpa"))
    last = len(mode.levels) - 1

    def make_table_entry(pa: int) -> int:
        return encode_oa(pa, ds=ds, lpa=lpa) | 3

    def make_leaf(level: int, pa: int, flags: int) -> int:
        return encode_oa(pa, ds=ds, lpa=lpa) | flags | (3 if level == last else 1)

    return make_table_entry, make_leaf


builders.ARCH_ENTRY_FORMATS["arm64"] = arm64_formats
