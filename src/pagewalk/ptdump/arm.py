"""The 32-bit ARM kernel_page_tables text and W+X check: arch/arm/mm/dump.c of v6.1 (note_page(),
dump_prot(), note_prot_wx(), ptdump_check_wx(), the address_markers[] and pg_level[] tables),
reproduced byte for byte.

A line is `0x%08lx-0x%08lx   ` + `%9lu%c %s` (size, pg_level name: "PGD" for short-descriptor
sections, "PMD" for LPAE blocks, "PTE") + ` %s` domain (short descriptors only: "KERNEL ",
"USER   ", "IO     ", "VECTORS", "unknown") + ` %s` per matching row of section_bits[] or
pte_bits[]. Runs whose protection (entry & pg_level[level].mask) is zero are not printed. dump.c
numbers its levels 1 pgd .. 5 pte; the runs carry the generic note_page levels (0 pgd .. 4 pte),
so level = klevel + 1 here. Unlike mm/ptdump.c, a marker is passed one per event (`if`, not
`while`), and the walk covers the whole 4 GiB from 0, starting under the first marker's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TextIO

from ..arch import arm
from ..runs import MISSING_BASE
from .core import MarkerState, scaled_size

SZ_1M, SZ_16M = 1 << 20, 1 << 24
VMALLOC_OFFSET = 8 << 20
FDT_FIXED_BASE = 0xFF800000
FIXADDR_START = 0xFFC80000  # FIXADDR_START = 0xffc80000UL (asm/fixmap.h)
VECTORS_BASE = 0xFFFF0000
PAGE_OFFSET_DEFAULT = 0xC0000000  # CONFIG_PAGE_OFFSET of VMSPLIT_3G

# (mask, val, set, clear, ro_bit, nx_bit): dump.c's prot_bits rows, in its order
Row = tuple[int, int, str | None, str | None, bool, bool]

PTE_BITS_2L: tuple[Row, ...] = (
    (arm.L_PTE_USER_2L, arm.L_PTE_USER_2L, "USR", "   ", False, False),
    (arm.L_PTE_RDONLY_2L, arm.L_PTE_RDONLY_2L, "ro", "RW", True, False),
    (arm.L_PTE_XN_2L, arm.L_PTE_XN_2L, "NX", "x ", False, True),
    (arm.L_PTE_SHARED_2L, arm.L_PTE_SHARED_2L, "SHD", "   ", False, False),
    (0xF << 2, 0x00 << 2, "SO/UNCACHED", None, False, False),
    (0xF << 2, 0x01 << 2, "MEM/BUFFERABLE/WC", None, False, False),
    (0xF << 2, 0x02 << 2, "MEM/CACHED/WT", None, False, False),
    (0xF << 2, 0x03 << 2, "MEM/CACHED/WBRA", None, False, False),
    (0xF << 2, 0x06 << 2, "MEM/MINICACHE", None, False, False),
    (0xF << 2, 0x07 << 2, "MEM/CACHED/WBWA", None, False, False),
    (0xF << 2, 0x04 << 2, "DEV/SHARED", None, False, False),
    (0xF << 2, 0x0C << 2, "DEV/NONSHARED", None, False, False),
    (0xF << 2, 0x09 << 2, "DEV/WC", None, False, False),
    (0xF << 2, 0x0B << 2, "DEV/CACHED", None, False, False),
)
_AP3 = arm.PMD_SECT_APX | arm.PMD_SECT_AP_READ | arm.PMD_SECT_AP_WRITE
SECTION_BITS_2L: tuple[Row, ...] = (  # __LINUX_ARM_ARCH__ >= 6
    (_AP3, arm.PMD_SECT_APX | arm.PMD_SECT_AP_WRITE, "    ro", None, True, False),
    (_AP3, arm.PMD_SECT_AP_WRITE, "    RW", None, False, False),
    (_AP3, arm.PMD_SECT_AP_READ, "USR ro", None, False, False),
    (_AP3, arm.PMD_SECT_AP_READ | arm.PMD_SECT_AP_WRITE, "USR RW", None, False, False),
    (arm.PMD_SECT_XN_2L, arm.PMD_SECT_XN_2L, "NX", "x ", False, True),
    (arm.PMD_SECT_S_2L, arm.PMD_SECT_S_2L, "SHD", "   ", False, False),
)
_MT3 = 7 << 2
PTE_BITS_3L: tuple[Row, ...] = (
    (arm.LD_AP1, arm.LD_AP1, "USR", "   ", False, False),
    (arm.L_PTE_RDONLY_3L, arm.L_PTE_RDONLY_3L, "ro", "RW", True, False),
    (arm.LD_XN, arm.LD_XN, "NX", "x ", False, True),
    (arm.LD_SH, arm.LD_SH, "SHD", "   ", False, False),
    (_MT3, 0 << 2, "SO/UNCACHED", None, False, False),
    (_MT3, 1 << 2, "MEM/BUFFERABLE/WC", None, False, False),
    (_MT3, 2 << 2, "MEM/CACHED/WT", None, False, False),
    (_MT3, 3 << 2, "MEM/CACHED/WBRA", None, False, False),
    (_MT3, 7 << 2, "MEM/CACHED/WBWA", None, False, False),
    (_MT3, 4 << 2, "DEV/SHARED", None, False, False),
    (_MT3, 1 << 2, "DEV/WC", None, False, False),
    (_MT3, 3 << 2, "DEV/CACHED", None, False, False),
)
SECTION_BITS_3L: tuple[Row, ...] = (
    (arm.LD_AP1, arm.LD_AP1, "USR", None, False, False),
    (arm.L_PTE_RDONLY_3L | arm.LD_AP2, arm.L_PTE_RDONLY_3L | arm.LD_AP2, "ro", "RW", True, False),
    (arm.LD_XN, arm.LD_XN, "NX", "x ", False, True),
    (arm.LD_SH, arm.LD_SH, "SHD", "   ", False, False),
)

# get_domain_name(): PMD_DOMAIN(DOMAIN_*) of asm/domain.h (without CONFIG_IO_36)
DOMAIN_NAMES = {0: "KERNEL ", 1: "USER   ", 2: "IO     ", 3: "VECTORS"}


@dataclass
class PgLevel:
    """One pg_level[] row as ptdump_initialize() completes it."""

    name: str | None
    bits: tuple[Row, ...] = ()
    mask: int = 0
    ro: Row | None = None
    nx: Row | None = None

    def __post_init__(self) -> None:
        for row in self.bits:
            self.mask |= row[0]
            if row[4]:
                self.ro = row
            if row[5]:
                self.nx = row


def pg_levels(lpae: bool) -> list[PgLevel]:
    """pg_level[]: {}, pgd, p4d, pud, pmd (section_bits, "PMD" with 3 levels else "PGD"), pte."""
    return [
        PgLevel(None), PgLevel(None), PgLevel(None), PgLevel(None),
        PgLevel("PMD" if lpae else "PGD", SECTION_BITS_3L if lpae else SECTION_BITS_2L),
        PgLevel("PTE", PTE_BITS_3L if lpae else PTE_BITS_2L),
    ]


def prot_text(prot: int, bits: tuple[Row, ...]) -> str:
    """dump_prot(): " %s" of the set (or clear) text of every row; rows without text print nothing."""
    out = []
    for m, v, s, c, _, _ in bits:
        t = s if prot & m == v else c
        if t is not None:
            out.append(" " + t)
    return "".join(out)


@dataclass
class Layout:
    """dump.c's address_markers[] (without KASAN), VMALLOC_START as ptdump_initialize() sets it:
    (high_memory + VMALLOC_OFFSET) rounded down to VMALLOC_OFFSET (asm/pgtable.h)."""

    lpae: bool
    page_offset: int = PAGE_OFFSET_DEFAULT
    modules_vaddr: int | None = None  # PAGE_OFFSET - SZ_16M (asm/memory.h, no THUMB2_KERNEL)
    high_memory: int | None = None
    vmalloc_start: int | None = None
    known: set[str] = field(default_factory=set)
    modes: dict = field(default_factory=dict)  # view -> PagingMode where it is not the kernel's

    def __post_init__(self) -> None:
        if self.modules_vaddr is None:
            self.modules_vaddr = self.page_offset - SZ_16M
        if self.vmalloc_start is None and self.high_memory is not None:
            self.vmalloc_start = (self.high_memory + VMALLOC_OFFSET) & ~(VMALLOC_OFFSET - 1)

    def markers(self) -> list[tuple[int, str]]:
        vs = self.vmalloc_start if self.vmalloc_start is not None else self.page_offset + (512 << 20) + VMALLOC_OFFSET
        return [
            (self.modules_vaddr, "Modules"),
            (self.page_offset, "Kernel Mapping"),
            (vs, "vmalloc() Area"),
            (FDT_FIXED_BASE, "FDT Area"),
            (FIXADDR_START, "Fixmap Area"),
            (VECTORS_BASE, "Vectors"),
            (VECTORS_BASE + 2 * 4096, "Vectors End"),
            (0xFFFFFFFF, ""),  # {-1, NULL}
        ]

    def ranges(self) -> list[tuple[int, int]]:
        """walk_pgd() from 0 over PTRS_PER_PGD * PGDIR_SIZE: the whole 4 GiB."""
        return [(0, 1 << 32)]


class ArmState(MarkerState):
    """note_page() of arch/arm/mm/dump.c (v6.1), with note_prot_wx()."""

    def __init__(self, layout: Layout, out: TextIO | None, check_wx: bool = False,
                 records: list[dict] | None = None) -> None:
        self.lpae = layout.lpae
        self.pg = pg_levels(self.lpae)
        # ptdump_check_wx() walks with the markers {0, NULL}, {-1, NULL}
        self.markers = [(0, ""), (0xFFFFFFFF, "")] if check_wx else layout.markers()
        self.out = out
        self.records = records
        self.check_wx = check_wx
        self.marker = 0
        self.level = -1  # MarkerState's "no event yet"; dump.c's st->level 0
        self.current_prot = 0
        self.current_domain: str | None = None
        self.start_address = 0
        self.missing_pa = 0
        self.lines = 0
        self.wx_pages = 0
        self.wx_ranges: list[tuple[int, int]] = []

    def _domain(self, level: int, eff: int) -> str | None:
        if self.lpae or level not in (4, 5):
            return None
        return DOMAIN_NAMES.get((eff >> arm.PERM_DOMAIN_SHIFT) & 0xF, "unknown")

    def note(self, va: int, level: int, val: int, key: int, eff: int) -> None:
        if level <= MISSING_BASE:
            # an entry whose table the image does not hold: a range of its own, printed as such
            lvl = MISSING_BASE - level + 1
            prot, domain = -1 - (val & 0xFFFFFFFFFF), None
            self.missing_pa = val
        elif level == -1:  # note_page(st, 0, 0, 0, NULL)
            lvl, prot, domain = 0, 0, None
        else:
            lvl = level + 1
            prot = val & self.pg[lvl].mask
            domain = self._domain(lvl, eff)
        va &= 0xFFFFFFFF
        if self.level == -1:
            self.level = lvl
            self.current_prot = prot
            self.current_domain = domain
            self._print(f"---[ {self.markers[self.marker][1]} ]---\n")
            self.start_address = va
            return
        nxt = self.markers[self.marker + 1][0]
        if prot == self.current_prot and lvl == self.level and domain == self.current_domain and va < nxt:
            return
        if self.current_prot:
            self._note_wx(va)
            self._line(va)
        if va >= nxt:
            self.marker += 1
            self._print(f"---[ {self.markers[self.marker][1]} ]---\n")
        self.start_address = va
        self.current_prot = prot
        self.current_domain = domain
        self.level = lvl

    def _note_wx(self, va: int) -> None:
        if not self.check_wx or self.current_prot < 0:
            return
        pg = self.pg[self.level]
        if pg.ro is None or pg.nx is None:
            return
        p = self.current_prot
        if p & pg.ro[0] == pg.ro[1] or p & pg.nx[0] == pg.nx[1]:
            return
        self.wx_pages += ((va - self.start_address) & 0xFFFFFFFF) // 4096
        self.wx_ranges.append((self.start_address, va))

    def _line(self, va: int) -> None:
        self.lines += 1
        if self.out is None and self.records is None:
            return
        size = (va - self.start_address) & 0xFFFFFFFF
        delta = size >> 10
        delta, unit = scaled_size(delta)
        pg = self.pg[self.level]
        missing = self.current_prot < 0
        if self.records is not None:
            rec = {"start": self.start_address, "end": va, "size": size or 1 << 32,
                   "marker": self.markers[self.marker][1], "level": pg.name}
            if missing:
                rec["missing_table_pa"] = -1 - self.current_prot
            else:
                rec.update(prot=self.current_prot, domain=(self.current_domain or "").strip() or None,
                           flags=prot_text(self.current_prot, pg.bits).split())
            self.records.append(rec)
        if self.out is None:
            return
        head = f"0x{self.start_address:08x}-0x{va:08x}   {delta:9d}{unit} {pg.name}"
        if missing:
            self.out.write(head + f" [table of entry {-1 - self.current_prot:#x} not in image]\n")
            return
        if self.current_domain is not None:
            head += " " + self.current_domain
        self.out.write(head + prot_text(self.current_prot, pg.bits) + "\n")

    def flush(self) -> None:
        """note_page(&st, 0, 0, 0, NULL)."""
        self.note(0, -1, 0, 0, 0)
