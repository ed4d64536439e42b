"""The powerpc (book3s64) ptdump text and W+X check: arch/powerpc/mm/ptdump/ptdump.c and
book3s64.c of v6.1 (note_page(), note_page_update_state(), dump_addr(), pt_dump_size(),
dump_flag_info(), note_prot_wx(), ptdump_check_wx(), populate_markers()), reproduced byte for byte.

A line is `0x%016lx-0x%016lx ` (start, end - 1), ` 0x%016lx ` (start_pa = the first entry's
value & PTE_RPN_MASK), `%9lu%c ` (the size in " KMGTPE" units), then `  %s` for every entry of
flag_array[] (the set or the clear text; entries with no clear text print nothing when clear).
The level is not printed, but a change of level still ends a range. Ranges whose flags are all
clear (holes, zero PTEs) are not printed; markers are printed by note_page_update_state()'s
while loop whenever an event reaches the next one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO


from ..arch.ppc64 import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_EXEC,
    _PAGE_INVALID,
    _PAGE_NON_IDEMPOTENT,
    _PAGE_PRESENT,
    _PAGE_PRIVILEGED,
    _PAGE_PTE,
    _PAGE_READ,
    _PAGE_SPECIAL,
    _PAGE_TOLERANT,
    _PAGE_WRITE,
    H_PAGE_4K_PFN,
    H_PAGE_BUSY,
    H_PAGE_COMBO,
    H_PAGE_F_GIX_4K,
    H_PAGE_F_GIX_SHIFT_4K,
    H_PAGE_F_SECOND_4K,
    H_PAGE_HASHPTE,
    H_PAGE_HASHPTE_4K,
    QUADRANT3,
)
from ..runs import MISSING_BASE
from .core import MarkerState, scaled_size

TOP = 1 << 64
SZ_32M = 1 << 25
_UNITS = " KMGTPE"

# flag_array[] of book3s64.c: (mask, val, set, clear, is_val shift or None)
Flag = tuple[int, int, str, str | None, int | None]


def flag_array(page_shift: int = 16) -> list[Flag]:
    """flag_array[] as CONFIG_PPC_64K_PAGES (page_shift 16) or 4K pages build it."""
    hashpte = H_PAGE_HASHPTE if page_shift >= 16 else H_PAGE_HASHPTE_4K
    flags: list[Flag] = [
        (_PAGE_PRIVILEGED, 0, "user", "    ", None),
        (_PAGE_READ, _PAGE_READ, "r", " ", None),
        (_PAGE_WRITE, _PAGE_WRITE, "w", " ", None),
        (_PAGE_EXEC, _PAGE_EXEC, " X ", "   ", None),
        (_PAGE_PTE, _PAGE_PTE, "pte", "   ", None),
        (_PAGE_PRESENT, _PAGE_PRESENT, "valid", "     ", None),
        (_PAGE_PRESENT | _PAGE_INVALID, 0, "       ", "present", None),
        (hashpte, hashpte, "hpte", "    ", None),
        (_PAGE_DIRTY, _PAGE_DIRTY, "dirty", "     ", None),
        (_PAGE_ACCESSED, _PAGE_ACCESSED, "accessed", "        ", None),
        (_PAGE_NON_IDEMPOTENT, _PAGE_NON_IDEMPOTENT, "non-idempotent", "              ", None),
        (_PAGE_TOLERANT, _PAGE_TOLERANT, "tolerant", "        ", None),
        (H_PAGE_BUSY, H_PAGE_BUSY, "busy", None, None),
    ]
    if page_shift >= 16:
        flags += [(H_PAGE_COMBO, H_PAGE_COMBO, "combo", None, None),
                  (H_PAGE_4K_PFN, H_PAGE_4K_PFN, "4K_pfn", None, None)]
    else:
        flags += [(H_PAGE_F_GIX_4K, H_PAGE_F_GIX_4K, "f_gix", None, H_PAGE_F_GIX_SHIFT_4K),
                  (H_PAGE_F_SECOND_4K, H_PAGE_F_SECOND_4K, "f_second", None, None)]
    flags.append((_PAGE_SPECIAL, _PAGE_SPECIAL, "special", None, None))
    return flags


def flag_mask(page_shift: int = 16) -> int:
    """build_pgtable_complete_mask(): the OR of every flag's mask (pg_level[].mask)."""
    m = 0
    for f in flag_array(page_shift):
        m |= f[0]
    return m


