"""PageTableBuilder: page tables in a bytearray, read back through the library."""

from __future__ import annotations

import numpy as np
import pytest
from builders import X86_NX, X86_P, X86_PSE, X86_RW, X86_TABLE_FLAGS, PageTableBuilder

from pagewalk.arch.x86 import X86_64_4LEVEL, X86_64_5LEVEL
from pagewalk.mode import Kind
from pagewalk.translate import translate

KERNEL_TEXT = 0xFFFFFFFF81000000


@pytest.mark.parametrize("mode", [X86_64_4LEVEL, X86_64_5LEVEL], ids=lambda m: m.name)
@pytest.mark.parametrize("size", [4096, 2 << 20, 1 << 30])
def test_map_translates(tmp_path, mode, size):
    """A mapping of each page size translates, through the MMU view, to the PA it was given."""
    b = PageTableBuilder(mode)
    pa = 0x40000000 if size == 1 << 30 else 0x1200000
    b.map(KERNEL_TEXT & ~(size - 1), pa, size, X86_P | X86_RW | X86_NX)
    with b.memory(tmp_path) as mem:
        t = translate(mem, mode, b.root, (KERNEL_TEXT & ~(size - 1)) + 0x123)
    assert t.fault is None
    assert t.pa == pa + 0x123
    assert t.page_size == size
    assert [s.kind for s in t.steps] == ["table"] * (len(t.steps) - 1) + ["leaf"]


def test_leaf_and_table_entry_format():
    """Table entries carry _PAGE_TABLE, upper-level leaves PSE, PTEs no PSE, and the mode agrees."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x200000, 0x600000, 2 << 20, X86_P)
    b.map(0x1000, 0x7000, 4096, X86_P)
    top = b.entry(b.root, 0)
    assert top & 0xFFF == X86_TABLE_FLAGS
    pmd_table, pmd_idx = b.slot(0x200000, 2)
    assert b.entry(pmd_table, pmd_idx) == 0x600000 | X86_P | X86_PSE
    pte_table, pte_idx = b.slot(0x1000, 3)
    assert b.entry(pte_table, pte_idx) == 0x7000 | X86_P
    kinds, _ = X86_64_4LEVEL.classify(2, np.array([b.entry(pmd_table, pmd_idx)], np.uint64))
    assert kinds.tolist() == [Kind.LEAF]
    # Both mappings share the top, PUD and PMD tables: 3 tables + 1 PTE table + the root.
    assert len(b.image) == 4 * 4096
    assert [m.entry for m in b.mappings] == [0x600000 | X86_P | X86_PSE, 0x7000 | X86_P]


def test_bump_allocator_and_set_entry():
    """Tables come from consecutive 4 KiB pages from `base`; set_entry writes raw values back."""
    b = PageTableBuilder(X86_64_5LEVEL, base=0x10000)
    assert b.root == 0x10000
    t1, t2 = b.alloc_table(), b.alloc_table()
    assert (t1, t2) == (0x11000, 0x12000)
    assert b.end == 0x13000
    b.set_entry(b.root, 511, t1 | X86_TABLE_FLAGS)
    b.set_entry(t1, 3, 0xDEAD000)
    assert b.entry(b.root, 511) == t1 | X86_TABLE_FLAGS
    assert b.entry(t1, 3) == 0xDEAD000
    assert b.image[0x1000 + 3 * 8 : 0x1000 + 4 * 8] == (0xDEAD000).to_bytes(8, "little")


@pytest.mark.parametrize(
    ("va", "pa", "size", "message"),
    [
        (0x1000, 0x1000, 8192, "not an entry size"),
        (0x1000, 0x1000, 2 << 20, "not aligned"),
        (0x0000800000000000, 0x1000, 4096, "not canonical"),
        (0, 0, 512 << 30, "has no"),
    ],
)
def test_map_rejects_bad_requests(va, pa, size, message):
    """map() refuses sizes that are no entry size, misaligned or non-canonical addresses, and non-leaf levels."""
    b = PageTableBuilder(X86_64_4LEVEL)
    with pytest.raises(ValueError, match=message):
        b.map(va, pa, size, X86_P)


def test_map_rejects_overlaps():
    """A mapping cannot reuse a slot, nor go below an existing large leaf."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x200000, 0x200000, 2 << 20, X86_P)
    with pytest.raises(ValueError, match="already in use"):
        b.map(0x200000, 0x400000, 2 << 20, X86_P)
    with pytest.raises(ValueError, match="LEAF, not a table"):
        b.map(0x201000, 0x1000, 4096, X86_P)


def test_write_and_memory(tmp_path):
    """write() stores the image byte for byte; memory() serves it from `base` on."""
    b = PageTableBuilder(X86_64_4LEVEL, base=0x100000)
    b.map(0x1000, 0x5000, 4096, X86_P)
    path = b.write(tmp_path / "image.raw")
    assert path == tmp_path / "image.raw"
    assert path.read_bytes() == bytes(b.image)
    with b.memory(tmp_path) as mem:
        assert mem.runs() == [(0x100000, b.end)]
        assert mem.read_u64(b.root) == b.entry(b.root, 0)


def test_custom_entry_formats():
    """make_table_entry and make_leaf replace the x86 defaults, so other formats can plug in."""
    b = PageTableBuilder(
        X86_64_4LEVEL,
        make_table_entry=lambda pa: pa | 0x3,
        make_leaf=lambda level, pa, flags: pa | flags | (0x80 if level < 3 else 0) | 0x20,
    )
    b.map(0x1000, 0x9000, 4096, X86_P)
    pud_table = b.root + 4096  # the bump allocator's next page
    assert b.entry(b.root, 0) == pud_table | 0x3
    table, idx = b.slot(0x1000, 3)
    assert b.entry(table, idx) == 0x9000 | X86_P | 0x20
