"""32-bit ARM entry formats for tests/builders.py (registered at import), and Linux's own
short-descriptor table layout for the ptdump tests.

PageTableBuilder entries (ARM ARM B3.5.1, B3.6.1): short descriptors: a page-table entry is
PA | 0b01 (domain 0), a first-level leaf a section PA | 0b10 | flags, a second-level leaf a small
page PA | 0b10 | flags; LPAE: a table is PA | 0b11, a block PA | 0b01 | AF | flags, a page
PA | 0b11 | AF | flags.

`LinuxShortTables` lays tables out as arch/arm/include/asm/pgtable-2level.h describes: a 16 KiB
pgd of 4096 hardware words, and per 2 MiB one page holding the two Linux (software) PTE tables
at offsets 0 and 1024 and the two hardware tables at 2048 and 3072, pmd[0]/pmd[1] pointing at
the hardware ones.
"""

from __future__ import annotations

import os
import tempfile

import builders

from pagewalk.arch import arm
from pagewalk.memory.raw import RawMemory
from pagewalk.mode import PagingMode

KB4 = 4096
MB1, MB2 = 1 << 20, 2 << 20
SD_AP_RW = arm.SD_SECT_AP0  # section AP[1:0] = 0b01: PL1 RW, PL0 none
SD_SMALL_AP_RW = arm.SD_L2_AP0
LD_KERNEL = arm.LD_AF | arm.LD_SH | (7 << 2)  # AF, inner shareable, AttrIndx 7 (Linux's WBWA)


def _arm_formats(mode: PagingMode):
    last = len(mode.levels) - 1
    if mode.extra["format"] == "short":

        def make_table_entry(pa: int) -> int:
            return pa | arm.SD_L1_TABLE

        def make_leaf(level: int, pa: int, flags: int) -> int:
            return pa | 2 | flags

        return make_table_entry, make_leaf

    def make_table_entry_l(pa: int) -> int:
        return pa | 3

    def make_leaf_l(level: int, pa: int, flags: int) -> int:
        return pa | (3 if level == last else 1) | arm.LD_AF | flags

    return make_table_entry_l, make_leaf_l


builders.ARCH_ENTRY_FORMATS.setdefault("arm", _arm_formats)


class LinuxShortTables:
    """Linux's 2-level tables in a bytearray from PA `base`: pgd first, then PTE pages."""

    def __init__(self, base: int = 0x100000) -> None:
        self.base = base
        self.image = bytearray(16 * 1024)
        self.root = base
        self.pte_pages: dict[int, int] = {}  # 2 MiB index -> page PA

    def _w32(self, pa: int, value: int) -> None:
        off = pa - self.base
        self.image[off : off + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")

    def r32(self, pa: int) -> int:
        off = pa - self.base
        return int.from_bytes(self.image[off : off + 4], "little")

    def set_pmd(self, index: int, value: int) -> None:
        """Write hardware first-level entry `index` (0..4095) raw."""
        self._w32(self.root + 4 * index, value)

    def section(self, va: int, pa: int, flags: int, domain: int = 0) -> None:
        """A 1 MiB section (pmd_large): PA | 0b10 | flags | PMD_DOMAIN(domain)."""
        self.set_pmd(va >> 20, (pa & 0xFFF00000) | 2 | flags | (domain << 5))

    def pte_page(self, va: int, domain: int = 0) -> int:
        """The PTE page of `va`'s 2 MiB, created (and hooked into pmd[0]/pmd[1]) on first use."""
        i = va >> 21
        if i not in self.pte_pages:
            page = self.base + len(self.image)
            self.image.extend(bytes(KB4))
            self.pte_pages[i] = page
            self.set_pmd(2 * i, (page + 2048) | 1 | (domain << 5))
            self.set_pmd(2 * i + 1, (page + 3072) | 1 | (domain << 5))
        return self.pte_pages[i]

    def pte(self, va: int, pa: int, linux_flags: int, hw_flags: int | None = None, domain: int = 0) -> None:
        """A 4 KiB page: the Linux PTE (pa | linux_flags) and the hardware small page beside it."""
        page = self.pte_page(va, domain)
        j = (va >> 12) & 511
        self._w32(page + 4 * j, (pa & ~0xFFF) | linux_flags if linux_flags else 0)
        if hw_flags is not None:
            self._w32(page + 2048 + 4 * j, (pa & ~0xFFF) | 2 | hw_flags if hw_flags else 0)

    def memory(self, tmp_path) -> RawMemory:
        fd, path = tempfile.mkstemp(prefix="arm-linux-short-", suffix=".raw", dir=tmp_path)
        os.close(fd)
        with open(path, "wb") as f:
            f.write(self.image)
        return RawMemory(path, self.base)