def flags_text(pte: int, flags: list[Flag]) -> str:
    """dump_flag_info(): "  %s" per flag (set or clear text), values as "  %s:%llx"."""
    out = []
    rest = pte
    for fmask, fval, fset, fclear, shift in flags:
        if shift is not None:
            out.append(f"  {fset}:{(pte & fval) >> shift:x}")
        else:
            s = fset if (pte & fmask) == fval else fclear
            if s is not None:
                out.append("  " + s)
        rest &= ~fmask
    if rest:
        out.append(f"  unknown flags:{rest:x}")
    return "".join(out)


@dataclass
class Layout:
    """The book3s64 kernel's address-space layout (v6.1 book3s/64/pgtable.h, radix.h, hash-*.h).

    The values are the ones radix__early_init_mmu() sets (__vmalloc_start = RADIX_VMALLOC_START,
    __kernel_io_start = RADIX_KERN_IO_START, ...); the "vmemmap start" marker is H_VMEMMAP_START,
    the hash value, even under radix (populate_markers(): "What is the ifdef about?").
    """

    va_bits: int = 52
    page_shift: int = 16
    radix: bool = True
    page_offset: int = QUADRANT3  # CONFIG_PAGE_OFFSET
    vmalloc_start: int = 0xC008000000000000  # RADIX_KERN_VIRT_START
    vmalloc_end: int | None = None
    kernel_io_start: int | None = None
    kernel_io_end: int | None = None
    vmemmap_marker: int | None = None
    known: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        kern_map_size = 1 << 49  # RADIX_KERN_MAP_SIZE
        if self.vmalloc_end is None:
            self.vmalloc_end = self.vmalloc_start + kern_map_size
        if self.kernel_io_start is None:
            self.kernel_io_start = self.vmalloc_end
        if self.kernel_io_end is None:
            self.kernel_io_end = self.kernel_io_start + kern_map_size
        if self.vmemmap_marker is None:
            self.vmemmap_marker = h_vmemmap_start(self.page_shift)

    def addresses(self) -> dict[str, int]:
        """The macros populate_markers() reads (book3s/64/pgtable.h: ISA_IO_BASE ... IOREMAP_END)."""
        io = self.kernel_io_start
        return {
            "PAGE_OFFSET": self.page_offset,
            "VMALLOC_START": self.vmalloc_start,
            "VMALLOC_END": self.vmalloc_end,
            "ISA_IO_BASE": io,
            "ISA_IO_END": io + 0x10000,
            "PHB_IO_BASE": io + 0x10000,
            "PHB_IO_END": io + 0x80000000,  # FULL_IO_SIZE
            "IOREMAP_BASE": io + 0x80000000,
            "IOREMAP_END": self.kernel_io_end - SZ_32M,  # KERN_IO_END - FIXADDR_SIZE
            "H_VMEMMAP_START": self.vmemmap_marker,
        }

    def ranges(self) -> list[tuple[int, int]]:
        """ptdump_range[0] as ptdump_init() sets it: PAGE_OFFSET (radix) or KERN_VIRT_START (hash)
        to PAGE_OFFSET + PGDIR_SIZE * PTRS_PER_PGD."""
        start = self.page_offset if self.radix else self.vmalloc_start
        return [(start, self.page_offset + (1 << self.va_bits))]

    def markers(self) -> list[tuple[int, str]]:
        """address_markers[] after populate_markers() (CONFIG_PPC64, book3s64: no MODULES_VADDR,
        no KASAN), the {-1, NULL} end last."""
        a = self.addresses()
        return [
            (a["PAGE_OFFSET"], "Start of kernel VM"),
            (a["VMALLOC_START"], "vmalloc() Area"),
            (a["VMALLOC_END"], "vmalloc() End"),
            (a["ISA_IO_BASE"], "isa I/O start"),
            (a["ISA_IO_END"], "isa I/O end"),
            (a["PHB_IO_BASE"], "phb I/O start"),
            (a["PHB_IO_END"], "phb I/O end"),
            (a["IOREMAP_BASE"], "I/O remap start"),
            (a["IOREMAP_END"], "I/O remap end"),
            (a["H_VMEMMAP_START"], "vmemmap start"),
            (TOP - 1, "(null)"),
        ]


def h_vmemmap_start(page_shift: int) -> int:
    """H_VMEMMAP_START = H_KERN_VIRT_START + 2 * H_KERN_MAP_SIZE (hash.h; hash-64k.h: 0xc008…,
    2^49; hash-4k.h: 0xc0003d…, 2^40)."""
    if page_shift >= 16:
        return 0xC008000000000000 + 2 * (1 << 49)
    return 0xC0003D0000000000 + 2 * (1 << 40)


