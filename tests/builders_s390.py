"""s390x DAT entry formats for tests/builders.py and a builder that writes them level by level.

Formats (PoP SA22-7832 chapter 3, "Translation Tables"; arch/s390/include/asm/pgtable.h): a region entry points at the
next table with its own table type TT (bits 60-61: R1 0xC, R2 0x8, R3 0x4) and TF/TL of the table
it points to (TL=3, TF=0: a whole table, as Linux writes _REGION*_ENTRY); a segment entry points
at a page table with TT 00; a 2 GiB region-third leaf and a 1 MiB segment leaf carry FC (0x400);
a PTE is the frame address plus I/P/IEP. Empty entries are not 0 on s390: _REGION*_ENTRY_EMPTY
(TT | I), _SEGMENT_ENTRY_EMPTY (I) and _PAGE_INVALID; `S390Builder.finish()` writes them into every
slot the tests left at 0. Entries are big-endian (the mode's byte order, honoured by the builder).
"""

from __future__ import annotations

import builders
from builders import PageTableBuilder

from pagewalk.mode import Kind, PagingMode

S390_I_REGION = 0x20  # _REGION_ENTRY_INVALID / _SEGMENT_ENTRY_INVALID
S390_FC = 0x400  # _REGION3_ENTRY_LARGE / _SEGMENT_ENTRY_LARGE
S390_P = 0x200  # DAT protection, every level
S390_IEP = 0x100  # instruction-execution protection (leaves)
S390_PAGE_I = 0x400  # _PAGE_INVALID
S390_PTE_BIT52 = 0x800  # must be zero in a PTE
S390_SW_RW = 0x1 | 0x4 | 0x8 | 0x10 | 0x20  # PTE: present, young, dirty, read, write (Linux software bits)
S390_SEG_SW_RW = 0x1 | 0x2 | 0x1000 | 0x2000  # segment / region-third leaf: read, write, young, dirty
TT = {"pgd": 0xC, "p4d": 0x8, "pud": 0x4, "pmd": 0x0}


def table_entry(role: str, pa: int, tf: int = 0, tl: int = 3) -> int:
    """An entry of a `role` table pointing at the next table (region entries: with TF/TL)."""
    if role == "pmd":
        return pa
    return pa | TT[role] | (tf << 6) | tl


def empty_entry(role: str) -> int:
    """Linux's empty entry of a `role` table (pgtable.h *_EMPTY, _PAGE_INVALID)."""
    return S390_PAGE_I if role == "pte" else TT[role] | S390_I_REGION


def leaf_entry(role: str, pa: int, flags: int) -> int:
    """A leaf: a PTE, a 1 MiB segment entry (FC) or a 2 GiB region-third entry (TT R3, FC)."""
    if role == "pte":
        return pa | flags
    if role == "pmd":
        return pa | S390_FC | flags
    return pa | TT["pud"] | S390_FC | flags


def _s390_formats(mode: PagingMode):
    roles = [lvl.name for lvl in mode.levels]

    def make_table_entry(pa: int) -> int:  # level-blind: S390Builder passes the level itself
        raise ValueError("use S390Builder: s390 table entries depend on their level")

    def make_leaf(level: int, pa: int, flags: int) -> int:
        return leaf_entry(roles[level], pa, flags)

    return make_table_entry, make_leaf


builders.ARCH_ENTRY_FORMATS.setdefault("s390x", _s390_formats)


def b_contains(b: PageTableBuilder, pa: int, size: int) -> bool:
    """Whether [pa, pa + size) lies in the builder's image."""
    return b.base <= pa and pa + size <= b.end


class S390Builder(PageTableBuilder):
    """PageTableBuilder whose table entries carry their level's table type, with finish()."""

    def slot(self, va: int, level: int, *, create: bool = False) -> tuple[int, int]:
        if not self.mode.is_canonical(va):
            raise ValueError(f"{va:#x} is outside the {self.mode.name} address space")
        table = self.root
        for i in range(level):
            idx = self.index(va, i)
            e = self.entry(table, idx)
            role = self.mode.levels[i].name
            if e == 0 or e == empty_entry(role):
                if not create:
                    raise KeyError(f"no {self.mode.levels[i + 1].name} table for {va:#x}")
                child = self.alloc_table()
                self.set_entry(table, idx, table_entry(role, child))
                table = child
                continue
            kind, out = self._classify(i, e)
            if kind != Kind.TABLE:
                raise ValueError(f"{va:#x}: the {role} entry {e:#x} is a {kind.name}, not a table")
            table = out
        return table, self.index(va, level)

    def tables(self) -> list[tuple[int, int]]:
        """(table PA, hardware level) of every table reachable from the root."""
        out, todo, seen = [], [(self.root, 0)], set()
        while todo:
            pa, i = todo.pop()
            if (pa, i) in seen or not b_contains(self, pa, self.mode.levels[i].entries * 8):
                continue  # seen, or a damaged entry pointing outside the image
            seen.add((pa, i))
            out.append((pa, i))
            if i == len(self.mode.levels) - 1:
                continue
            for k in range(self.mode.levels[i].entries):
                e = self.entry(pa, k)
                if e and self._classify(i, e)[0] == Kind.TABLE:
                    todo.append((self._classify(i, e)[1], i + 1))
        return out

    def finish(self) -> S390Builder:
        """Write Linux's empty entry into every slot still 0 (a 0 PTE would be a valid page 0)."""
        for pa, i in self.tables():
            role = self.mode.levels[i].name
            for k in range(self.mode.levels[i].entries):
                if self.entry(pa, k) == 0:
                    self.set_entry(pa, k, empty_entry(role))
        return self
