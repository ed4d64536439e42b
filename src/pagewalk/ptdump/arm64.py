"""The arm64 ptdump text and W+X check: arch/arm64/mm/ptdump.c (Debian 6.1 and 6.12 kernels).

`Arm64State.note()` is that file's note_page(); `PROT_BITS` its pte_bits[] table in print order,
`dump_prot()` its column printer. The marker table and the walked ranges come from a `Layout`
(kernel/arm64.py computes it from VMCOREINFO and the kernel's memory.h formulas).

Differences between the two series that show in the text (spec §4, checked against the 6.12
source and both captures): v6.1 names the levels by CONFIG_PGTABLE_LEVELS
(`{"PGD", "P4D", levels > 3 ? "PUD" : "PGD", levels > 2 ? "PMD" : "PGD", "PTE"}`), v6.9+ always
`PGD P4D PUD PMD PTE` but maps runtime-folded levels (LPA2 kernels on 48-bit hardware:
mm_p4d_folded(), mm_pud_folded()) to level 0 before comparing; the marker order differs (6.1:
... vmalloc, Fixmap, PCI I/O, vmemmap; 6.12: ... vmalloc, vmemmap, PCI I/O, Fixmap).
"""

from __future__ import annotations

from typing import TextIO

from ..arch.arm64 import (
    PTE_AF, PTE_ATTRINDX_MASK, PTE_CONT, PTE_GP, PTE_NG, PTE_PXN, PTE_RDONLY, PTE_SHARED, PTE_TABLE_BIT,
    PTE_USER, PTE_UXN, PTE_VALID,
)
from ..bits import mask
from ..runs import MISSING_BASE
from .core import MarkerState, scaled_size

TOP = 1 << 64


def _attr(idx: int) -> int:
    return idx << 2


# pte_bits[] of arch/arm64/mm/ptdump.c (v5.10 .. v6.12; Linux's MT_* indices of memory.h):
# (mask, val, set, clear); clear None prints nothing
PROT_BITS: tuple[tuple[int, int, str, str | None], ...] = (
    (PTE_VALID, PTE_VALID, " ", "F"),
    (PTE_USER, PTE_USER, "USR", "   "),
    (PTE_RDONLY, PTE_RDONLY, "ro", "RW"),
    (PTE_PXN, PTE_PXN, "NX", "x "),
    (PTE_SHARED, PTE_SHARED, "SHD", "   "),
    (PTE_AF, PTE_AF, "AF", "  "),
    (PTE_NG, PTE_NG, "NG", "  "),
    (PTE_CONT, PTE_CONT, "CON", "   "),
    (PTE_TABLE_BIT, PTE_TABLE_BIT, "   ", "BLK"),
    (PTE_UXN, PTE_UXN, "UXN", "   "),
    (PTE_GP, PTE_GP, "GP", "  "),
    (PTE_ATTRINDX_MASK, _attr(3), "DEVICE/nGnRnE", None),  # MT_DEVICE_nGnRnE
    (PTE_ATTRINDX_MASK, _attr(4), "DEVICE/nGnRE", None),  # MT_DEVICE_nGnRE
    (PTE_ATTRINDX_MASK, _attr(2), "MEM/NORMAL-NC", None),  # MT_NORMAL_NC
    (PTE_ATTRINDX_MASK, _attr(0), "MEM/NORMAL", None),  # MT_NORMAL
    (PTE_ATTRINDX_MASK, _attr(1), "MEM/NORMAL-TAGGED", None),  # MT_NORMAL_TAGGED
)
PG_LEVEL_MASK = 0
for _m, _v, _s, _c in PROT_BITS:
    PG_LEVEL_MASK |= _m


def dump_prot(prot: int) -> str:
    """dump_prot(): " set" or " clear" per row, in table order."""
    out = []
    for m, v, s, c in PROT_BITS:
        t = s if (prot & m) == v else c
        if t is not None:
            out.append(" " + t)
    return "".join(out)


def level_names(series: str, nlevels: int) -> tuple[str, ...]:
    """pg_level[].name: v6.1 folds names by CONFIG_PGTABLE_LEVELS (= the hardware levels)."""
    if series == "6.1":
        return ("PGD", "P4D", "PUD" if nlevels > 3 else "PGD", "PMD" if nlevels > 2 else "PGD", "PTE")
    return ("PGD", "P4D", "PUD", "PMD", "PTE")


