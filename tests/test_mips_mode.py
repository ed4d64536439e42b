"""mips64 modes: configurations computed from pgtable-64.h / pgtable-bits.h, the kernel's and the
refill handler's view of each level, VA windows, and resolve()'s root and empty-table handling."""

from __future__ import annotations

import io

import builders_mips  # noqa: F401  (registers the entry formats)
import numpy as np
import pytest
from builders import PageTableBuilder
from builders_mips import M_H, M_KERNEL, M_P, M_V

from pagewalk.arch import mips
from pagewalk.errors import RootError, UsageError
from pagewalk.mode import HwKind, Kind
from pagewalk.target import resolve
from pagewalk.translate import translate

INV_PMD, INV_PTE = 0xFFFFFFFF81263000, 0xFFFFFFFF81262000
M = mips.make_mode("4k", invalid_tables={"pmd": INV_PMD, "pte": INV_PTE})


def kern(mode, level, entry):
    kind, out = mode.classify(level, np.array([entry], dtype=np.uint64))
    return Kind(int(kind[0])), int(out[0])


def hw(mode, level, entry):
    kind, out = mode.hw_classify(level, np.array([entry], dtype=np.uint64))
    return HwKind(int(kind[0])), int(out[0])


def test_bit_layouts_follow_the_config_options():
    """The r4k enum shifts with RIXI and HUGE: without RIXI NO_READ is bit 1; PFN_PTE_SHIFT grows with the page."""
    no_rixi = mips.MipsConfig("x", 12, 3, 1, rixi=False, huge=False, special=False).bits()
    assert (no_rixi["_PAGE_NO_READ"], no_rixi["_PAGE_WRITE"], no_rixi["_PAGE_GLOBAL"]) == (2, 4, 0x20)
    assert no_rixi["PFN_PTE_SHIFT"] == 12 - 12 + 8 + 3 and "_PAGE_HUGE" not in no_rixi
    with_rixi = mips.CONFIGS["4k"].bits(cpu_has_rixi=True)
    assert (with_rixi["_PAGE_NO_EXEC"], with_rixi["_PAGE_NO_READ"]) == (0x40, 0x80)
    assert mips.CONFIGS["16k"].bits()["PFN_PTE_SHIFT"] == 16 and mips.CONFIGS["64k"].bits()["PFN_PTE_SHIFT"] == 18


def test_leaf_detection_every_level():
    """pud/pmd entries: the invalid table or 0 is none, low bits are bad, _PAGE_HUGE is a leaf; PTE slots are leaves."""
    table = 0x9800000001234000
    for level, empty in ((0, INV_PMD), (1, INV_PTE)):
        assert kern(M, level, empty)[0] == Kind.HOLE and kern(M, level, 0)[0] == Kind.HOLE
        assert kern(M, level, table) == (Kind.TABLE, 0x1234000)
        assert kern(M, level, 0xFFFFFFFF81260000) == (Kind.TABLE, 0x1260000)  # CKSEG0
        assert kern(M, level, table | 8)[0] == Kind.HOLE  # p?d_bad()
        assert kern(M, level, 0xC000000000004000)[0] == Kind.SKIP  # a mapped address: cannot be followed
    span = 1 << 21
    huge = ((0x40000000 >> 12) << 14) | M_KERNEL | M_H
    assert kern(M, 1, huge) == (Kind.LEAF, 0x40000000)  # pmd_leaf()
    assert kern(M, 0, huge)[0] == Kind.LEAF  # pud_leaf() exists in the kernel ...
    assert hw(M, 0, huge)[0] == HwKind.FAULT  # ... but the refill handler has no PUD pages
    assert hw(M, 1, huge) == (HwKind.LEAF, 0x40000000) and span == M.levels[1].entry_span
    assert kern(M, 2, 0)[0] == Kind.LEAF and kern(M, 2, 0x100)[0] == Kind.LEAF
    assert hw(M, 2, 0x100)[0] == HwKind.FAULT  # _PAGE_GLOBAL alone: V clear
    assert hw(M, 2, 0x68D170F) == (HwKind.LEAF, 0x1A34000)
    assert hw(M, 1, INV_PTE) == (HwKind.TABLE, 0x1262000)  # the handler follows empty pointers
    assert M.extra["present"](2, np.array([M_P, M_V], np.uint64)).tolist() == [True, False]


