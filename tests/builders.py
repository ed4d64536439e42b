"""Build page tables for any PagingMode in a bytearray of physical memory, for tests.

`PageTableBuilder(mode).map(va, pa, size, flags)` creates the tables a mapping needs from a bump
allocator of 4 KiB pages; `set_entry()` writes raw values (holes, bad entries, shared tables,
loops); `memory(tmp_path)` hands the result to the code under test as a RawMemory.

What is architecture-specific is two callables, `make_table_entry(pa)` and
`make_leaf(level, pa, flags)`, with per-architecture defaults in `ARCH_ENTRY_FORMATS` (only
x86-64 so far). Whether the produced entries mean what they should is checked with the mode's
own `classify()`, so the builder never duplicates the architecture's rules.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pagewalk.memory.raw import RawMemory
from pagewalk.mode import Kind, PagingMode

PAGE = 4096

MakeTableEntry = Callable[[int], int]  # next-table PA -> raw entry
MakeLeaf = Callable[[int, int, int], int]  # (hardware level index, output PA, flags) -> raw entry

# x86-64 entry bits (Intel SDM Vol. 3A §4.5, arch/x86/include/asm/pgtable_types.h).
X86_P, X86_RW, X86_US, X86_PWT, X86_PCD, X86_A, X86_D, X86_PSE, X86_G = (1 << b for b in range(9))
X86_NX = 1 << 63
X86_TABLE_FLAGS = X86_P | X86_RW | X86_US | X86_A | X86_D  # _PAGE_TABLE


def _x86_formats(mode: PagingMode) -> tuple[MakeTableEntry, MakeLeaf]:
    """x86-64: tables get _PAGE_TABLE; leaves above the PTE level get PSE (bit 7)."""
    last = len(mode.levels) - 1

    def make_table_entry(pa: int) -> int:
        return pa | X86_TABLE_FLAGS

    def make_leaf(level: int, pa: int, flags: int) -> int:
        return pa | flags | (X86_PSE if level != last else 0)

    return make_table_entry, make_leaf


# mode.arch -> factory of (make_table_entry, make_leaf); other architectures plug in here.
ARCH_ENTRY_FORMATS: dict[str, Callable[[PagingMode], tuple[MakeTableEntry, MakeLeaf]]] = {
    "x86_64": _x86_formats,
    "i386": lambda mode: _i386_formats(mode),
}


def _i386_formats(mode: PagingMode) -> tuple[MakeTableEntry, MakeLeaf]:
    """i386 (2-level and PAE): the x86 bits (SDM §4.3, §4.4); a 2-level 4 MiB page puts PA bits
    39:32 in bits 20:13 (PSE-36). A PAE PDPTE made this way carries _PAGE_TABLE's RW/US/A/D, bits
    the SDM reserves there and QEMU ignores; Linux writes PA | _PAGE_PRESENT (pud_populate())."""
    make_table_entry, x86_leaf = _x86_formats(mode)
    if mode.entry_bytes == 8:
        return make_table_entry, x86_leaf

    def make_leaf(level: int, pa: int, flags: int) -> int:
        if level == 0:
            pa = (pa & 0xFFC00000) | ((pa >> 32) & 0xFF) << 13
        return x86_leaf(level, pa, flags)

    return make_table_entry, make_leaf


@dataclass(frozen=True)
class Mapping:
    """One leaf written by `map()`: its canonical VA, size, output PA, flags and raw entry."""

    va: int
    size: int
    pa: int
    flags: int
    level: int  # hardware level index of the leaf entry
    entry: int


class PageTableBuilder:
    """Page tables for `mode` in a bytearray that starts at physical address `base`.

    >>> b = PageTableBuilder(X86_64_4LEVEL)
    >>> b.map(0xFFFFFFFF81000000, 0x1000000, 2 << 20, X86_P | X86_RW)
    >>> mem = b.memory(tmp_path)  # doctest: +SKIP
    """

    def __init__(
        self,
        mode: PagingMode,
        *,
        base: int = 0x1000,
        make_table_entry: MakeTableEntry | None = None,
        make_leaf: MakeLeaf | None = None,
    ) -> None:
        if base % PAGE:
            raise ValueError(f"base {base:#x} is not page aligned")
        self.mode = mode
        self.base = base
        self.image = bytearray()
        if make_table_entry is None or make_leaf is None:
            if mode.arch not in ARCH_ENTRY_FORMATS:
                raise ValueError(f"no default entry format for {mode.arch}; pass make_table_entry and make_leaf")
            default_table, default_leaf = ARCH_ENTRY_FORMATS[mode.arch](mode)
            make_table_entry = make_table_entry or default_table
            make_leaf = make_leaf or default_leaf
        self.make_table_entry = make_table_entry
        self.make_leaf = make_leaf
        self.mappings: list[Mapping] = []
        self._order = "little" if mode.byteorder == "<" else "big"
        self.root = self.alloc_table()

    # -- memory ------------------------------------------------------------------------------
    @property
    def table_bytes(self) -> int:
        """Bytes of one table (every level of the modes so far has the same table size)."""
        return max(lvl.entries for lvl in self.mode.levels) * self.mode.entry_bytes

    @property
    def end(self) -> int:
        """First physical address past the image."""
        return self.base + len(self.image)

    def alloc_table(self) -> int:
        """PA of a new zeroed table: the next free 4 KiB pages, aligned to the table size."""
        size = -(-self.table_bytes // PAGE) * PAGE
        align = max(PAGE, 1 << (size - 1).bit_length(), self.mode.root_align)
        pa = -(-self.end // align) * align
        self.image.extend(bytes(pa + size - self.end))
        return pa

    def _offset(self, table_pa: int, index: int) -> int:
        n = self.mode.entry_bytes
        off = table_pa - self.base + index * n
        if table_pa < self.base or off + n > len(self.image):
            raise ValueError(f"table at PA {table_pa:#x} is not in the builder's image")
        return off

    def entry(self, table_pa: int, index: int) -> int:
        """The raw entry `index` of the table at `table_pa`."""
        off = self._offset(table_pa, index)
        return int.from_bytes(self.image[off : off + self.mode.entry_bytes], self._order)

    def set_entry(self, table_pa: int, index: int, value: int) -> None:
        """Write a raw entry: for holes, bad entries, shared tables and loops."""
        off = self._offset(table_pa, index)
        self.image[off : off + self.mode.entry_bytes] = value.to_bytes(self.mode.entry_bytes, self._order)

    # -- mappings ----------------------------------------------------------------------------
    def index(self, va: int, level: int) -> int:
        """Index of `va` in a table of hardware level `level`."""
        lvl = self.mode.levels[level]
        return (self.mode.table_offset(va) >> lvl.shift) & (lvl.entries - 1)

    def _classify(self, level: int, entry: int) -> tuple[Kind, int]:
        kind, out = self.mode.classify(level, np.array([entry], dtype=np.uint64))
        return Kind(int(kind[0])), int(out[0])

    def slot(self, va: int, level: int, *, create: bool = False) -> tuple[int, int]:
        """(table PA, index) of the level-`level` entry for `va`, following (or creating) tables."""
        if not self.mode.is_canonical(va):
            raise ValueError(f"{va:#x} is not canonical for {self.mode.name}")
        table = self.root
        for i in range(level):
            idx = self.index(va, i)
            e = self.entry(table, idx)
            if e == 0:
                if not create:
                    raise KeyError(f"no {self.mode.levels[i + 1].name} table for {va:#x}")
                child = self.alloc_table()
                self.set_entry(table, idx, self.make_table_entry(child))
                table = child
                continue
            kind, out = self._classify(i, e)
            if kind != Kind.TABLE:
                raise ValueError(
                    f"{va:#x}: the {self.mode.levels[i].name} entry {e:#x} is a {kind.name}, not a table"
                )
            table = out
        return table, self.index(va, level)

    def level_for(self, size: int) -> int:
        """Hardware level index whose entries map `size` bytes."""
        for i, lvl in enumerate(self.mode.levels):
            if lvl.entry_span == size:
                return i
        spans = ", ".join(f"{lvl.entry_span:#x}" for lvl in self.mode.levels)
        raise ValueError(f"{size:#x} is not an entry size of {self.mode.name} ({spans})")

    def map(self, va: int, pa: int, size: int, flags: int) -> None:
        """Map [va, va + size) to [pa, pa + size) with one leaf of that size carrying `flags`."""
        level = self.level_for(size)
        if va % size or pa % size:
            raise ValueError(f"va {va:#x} / pa {pa:#x} not aligned to {size:#x}")
        entry = self.make_leaf(level, pa, flags)
        kind, _ = self._classify(level, entry)
        if kind != Kind.LEAF:
            raise ValueError(f"{self.mode.name} has no {size:#x} leaves at {self.mode.levels[level].name} ({kind.name})")
        table, idx = self.slot(va, level, create=True)
        if self.entry(table, idx):
            raise ValueError(f"{va:#x}: {self.mode.levels[level].name} entry already in use")
        self.set_entry(table, idx, entry)
        self.mappings.append(Mapping(va, size, pa, flags, level, entry))

    # -- output ------------------------------------------------------------------------------
    def write(self, path: str | os.PathLike[str]) -> str | os.PathLike[str]:
        """Write the image as a raw physical dump (byte 0 is PA `base`) and return `path`."""
        with open(path, "wb") as f:
            f.write(self.image)
        return path

    def memory(self, tmp_path: str | os.PathLike[str]) -> RawMemory:
        """The image as a RawMemory, written to a new file in the directory `tmp_path`."""
        fd, path = tempfile.mkstemp(prefix=f"{self.mode.name}-", suffix=".raw", dir=tmp_path)
        os.close(fd)
        return RawMemory(str(self.write(path)), self.base)
