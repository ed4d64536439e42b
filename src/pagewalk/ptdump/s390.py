"""The s390 ptdump text and W+X check: arch/s390/mm/dump_pagetables.c of v6.1 (note_page(),
print_prot(), note_prot_wx(), ptdump_check_wx(), pt_dump_init()), reproduced byte for byte.

The line is `0x%016lx-0x%016lx ` + `%9lu%c ` + the level name of the note_page() level
("ASCE", "PGD", "PUD", "PMD", "PTE" for levels 0-4: s390's own names, one off from the
generic ones) + " I", or " RO"/" RW" and " X"/" NX". The protection is `val & (_PAGE_PROTECT |
_PAGE_NOEXEC)`; a PTE with _PAGE_INVALID, and any hole (val 0 above the PTE level), is invalid.
Every run is printed (holes too); the walk covers [0, max_addr) where max_addr = 1 << (DT * 11 +
31) from the kernel ASCE's designation type; the final flush prints up to max_addr and every
marker at or below it. Markers are sorted by address with an insertion sort, keeping the array
order of equal addresses (sort_address_markers()).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TextIO

from ..runs import MISSING_BASE
from .core import MarkerState, scaled_size

_PAGE_NOEXEC = 0x100
_PAGE_PROTECT = 0x200
_PAGE_INVALID = 0x400
_MISSING = 1 << 40  # pagewalk's own "protection" of a run whose table the image lacks
LEVEL_NAMES = ("ASCE", "PGD", "PUD", "PMD", "PTE")  # print_prot()'s level_name[]
PAGE_SIZE = 4096
SIZEOF_LOWCORE = 8192  # sizeof(struct lowcore) (asm/lowcore.h)
NR_CPUS = 256  # CONFIG_NR_CPUS of Debian's s390x kernels
# ABS_LOWCORE_MAP_SIZE = NR_CPUS * sizeof(struct lowcore) (asm/abs_lowcore.h, v6.1)
ABS_LOWCORE_MAP_SIZE = NR_CPUS * SIZEOF_LOWCORE
KFENCE_POOL_SIZE = (255 + 1) * 2 * PAGE_SIZE  # CONFIG_KFENCE_NUM_OBJECTS default 255


@dataclass
class Layout:
    """address_markers[] of dump_pagetables.c, as pt_dump_init() fills them (v6.1).

    Every address is a kernel variable or symbol: `_stext`, `_end` (symbols), `ident_map_size`
    (init data: the value max_pfn << PAGE_SHIFT that setup_memory_end() derived from it),
    `__samode31`, `__eamode31`, `MODULES_VADDR`, `MODULES_END`, `__abs_lowcore`,
    `__memcpy_real_area`, `vmemmap`, `vmemmap_size`, `VMALLOC_START`, `VMALLOC_END` (variables),
    `kfence_pool` (__kfence_pool, CONFIG_KFENCE only; KASAN is not modelled: Debian has KASAN=n).
    Unknown ones are None: their markers are left out (and `missing` says which).
    """

    max_addr: int = 1 << 42
    values: dict[str, int | None] = field(default_factory=dict)
    abs_lowcore_size: int = ABS_LOWCORE_MAP_SIZE
    modes: dict = field(default_factory=dict)  # view -> PagingMode (each ASCE has its own type)
    wx_lowcore_exempt: int | None = None  # --define WX_LOWCORE_EXEMPT (see kernel/s390.py)

    NAMES = ("_stext", "_end", "ident_map_size", "__samode31", "__eamode31", "MODULES_VADDR", "MODULES_END",
             "__abs_lowcore", "__memcpy_real_area", "vmemmap", "vmemmap_size", "VMALLOC_START", "VMALLOC_END",
             "kfence_pool")

    def get(self, name: str) -> int | None:
        return self.values.get(name)

    @property
    def missing(self) -> list[str]:
        return [n for n in self.NAMES if n != "kfence_pool" and self.values.get(n) is None]

    def ranges(self) -> list[tuple[int, int]]:
        """ptdump_show()'s range: {0, max_addr}."""
        return [(0, self.max_addr)]

    def markers(self) -> list[tuple[int, str]]:
        """The sorted address_markers[], the {-1, NULL} end last."""
        v = self.values

        def at(name: str, plus: int = 0) -> int | None:
            x = v.get(name)
            return None if x is None else x + plus

        vm = v.get("vmemmap")
        vms = v.get("vmemmap_size")
        kf = v.get("kfence_pool")
        m: list[tuple[int | None, str]] = [
            (0, "Identity Mapping Start"),
            (at("_stext"), "Identity Mapping End"),
            (at("__samode31"), "Amode31 Area Start"),
            (at("__eamode31"), "Amode31 Area End"),
            (at("_stext"), "Kernel Image Start"),
            (at("_end"), "Kernel Image End"),
        ]
        if kf is not None:
            m += [(kf, "KFence Pool Start"), (kf + KFENCE_POOL_SIZE, "KFence Pool End")]
        m += [
            (at("_end"), "Identity Mapping Start"),
            (at("ident_map_size"), "Identity Mapping End"),
            (vm, "vmemmap Area Start"),
            (None if vm is None or vms is None else vm + vms, "vmemmap Area End"),
            (at("VMALLOC_START"), "vmalloc Area Start"),
            (at("VMALLOC_END"), "vmalloc Area End"),
            (at("MODULES_VADDR"), "Modules Area Start"),
            (at("MODULES_END"), "Modules Area End"),
            (at("__abs_lowcore"), "Lowcore Area Start"),
            (at("__abs_lowcore", self.abs_lowcore_size), "Lowcore Area End"),
            (at("__memcpy_real_area"), "Real Memory Copy Area Start"),
            (at("__memcpy_real_area", PAGE_SIZE), "Real Memory Copy Area End"),
        ]
        known = [(a, n) for a, n in m if a is not None]
        # sort_address_markers(): a stable sort by start address
        known.sort(key=lambda x: x[0])
        known.append(((1 << 64) - 1, ""))
        return known