class Arm64State(MarkerState):
    """note_page() of arch/arm64/mm/ptdump.c, with note_prot_uxn()/note_prot_wx() accounting."""

    def __init__(
        self,
        markers: list[tuple[int, str | None]],
        out: TextIO | None,
        *,
        series: str = "6.12",
        nlevels: int = 4,
        check_wx: bool = False,
        page_size: int = 4096,
        records: list[dict] | None = None,
        end_address: int = TOP - 1,
    ) -> None:
        self.markers = markers
        self.end_address = end_address
        self.out = out
        self.series = series
        self.names = level_names(series, nlevels)
        # v6.9+: "check if the current level has been folded dynamically" (LPA2 kernels)
        self.p4d_folded = series != "6.1" and nlevels < 5
        self.pud_folded = series != "6.1" and nlevels < 4
        self.check_wx = check_wx
        self.page_size = page_size
        self.records = records
        self.level = -1
        self.current_prot = 0
        self.start_address = 0
        self.marker = 0
        self.wx_pages = 0
        self.uxn_pages = 0
        self.wx_ranges: list[tuple[int, int]] = []
        self.uxn_ranges: list[tuple[int, int]] = []
        self.ranges_written = 0

    def _name(self, level: int) -> str:
        if level <= MISSING_BASE:
            return self.names[MISSING_BASE - level]
        return self.names[level]

    def note(self, va: int, level: int, val: int, key: int, eff: int = 0) -> None:
        if self.p4d_folded and level == 1 or self.pud_folded and level == 2:
            level = 0
        if level <= MISSING_BASE:
            prot = val  # a table the image lacks: its entry, so that each one is a line
        else:
            prot = val & PG_LEVEL_MASK if level >= 0 else 0
        if self.level == -1:
            self.level = level
            self.current_prot = prot
            self.start_address = va
            self._print(f"---[ {self.markers[self.marker][1]} ]---\n")
        elif prot != self.current_prot or level != self.level or va >= self.markers[self.marker + 1][0]:
            if self.current_prot and self.level > MISSING_BASE:
                self._note_prot_uxn(va)
                self._note_prot_wx(va)
            self._line(va)
            if va >= self.markers[self.marker + 1][0]:
                self.marker += 1
                self._print(f"---[ {self.markers[self.marker][1]} ]---\n")
            self.start_address = va
            self.current_prot = prot
            self.level = level
        if va >= self.markers[self.marker + 1][0]:
            self.marker += 1
            self._print(f"---[ {self.markers[self.marker][1]} ]---\n")

    def _line(self, va: int) -> None:
        self.ranges_written += 1
        if self.records is not None:
            self.records.append(self._record(va))
        if self.out is None:
            return
        delta = ((va - self.start_address) % TOP) >> 10
        delta, unit = scaled_size(delta)
        head = f"0x{self.start_address:016x}-0x{va % TOP:016x}   {delta:9d}{unit} "
        if self.level <= MISSING_BASE:
            # not the kernel's: the image lacks the table this entry points to
            self.out.write(head + f"[table at PA {self.current_prot & mask(51, 12):#x} not in image] {self._name(self.level)}\n")
            return
        text = self.names[self.level]
        if self.current_prot:
            text += dump_prot(self.current_prot)
        self.out.write(head + text + "\n")

    def _record(self, va: int) -> dict:
        prot = self.current_prot
        rec: dict = {
            "start": self.start_address,
            "end": va % TOP or TOP,
            "size": (va - self.start_address) % TOP or TOP,
            "level": self._name(self.level),
            "marker": self.markers[self.marker][1],
        }
        if self.level <= MISSING_BASE:
            rec["missing_table_pa"] = prot & mask(51, 12)
            return rec
        rec["present"] = bool(prot)
        rec["flags"] = dump_prot(prot).split() if prot else []
        rec["prot"] = prot
        return rec

    def _note_prot_uxn(self, addr: int) -> None:
        if not self.check_wx or self.current_prot & PTE_UXN:
            return
        self.uxn_pages += ((addr - self.start_address) % TOP) // self.page_size
        self.uxn_ranges.append((self.start_address, addr))

    def _note_prot_wx(self, addr: int) -> None:
        if not self.check_wx or self.current_prot & PTE_RDONLY or self.current_prot & PTE_PXN:
            return
        self.wx_pages += ((addr - self.start_address) % TOP) // self.page_size
        self.wx_ranges.append((self.start_address, addr))

    def flush(self) -> None:
        """note_page_flush(): note_page(st, end, -1, 0); end is 0 for a walk up to ~0UL (and
        always in v6.1), TASK_SIZE_64 for a user-half walk in v6.12."""
        if self.level == -1:
            return
        end = self.end_address
        self.note(0 if end == TOP - 1 else end, -1, 0, 0, 0)