class Ppc64State(MarkerState):
    """note_page() of arch/powerpc/mm/ptdump/ptdump.c (v6.1), with note_prot_wx()."""

    def __init__(
        self,
        layout: Layout,
        out: TextIO | None,
        rpn_mask: int,
        check_wx: bool = False,
        entry_at: Callable[[int, int], int] | None = None,
        records: list[dict] | None = None,
    ) -> None:
        # ptdump_check_wx() walks with the markers {0, NULL}, {-1, NULL}
        self.markers = [(0, "(null)"), (TOP - 1, "(null)")] if check_wx else layout.markers()
        self.flags = flag_array(layout.page_shift)
        self.page_size = 1 << layout.page_shift
        self.rpn_mask = rpn_mask
        self.out = out
        self.check_wx = check_wx
        self.entry_at = entry_at
        self.records = records
        self.marker = 0
        self.level = -1
        self.current_flags = 0
        self.start_address = 0
        self.start_pa = 0
        self.lines = 0
        self.wx_pages = 0
        self.wx_ranges: list[tuple[int, int]] = []

    def _update_state(self, va: int, level: int, val: int, flag: int, fresh: bool) -> None:
        """note_page_update_state(): the new range, then every marker it has reached."""
        if not fresh and self.entry_at is not None and level >= 0 and val:
            val = self.entry_at(va, level)  # an event inside a run: its own entry gives the PA
        self.level = level
        self.current_flags = flag
        self.start_address = va
        self.start_pa = val & self.rpn_mask if level > MISSING_BASE else val
        while va >= self.markers[self.marker + 1][0]:
            self.marker += 1
            self._print(f"---[ {self.markers[self.marker][1]} ]---\n")

    def note(self, va: int, level: int, val: int, key: int, eff: int) -> None:
        flag = key if level >= 0 or level <= MISSING_BASE else 0
        if self.level == -1:
            self._print(f"---[ {self.markers[self.marker][1]} ]---\n")
            self._update_state(va, level, val, flag, fresh=False)
            return
        same = flag == self.current_flags and level == self.level
        if same and va < self.markers[self.marker + 1][0]:
            return
        if self.current_flags:
            self._note_wx(va)
            self._line(va)
        self._update_state(va, level, val, flag, fresh=not same)

    def _note_wx(self, va: int) -> None:
        if not self.check_wx or self.level <= MISSING_BASE:
            return
        # pte_write() (or the NUMA-balancing saved write, which has _PAGE_EXEC clear) && pte_exec()
        if not (self.current_flags & _PAGE_WRITE and self.current_flags & _PAGE_EXEC):
            return
        self.wx_pages += ((va - self.start_address) % TOP) // self.page_size
        self.wx_ranges.append((self.start_address, va))

    def _line(self, va: int) -> None:
        self.lines += 1
        if self.out is None and self.records is None:
            return
        size = (va - self.start_address) % TOP
        missing = self.level <= MISSING_BASE
        if self.records is not None:
            self.records.append(self._record(va, size, missing))
        if self.out is None:
            return
        n, unit = scaled_size(size, _UNITS)
        head = f"0x{self.start_address:016x}-0x{(va - 1) % TOP:016x} "
        if missing:
            pa = self.current_flags & ~0xC0000000000000FF & (TOP - 1)
            self.out.write(head + f"{n:9d}{unit} [table at PA {pa:#x} not in image]\n")
            return
        flags = flags_text(self.current_flags, self.flags)
        self.out.write(head + f" 0x{self.start_pa:016x} {n:9d}{unit} " + flags + "\n")

    def _record(self, va: int, size: int, missing: bool) -> dict:
        rec = {
            "start": self.start_address,
            "end": va if va else TOP,
            "size": size or TOP,
            "marker": self.markers[self.marker][1],
        }
        if missing:
            rec["missing_table_pa"] = self.current_flags & ~0xC0000000000000FF & (TOP - 1)
            return rec
        p = self.current_flags
        rec.update(
            level=("pgd", "p4d", "pud", "pmd", "pte")[self.level] if 0 <= self.level <= 4 else self.level,
            pa=self.start_pa,
            flags=p,
            text=flags_text(p, self.flags).split(),
            effective={"privileged": bool(p & _PAGE_PRIVILEGED), "read": bool(p & (_PAGE_READ | _PAGE_WRITE)),
                       "write": bool(p & _PAGE_WRITE), "exec": bool(p & _PAGE_EXEC)},
        )
        return rec

    def flush(self) -> None:
        """note_page(st, 0, -1, 0) at the end of ptdump_walk_pgd()."""
        self.note(0, -1, 0, 0, 0)