def prot_of(level: int, val: int) -> int:
    """note_page()'s `prot` of an event."""
    if level <= MISSING_BASE:
        return _MISSING | val  # a table the image lacks: its own run
    prot = val & (_PAGE_PROTECT | _PAGE_NOEXEC)
    if level == 4 and val & _PAGE_INVALID:
        prot = _PAGE_INVALID
    if level != 4 and not val:
        prot = _PAGE_INVALID
    return prot


def prot_text(prot: int, level: int) -> str:
    """print_prot(): the level name, then "I" or "RO"/"RW" and "X"/"NX"."""
    if prot & _PAGE_INVALID:
        return f"{LEVEL_NAMES[level]} I"
    return f"{LEVEL_NAMES[level]} {'RO' if prot & _PAGE_PROTECT else 'RW'} {'NX' if prot & _PAGE_NOEXEC else 'X'}"


class S390State(MarkerState):
    """note_page() of arch/s390/mm/dump_pagetables.c (v6.1), with note_prot_wx()."""

    def __init__(
        self,
        layout: Layout,
        out: TextIO | None,
        check_wx: bool = False,
        records: list[dict] | None = None,
        lowcore_exempt: bool = True,
    ) -> None:
        self.max_addr = layout.max_addr
        # ptdump_check_wx() uses its own two markers {0, NULL}, {-1, NULL}
        self.markers = [(0, ""), ((1 << 64) - 1, "")] if check_wx else layout.markers()
        self.out = out
        self.check_wx = check_wx
        self.records = records
        # note_prot_wx(): the first lowcore page may be W+X when nospec_uses_trampoline() or
        # !cpu_has_bear; the kernel then skips it (and says "no unexpected W+X pages")
        self.lowcore_exempt = lowcore_exempt
        self.marker = 0
        self.level = -1
        self.current_prot = 0
        self.start_address = 0
        self.lines = 0
        self.wx_pages = 0
        self.wx_ranges: list[tuple[int, int]] = []

    def note(self, va: int, level: int, val: int, key: int, eff: int) -> None:
        prot = prot_of(level, val)
        if level == -1:
            va = self.max_addr  # final flush from generic code
        if self.level == -1:
            self._print(f"---[ {self.markers[self.marker][1]} ]---\n")
            self.start_address = va
            self.current_prot = prot
            self.level = level
            return
        if prot == self.current_prot and level == self.level and va < self.markers[self.marker + 1][0]:
            return
        self._note_wx(va)
        self._line(va)
        while va >= self.markers[self.marker + 1][0]:
            self.marker += 1
            self._print(f"---[ {self.markers[self.marker][1]} ]---\n")
        self.start_address = va
        self.current_prot = prot
        self.level = level

    def _note_wx(self, va: int) -> None:
        if not self.check_wx or self.current_prot & (_PAGE_INVALID | _PAGE_PROTECT | _PAGE_NOEXEC | _MISSING):
            return
        if va == PAGE_SIZE and self.lowcore_exempt:
            return
        self.wx_pages += (va - self.start_address) // PAGE_SIZE
        self.wx_ranges.append((self.start_address, va))

    def _line(self, va: int) -> None:
        self.lines += 1
        if self.out is None and self.records is None:
            return
        delta = (va - self.start_address) >> 10
        delta, unit = scaled_size(delta)
        missing = self.level <= MISSING_BASE
        if self.records is not None:
            self.records.append(self._record(va, missing))
        if self.out is None:
            return
        head = f"0x{self.start_address:016x}-0x{va:016x} {delta:9d}{unit} "
        if missing:
            lvl = MISSING_BASE - self.level
            pa = self.current_prot & ~_MISSING
            self.out.write(head + f"{LEVEL_NAMES[lvl]} [table of entry {pa:#x} not in image]\n")
            return
        self.out.write(head + prot_text(self.current_prot, self.level) + "\n")

    def _record(self, va: int, missing: bool) -> dict:
        rec: dict = {"start": self.start_address, "end": va, "size": va - self.start_address,
                     "marker": self.markers[self.marker][1]}
        if missing:
            rec["level"] = LEVEL_NAMES[MISSING_BASE - self.level]
            rec["missing_table_entry"] = self.current_prot & ~_MISSING
            return rec
        p = self.current_prot
        inv = bool(p & _PAGE_INVALID)
        rec.update(level=LEVEL_NAMES[self.level], prot=p, flags=prot_text(p, self.level).split()[1:],
                   effective={"valid": not inv, "write": not inv and not p & _PAGE_PROTECT,
                              "exec": not inv and not p & _PAGE_NOEXEC})
        return rec

    def flush(self) -> None:
        """note_page(st, 0, -1, 0)."""
        self.note(0, -1, 0, 0, 0)
