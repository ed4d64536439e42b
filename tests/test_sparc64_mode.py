"""sparc64 modes (sun4v and sun4u TTEs) from arch/sparc/include/asm/pgtable_64.h: the kernel's and
KERN_PGTABLE_WALK's view of each level, and resolve() from --reg pgd. Verified only against the
headers: no sparc64 guest in the oracle, no emulated MMU (software-refilled TLB)."""

from __future__ import annotations

import io

import builders_sparc64  # noqa: F401  (registers the entry formats)
import numpy as np
import pytest
from builders import PageTableBuilder
from builders_sparc64 import SUN4U_KERNEL, SUN4V_KERNEL, V4

from pagewalk.arch import sparc64
from pagewalk.errors import RootError, UsageError
from pagewalk.mode import HwKind, Kind
from pagewalk.target import resolve

V, U = sparc64.make_mode("sun4v"), sparc64.make_mode("sun4u")


def kern(mode, level, entry):
    kind, out = mode.classify(level, np.array([entry], dtype=np.uint64))
    return Kind(int(kind[0])), int(out[0])


def hw(mode, level, entry):
    kind, out = mode.hw_classify(level, np.array([entry], dtype=np.uint64))
    return HwKind(int(kind[0])), int(out[0])


def test_geometry_from_page_shift():
    """8 KiB pages, 10 index bits per level: PMD 8 MiB, PUD 8 GiB, PGD entries 8 TiB, 53 VA bits."""
    assert [lvl.entry_span for lvl in V.levels] == [1 << 43, 1 << 33, 1 << 23, 1 << 13]
    assert all(lvl.entries == 1024 for lvl in V.levels) and V.va_bits == 53 and V.byteorder == ">"


def test_leaf_detection_every_level():
    """0 is none, low bits are bad, _PAGE_PMD_HUGE is a leaf at PUD and PMD (not PGD), every PTE slot a leaf."""
    for level in (0, 1, 2):
        assert kern(V, level, 0)[0] == Kind.HOLE
        assert kern(V, level, 0x40002000) == (Kind.TABLE, 0x40002000)
        assert kern(V, level, 0x40002000 | 0x10)[0] == Kind.HOLE
    huge = 0x80000000 | SUN4V_KERNEL | sparc64._PAGE_PMD_HUGE | 3  # _PAGE_SZ4MB_4V
    assert kern(V, 2, huge) == (Kind.LEAF, 0x80000000) and hw(V, 2, huge) == (HwKind.LEAF, 0x80000000)
    assert kern(V, 1, huge)[0] == Kind.LEAF and hw(V, 1, huge)[0] == HwKind.LEAF
    assert kern(V, 0, huge)[0] == Kind.HOLE  # no p4d_leaf(): flag bits make it bad
    assert kern(V, 3, 0)[0] == Kind.LEAF
    assert hw(V, 3, SUN4V_KERNEL | 0x2000) == (HwKind.LEAF, 0x2000)
    assert hw(V, 3, (SUN4V_KERNEL & ~sparc64._PAGE_VALID) | 0x2000)[0] == HwKind.FAULT  # brgez
    assert hw(V, 1, 0)[0] == HwKind.FAULT  # brz


def test_sun4u_and_sun4v_physical_address_masks():
    """pte_pfn() keeps PA bits 42:13 on sun4u and 55:13 on sun4v: the same high bit is a PA bit only on sun4v."""
    e = (1 << 50) | 0x4000
    assert kern(V, 3, e | SUN4V_KERNEL)[1] == (1 << 50) | 0x4000
    assert kern(U, 3, e | SUN4U_KERNEL)[1] == 0x4000
    assert V.extra["present"](3, np.array([V4["PRESENT"], 0x80], np.uint64)).tolist() == [True, False]
    assert U.extra["present"](3, np.array([0x80], np.uint64)).tolist() == [True]


def test_resolve_and_dump(tmp_path):
    """--reg pgd=PA roots the walk; the generic dump lists vmalloc pages with the TTE bit names."""
    b = PageTableBuilder(V, base=0x400000)
    b.map(0x100000000, 0x8000000, 0x2000, SUN4V_KERNEL)
    b.map(0x100800000, 0x9000000, 0x800000, SUN4V_KERNEL | 3)
    mem = b.memory(tmp_path)
    t = resolve(mem, arch="sparc64", regs={"pgd": b.root})
    out = io.StringIO()
    t.kernel.dump(t, "kernel", out)
    assert out.getvalue().splitlines() == [
        "---[ vmalloc ]---",
        ("0x0000000100000000-0x0000000100002000          8K pte  PRESENT W EXEC P CV CP WRITE READ ACCESSED MODIFIED"
         " VALID SZ=0"),
        ("0x0000000100800000-0x0000000101000000          8M pmd  PRESENT W EXEC P CV CP PMD_HUGE WRITE READ ACCESSED"
         " MODIFIED VALID SZ=3"),
    ]
    assert t.kernel.checkwx(t).wx_pages == 1 + 1024
    with pytest.raises(RootError, match="kern_base"):
        resolve(mem, arch="sparc64", kallsyms={"swapper_pg_dir": 0x1000000})
    t2 = resolve(mem, arch="sparc64", kallsyms={"swapper_pg_dir": 0x400000 + b.root - 0x400000},
                 defines={"kern_base": 0x400000})
    assert t2.roots["kernel"] == b.root
    with pytest.raises(UsageError, match="sun4u"):
        resolve(mem, arch="sparc64", regs={"pgd": b.root}, kernel_config="sun4w")
    mem.close()
