"""RISC-V entry formats for tests/builders.py (registered at import) and the PTE bit names.

Entries: PPN at bits 53:10 (Sv32: 31:10) = PA >> 12 shifted left by 10; a pointer entry is V
alone (Linux's _PAGE_TABLE); a leaf is the PPN plus the flags given (which must include R or X).
"""

from __future__ import annotations

import builders

from pagewalk.mode import PagingMode

RV_V, RV_R, RV_W, RV_X, RV_U, RV_G, RV_A, RV_D = (1 << b for b in range(8))
RV_RSW1, RV_RSW2 = 1 << 8, 1 << 9
RV_NC, RV_IO = 1 << 61, 1 << 62  # Svpbmt PBMT 1 and 2
RV_N = 1 << 63  # Svnapot
RV_KERNEL_RW = RV_V | RV_R | RV_W | RV_A | RV_D | RV_G  # PAGE_KERNEL
RV_KERNEL_RX = RV_V | RV_R | RV_X | RV_A | RV_G  # PAGE_KERNEL_READ_EXEC (+A)


def ppn_bits(pa: int) -> int:
    """The PPN field of an entry pointing at `pa`."""
    return (pa >> 12) << 10


def _riscv_formats(mode: PagingMode):
    def make_table_entry(pa: int) -> int:
        return ppn_bits(pa) | RV_V

    def make_leaf(level: int, pa: int, flags: int) -> int:
        return ppn_bits(pa) | flags

    return make_table_entry, make_leaf


builders.ARCH_ENTRY_FORMATS.setdefault("riscv64", _riscv_formats)
builders.ARCH_ENTRY_FORMATS.setdefault("riscv32", _riscv_formats)