def test_windows_fold_ckseg_into_the_last_pgd_entries():
    """pgd_index() keeps the low 40 bits: modules (CKSSEG) land in the last PGD entry, after vmalloc."""
    assert M.table_offset(0xFFFFFFFFC0000000) >> 30 == 1023
    assert M.canonical_va(M.table_offset(0xFFFFFFFFC0002000)) == 0xFFFFFFFFC0002000
    assert M.canonical_va(0x2000) == 0xC000000000002000
    assert M.is_canonical(0xC00000FEFFFFF000) and not M.is_canonical(0xC00000FF00000000)
    assert not M.is_canonical(0x9800000000000000)  # XKPHYS is unmapped: no tables
    rel = np.array([0x2000, (1 << 40) - 0x1000], np.uint64)
    assert M.vas_of(rel).tolist() == [0xC000000000002000, 0xFFFFFFFFFFFFF000]


def test_resolve_detects_empty_tables_and_translates_modules(tmp_path):
    """A kernel-like PGD filled with invalid_pmd_table is detected; a module page translates through the last entry."""
    mode = mips.make_mode("4k")
    b = PageTableBuilder(mode, base=0x100000)
    inv_pte = b.alloc_table()
    inv_pmd = b.alloc_table()
    for i in range(512):
        b.set_entry(inv_pmd, i, mips.phys_to_virt_xkphys(inv_pte))
    for i in range(1024):
        b.set_entry(b.root, i, mips.phys_to_virt_xkphys(inv_pmd))
    # the module area's tables, built by hand (the builder creates tables only under zero entries)
    pmd, pte = b.alloc_table(), b.alloc_table()
    for i in range(512):
        b.set_entry(pmd, i, mips.phys_to_virt_xkphys(inv_pte))
    b.set_entry(b.root, 1023, mips.phys_to_virt_xkphys(pmd))
    b.set_entry(pmd, 0, mips.phys_to_virt_xkphys(pte))
    b.set_entry(pte, 2, ((0x2708000 >> 12) << 14) | M_KERNEL)
    b.set_entry(pte, 3, 0x100)
    mem = b.memory(tmp_path)
    t = resolve(mem, arch="mips64", regs={"pgd": mips.phys_to_virt_xkphys(b.root)})
    assert t.layout["invalid_tables"] == {"pmd": mips.phys_to_virt_xkphys(inv_pmd),
                                          "pte": mips.phys_to_virt_xkphys(inv_pte)}
    tr = translate(mem, t.mode, t.roots["kernel"], 0xFFFFFFFFC0002123)
    assert tr.ok and tr.pa == 0x2708123
    out = io.StringIO()
    t.kernel.dump(t, "kernel", out)
    assert out.getvalue().splitlines() == [
        "---[ modules ]---",
        "0xffffffffc0002000-0xffffffffc0003000          4K pte  PRESENT WRITE ACCESSED MODIFIED GLOBAL VALID DIRTY CCA=2",
    ]
    wx = t.kernel.checkwx(t)
    assert wx.passed and "skipped" in wx.lines[0]
    rixi = resolve(mem, arch="mips64", regs={"pgd": b.root}, defines={"cpu_has_rixi": 1})
    assert rixi.kernel.checkwx(rixi).wx_pages == 1  # writable, and _PAGE_NO_EXEC (0x40) clear
    mem.close()


def test_resolve_errors_are_clear(tmp_path):
    """No root, a mapped-address root, an unknown configuration or define: one-line errors, no traceback."""
    b = PageTableBuilder(mips.make_mode("4k"), base=0x100000)
    mem = b.memory(tmp_path)
    with pytest.raises(RootError, match="--reg pgd"):
        resolve(mem, arch="mips64")
    with pytest.raises(RootError, match="neither"):
        resolve(mem, arch="mips64", regs={"pgd": 0xC000000000004000})
    with pytest.raises(UsageError, match="4k-va48"):
        resolve(mem, arch="mips64", regs={"pgd": b.root}, kernel_config="8k")
    with pytest.raises(UsageError, match="unknown for mips64"):
        resolve(mem, arch="mips64", regs={"pgd": b.root}, defines={"PAGE_OFFSET": 1})
    mem.close()


@pytest.mark.parametrize("name", list(mips.CONFIGS))
def test_geometry_of_every_configuration(name):
    """Each configuration's tables are one page (the PGD 2^PGD_TABLE_ORDER pages) of 8-byte entries."""
    cfg = mips.CONFIGS[name]
    m = mips.make_mode(name)
    assert len(m.levels) == cfg.levels and m.levels[-1].shift == cfg.page_shift
    assert m.levels[0].entries * 8 == (1 << cfg.page_shift) << cfg.pgd_order
    assert all(lvl.entries * 8 == 1 << cfg.page_shift for lvl in m.levels[1:])
    assert m.va_bits == m.levels[0].shift + m.levels[0].bits
