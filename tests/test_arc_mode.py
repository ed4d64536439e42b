"""ARC modes from arch/arc/include/asm/pgtable-levels.h and pgtable-bits-arcv2.h: geometry per
configuration, the kernel's and the TLB-miss handler's view of each level, resolve(). Verified
only against the headers: no ARC guest in the oracle, no emulated MMU (software-refilled TLB)."""

from __future__ import annotations

import builders_arc  # noqa: F401  (registers the entry formats)
import numpy as np
import pytest
from builders import PageTableBuilder

from pagewalk.arch import arc
from pagewalk.errors import RootError, UsageError
from pagewalk.mode import HwKind, Kind
from pagewalk.target import resolve


def kern(mode, level, entry):
    kind, out = mode.classify(level, np.array([entry], dtype=np.uint64))
    return Kind(int(kind[0])), int(out[0])


def hw(mode, level, entry):
    kind, out = mode.hw_classify(level, np.array([entry], dtype=np.uint64))
    return HwKind(int(kind[0])), int(out[0])


@pytest.mark.parametrize("name, split", [("8k", [11, 8]), ("4k", [10, 10]), ("16k", [11, 7]),
                                         ("8k-hugepage-16m", [8, 11]), ("8k-3level", [4, 7, 8]),
                                         ("8k-4level", [4, 3, 4, 8])])
def test_geometry_is_the_headers_split(name, split):
    """The index widths are the comments' splits (11:8:13, 10:10:12, <4>:<7>:<8>:<13>, …) of a 32-bit VA."""
    m = arc.make_mode(name)
    assert [lvl.bits for lvl in m.levels] == split
    assert sum(split) + arc.CONFIGS[name].page_shift == 32 and m.entry_bytes == 4


def test_leaf_detection_every_level():
    """0 is none, low bits are bad, _PAGE_HW_SZ at the PMD level is a (super page) leaf, PTE slots are leaves."""
    two, three = arc.make_mode("8k"), arc.make_mode("8k-3level")
    assert kern(two, 0, 0)[0] == Kind.HOLE and kern(two, 0, 0x80004000) == (Kind.TABLE, 0x80004000)
    assert kern(two, 0, 0x80004000 | 4)[0] == Kind.HOLE
    sp = 0x90000000 | arc.PAGE_KERNEL | arc._PAGE_HW_SZ
    assert kern(two, 0, sp) == (Kind.LEAF, 0x90000000) and hw(two, 0, sp) == (HwKind.LEAF, 0x90000000)
    assert kern(three, 0, sp)[0] == Kind.HOLE  # the pud level has no leaf
    assert kern(three, 1, sp)[0] == Kind.LEAF
    assert kern(arc.make_mode("arcompact-8k"), 0, sp)[0] == Kind.HOLE  # MMUv3: no _PAGE_HW_SZ
    assert kern(two, 1, 0)[0] == Kind.LEAF
    assert hw(two, 1, 0x80002000 | arc.PAGE_KERNEL) == (HwKind.LEAF, 0x80002000)
    assert hw(two, 1, 0x80002000 | arc._PAGE_READ)[0] == HwKind.FAULT  # _PAGE_PRESENT is the TLB's V
    assert hw(two, 0, 0)[0] == HwKind.FAULT


def test_resolve_from_the_scratch_register(tmp_path):
    """--reg scratch_data0 (ARCv2's current-PGD register) roots the walk; user and vmalloc pages are dumped."""
    mode = arc.make_mode("8k")
    b = PageTableBuilder(mode, base=0x80000000)
    b.map(0x10000, 0x81000000, 0x2000, arc._PAGE_PRESENT | arc._PAGE_READ | arc._PAGE_CACHEABLE)
    b.map(0x70002000, 0x82000000, 0x2000, arc.PAGE_KERNEL)
    mem = b.memory(tmp_path)
    t = resolve(mem, arch="arc", regs={"scratch_data0": b.root})
    lines = [ln for ln in _dump(t).splitlines() if ln.startswith("0x")]
    assert lines == ["0x00010000-0x00012000          8K pte  CACHEABLE READ PRESENT",
                     "0x70002000-0x70004000          8K pte  CACHEABLE EXECUTE WRITE READ GLOBAL PRESENT"]
    assert t.kernel.checkwx(t).wx_pages == 1
    with pytest.raises(RootError, match="scratch_data0"):
        resolve(mem, arch="arc")
    with pytest.raises(UsageError, match="8k-4level"):
        resolve(mem, arch="arc", regs={"pgd": b.root}, kernel_config="pae40")
    mem.close()


def _dump(t) -> str:
    import io

    out = io.StringIO()
    t.kernel.dump(t, "kernel", out)
    return out.getvalue()
