"""The riscv ptdump text and W+X check: arch/riscv/mm/ptdump.c of v6.12 (note_page(), dump_addr(),
dump_prot(), note_prot_wx(), ptdump_check_wx()), reproduced byte for byte.

The line is `ADDR-ADDR   ` + ` PA ` (the physical address of the run's first entry,
PFN_PHYS(pte_pfn())) + `%9lu%c LEVEL` + ` %s` per bit of pte_bits[] (N, MT(..), RSW(..), D A G U
X W R V). Runs whose protection bits are all clear (holes, zero PTEs) are not printed; markers
are printed by a while loop whenever an event reaches the next marker. `Layout` computes the
marker addresses the way arch/riscv/include/asm/pgtable.h and page.h define them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO


from ..arch.riscv import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_EXEC,
    _PAGE_GLOBAL,
    _PAGE_IO_SVPBMT,
    _PAGE_MTMASK_SVPBMT,
    _PAGE_NAPOT,
    _PAGE_NOCACHE_SVPBMT,
    _PAGE_PFN_SHIFT,
    _PAGE_PRESENT,
    _PAGE_READ,
    _PAGE_SOFT,
    _PAGE_USER,
    _PAGE_WRITE,
)
from ..runs import MISSING_BASE
from .core import MarkerState, scaled_size

SZ_2G = 1 << 31
SZ_16M = 1 << 24
SZ_2M = 1 << 21
KERNEL_LINK_ADDR_64 = (1 << 64) - SZ_2G  # ADDRESS_SPACE_END - SZ_2G + 1
# PAGE_OFFSET per mode: CONFIG_PAGE_OFFSET (Sv57), PAGE_OFFSET_L4, PAGE_OFFSET_L3 (asm/page.h)
PAGE_OFFSET_64 = {57: 0xFF60000000000000, 48: 0xFFFFAF8000000000, 39: 0xFFFFFFD600000000}
PAGE_OFFSET_32 = 0xC0000000  # CONFIG_PAGE_OFFSET default for 32-bit MMU kernels


@dataclass
class Layout:
    """The riscv kernel's address-space layout for one Sv mode (v6.12 asm/pgtable.h).

    `modules_vaddr` is MODULES_VADDR = PFN_ALIGN(_end) - SZ_2G (needs `_end` from kallsyms);
    without it the lowest possible value, MODULES_LOWEST_VADDR, stands in (the marker line then
    still lands between the same two printed lines unless a mapping lies in between).
    """

    va_bits: int  # 32, 39, 48 or 57
    page_offset: int | None = None
    kernel_virt: int | None = None  # kernel_map.virt_addr
    modules_vaddr: int | None = None
    vmemmap: bool = True  # CONFIG_SPARSEMEM_VMEMMAP (64-bit only)
    kasan: bool = False  # CONFIG_KASAN (off in Debian's kernel)
    kasan_start: int = 0
    kasan_end: int = 0
    struct_page_shift: int | None = None  # STRUCT_PAGE_MAX_SHIFT: log2(sizeof(struct page))
    known: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.xlen == 32:
            self.vmemmap = False
        if self.page_offset is None:
            self.page_offset = PAGE_OFFSET_32 if self.xlen == 32 else PAGE_OFFSET_64[self.va_bits]
        if self.kernel_virt is None:
            self.kernel_virt = KERNEL_LINK_ADDR_64
        if self.modules_vaddr is None:
            self.modules_vaddr = self.kernel_virt - SZ_2G  # MODULES_LOWEST_VADDR
        if self.struct_page_shift is None:
            self.struct_page_shift = 5 if self.xlen == 32 else 6

    @property
    def xlen(self) -> int:
        return 32 if self.va_bits == 32 else 64

    @property
    def top(self) -> int:
        return 1 << self.xlen

    @property
    def pgdir_size(self) -> int:
        return 1 << (22 if self.xlen == 32 else self.va_bits - 9)

    @property
    def ptrs_per_pgd(self) -> int:
        return 1024 if self.xlen == 32 else 512

    def addresses(self) -> dict[str, int]:
        """The macros of asm/pgtable.h, computed from VA_BITS and PAGE_OFFSET."""
        kern_virt_size = (self.ptrs_per_pgd // 2 * self.pgdir_size) // 2
        vmalloc_end = self.page_offset
        vmalloc_start = self.page_offset - (kern_virt_size >> 1)
        vmemmap_size = 1 << (self.va_bits - 12 - 1 + self.struct_page_shift)
        vmemmap_start = vmalloc_start - vmemmap_size
        pci_io_end = vmemmap_start
        pci_io_start = pci_io_end - SZ_16M
        fixaddr_top = pci_io_start
        pmd_size = 1 << 21
        fixaddr_size = 2 * self.pgdir_size if self.xlen == 32 else pmd_size + (pmd_size + SZ_2M)
        fixaddr_start = fixaddr_top - fixaddr_size
        if self.xlen == 64:
            task_size = self.pgdir_size * self.ptrs_per_pgd // 2  # TASK_SIZE_64
            kern_virt_start = (-(1 << self.va_bits) + task_size) % self.top
        else:
            kern_virt_start = fixaddr_start
        return {
            "KERN_VIRT_START": kern_virt_start,
            "FIXADDR_START": fixaddr_start,
            "FIXADDR_TOP": fixaddr_top,
            "PCI_IO_START": pci_io_start,
            "PCI_IO_END": pci_io_end,
            "VMEMMAP_START": vmemmap_start,
            "VMEMMAP_END": vmalloc_start,
            "VMALLOC_START": vmalloc_start,
            "VMALLOC_END": vmalloc_end,
            "PAGE_OFFSET": self.page_offset,
            "MODULES_VADDR": self.modules_vaddr,
            "KERNEL_VIRT_ADDR": self.kernel_virt,
        }

    def ranges(self) -> list[tuple[int, int]]:
        """kernel_ptd_info: {KERN_VIRT_START, ULONG_MAX}."""
        return [(self.addresses()["KERN_VIRT_START"], self.top - 1)]

    def markers(self) -> list[tuple[int, str]]:
        """address_markers[] as ptdump_init() fills them, the {-1, NULL} end last."""
        a = self.addresses()
        m = [
            (a["FIXADDR_START"], "Fixmap start"),
            (a["FIXADDR_TOP"], "Fixmap end"),
            (a["PCI_IO_START"], "PCI I/O start"),
            (a["PCI_IO_END"], "PCI I/O end"),
        ]
        if self.vmemmap:
            m += [(a["VMEMMAP_START"], "vmemmap start"), (a["VMEMMAP_END"], "vmemmap end")]
        m += [(a["VMALLOC_START"], "vmalloc() area"), (a["VMALLOC_END"], "vmalloc() end"),
              (a["PAGE_OFFSET"], "Linear mapping")]
        if self.kasan:
            m += [(self.kasan_start, "Kasan shadow start"), (self.kasan_end, "Kasan shadow end")]
        if self.xlen == 64:
            m += [(a["MODULES_VADDR"], "Modules/BPF mapping"), (a["KERNEL_VIRT_ADDR"], "Kernel mapping")]
        m.append((self.top - 1, ""))
        return m

    def level_names(self) -> tuple[str, ...]:
        """pg_level[].name: folded levels print "PGD" (ptdump_init() for p4d/pud; PMD when
        CONFIG_PGTABLE_LEVELS > 2, i.e. on 64-bit)."""
        if self.xlen == 32:
            return ("PGD", "PGD", "PGD", "PGD", "PTE")
        return ("PGD", "P4D" if self.va_bits == 57 else "PGD", "PUD" if self.va_bits >= 48 else "PGD", "PMD", "PTE")


def pte_pa(val: int, xlen: int = 64) -> int:
    """PFN_PHYS(pte_pfn(__pte(val))): the NAPOT PFN loses its lowest set bit (has_svnapot())."""
    pfn = (val & ((1 << (54 if xlen == 64 else 32)) - 1)) >> _PAGE_PFN_SHIFT
    if xlen == 64 and val & _PAGE_NAPOT:
        pfn &= pfn - 1
    return pfn << 12


def prot_text(prot: int, xlen: int = 64) -> str:
    """dump_prot(): " %s" for each of pte_bits[], set or clear text."""
    out = []
    if xlen == 64:
        out.append("N" if prot & _PAGE_NAPOT else ".")
        mt = prot & _PAGE_MTMASK_SVPBMT
        if mt:
            out.append("MT(%s)" % ("NC" if mt == _PAGE_NOCACHE_SVPBMT else "IO" if mt == _PAGE_IO_SVPBMT else "??"))
        else:
            out.append("  ..  ")
    soft = prot & _PAGE_SOFT
    out.append(f"RSW({soft >> 8})" if soft else "  ..  ")
    for bit, ch in ((_PAGE_DIRTY, "D"), (_PAGE_ACCESSED, "A"), (_PAGE_GLOBAL, "G"), (_PAGE_USER, "U"),
                    (_PAGE_EXEC, "X"), (_PAGE_WRITE, "W"), (_PAGE_READ, "R"), (_PAGE_PRESENT, "V")):
        out.append(ch if prot & bit else ".")
    return "".join(" " + s for s in out)


class RiscvState(MarkerState):
    """note_page() of arch/riscv/mm/ptdump.c (v6.12), with note_prot_wx()."""

    def __init__(
        self,
        layout: Layout,
        out: TextIO | None,
        check_wx: bool = False,
        entry_at: Callable[[int, int], int] | None = None,
        records: list[dict] | None = None,
    ) -> None:
        self.xlen = layout.xlen
        self.mod = 1 << self.xlen
        # ptdump_check_wx() walks with the markers {0, NULL}, {-1, NULL}
        self.markers = [(0, ""), (self.mod - 1, "")] if check_wx else layout.markers()
        self.names = layout.level_names()
        self.out = out
        self.check_wx = check_wx
        self.entry_at = entry_at
        self.records = records
        self.marker = 0
        self.level = -1
        self.current_prot = 0
        self.start_address = 0
        self.start_pa = 0
        self.lines = 0
        self.wx_pages = 0
        self.wx_ranges: list[tuple[int, int]] = []

    def _pa(self, va: int, level: int, val: int, fresh: bool) -> int:
        if not fresh and self.entry_at is not None and level >= 0 and val:
            val = self.entry_at(va, level)
        pa = pte_pa(val, self.xlen)
        return pa & (self.mod - 1)  # start_pa is an unsigned long: 32 bits on rv32

    def note(self, va: int, level: int, val: int, key: int, eff: int) -> None:
        prot = key if level != -1 else 0
        if self.level == -1:
            self.level = level
            self.current_prot = prot
            self.start_address = va
            self.start_pa = self._pa(va, level, val, fresh=False)
            self._print(f"---[ {self.markers[self.marker][1]} ]---\n")
            return
        nxt = self.markers[self.marker + 1][0]
        same = prot == self.current_prot and level == self.level
        if same and va < nxt:
            return
        if self.current_prot:
            self._note_wx(va)
            self._line(va)
        while va >= self.markers[self.marker + 1][0]:
            self.marker += 1
            self._print(f"---[ {self.markers[self.marker][1]} ]---\n")
        self.start_address = va
        # an event that only crosses a marker sits inside a run: its own entry gives the PA
        self.start_pa = self._pa(va, level, val, fresh=not same)
        self.current_prot = prot
        self.level = level

    def _note_wx(self, va: int) -> None:
        if not self.check_wx or self.level <= MISSING_BASE:
            return
        if self.current_prot & (_PAGE_WRITE | _PAGE_EXEC) != (_PAGE_WRITE | _PAGE_EXEC):
            return
        self.wx_pages += ((va - self.start_address) % self.mod) // 4096
        self.wx_ranges.append((self.start_address, va))

    def _line(self, va: int) -> None:
        self.lines += 1
        if self.out is None and self.records is None:
            return
        w = self.xlen // 4
        delta = ((va - self.start_address) % self.mod) >> 10
        delta, unit = scaled_size(delta)
        missing = self.level <= MISSING_BASE
        if self.records is not None:
            self.records.append(self._record(va, missing))
        if self.out is None:
            return
        head = f"0x{self.start_address:0{w}x}-0x{va:0{w}x}   "
        if missing:
            name = self.names[MISSING_BASE - self.level]
            pa = pte_pa(self.current_prot, self.xlen)
            self.out.write(head + f"{delta:9d}{unit} [table at PA {pa:#x} not in image] {name}\n")
            return
        self.out.write(
            head + f" 0x{self.start_pa:0{w}x} " + f"{delta:9d}{unit} {self.names[self.level]}"
            + prot_text(self.current_prot, self.xlen) + "\n"
        )

    def _record(self, va: int, missing: bool) -> dict:
        rec = {
            "start": self.start_address,
            "end": va if va else self.mod,
            "size": (va - self.start_address) % self.mod or self.mod,
            "marker": self.markers[self.marker][1],
        }
        if missing:
            rec["level"] = self.names[MISSING_BASE - self.level]
            rec["missing_table_pa"] = pte_pa(self.current_prot, self.xlen)
            return rec
        p = self.current_prot
        rec.update(
            level=self.names[self.level],
            pa=self.start_pa,
            prot=p,
            flags=prot_text(p, self.xlen).split(),
            effective={"user": bool(p & _PAGE_USER), "read": bool(p & _PAGE_READ),
                       "write": bool(p & _PAGE_WRITE), "exec": bool(p & _PAGE_EXEC)},
        )
        return rec

    def flush(self) -> None:
        """note_page_flush(): note_page(st, 0, -1, 0)."""
        self.note(0, -1, 0, 0, 0)
