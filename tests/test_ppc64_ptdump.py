"""The powerpc ptdump text, markers, PA column and W+X check on built radix tables
(arch/powerpc/mm/ptdump/ptdump.c and book3s64.c of v6.1)."""

from __future__ import annotations

import io
import json

import builders_ppc64  # noqa: F401  (registers the ppc64 entry formats)
import pytest
from builders_ppc64 import (
    PPC_A,
    PPC_D,
    PPC_KERNEL_ROX,
    PPC_KERNEL_RW,
    PPC_KERNEL_RWX,
    PPC_P,
    PPC_PRIV,
    PPC_R,
    PPC_X,
    RadixTableBuilder,
)

from pagewalk.api import checkwx, dump
from pagewalk.arch.ppc64 import (
    _PAGE_NON_IDEMPOTENT,
    _PAGE_TOLERANT,
    H_PAGE_F_GIX_4K,
    PTDUMP_MASK_4K,
    RADIX_4K,
    RADIX_64K,
    encode_prtb0,
)
from pagewalk.errors import UsageError
from pagewalk.ptdump.ppc64 import Layout, flag_mask, flags_text
from pagewalk.target import resolve

MB2, KB64, KB4 = 2 << 20, 64 << 10, 4096
KVA = 0xC000000000000000
VMALLOC = 0xC008000000000000
IO = 0xC00A000000000000
# the kernel's text for two kinds of pages, from the Debian 6.1 capture (tests/fixtures/ppc64)
TEXT_RX = "        r      X   pte  valid  present        dirty  accessed                          "
TEXT_RW = "        r  w       pte  valid  present        dirty  accessed                          "
TAIL_MARKERS = ["---[ I/O remap start ]---", "---[ I/O remap end ]---", "---[ vmemmap start ]---"]


def _target(b, tmp_path, **defines):
    return resolve(b.memory(tmp_path), arch="ppc64", regs={"prtb0": encode_prtb0(b.root)}, defines=defines)


def _text(t) -> list[str]:
    out = io.StringIO()
    dump(t, "kernel", out)
    return out.getvalue().splitlines()


def test_flag_mask_is_the_kernels():
    """build_pgtable_complete_mask() of the 64K-page kernel is 0xe0800000000035ff (the module prints it)."""
    assert flag_mask(16) == 0xE0800000000035FF == RADIX_64K.ptdump_key_mask
    assert flag_mask(12) == PTDUMP_MASK_4K == RADIX_4K.ptdump_key_mask


def test_flags_text_of_the_kernels_pages():
    """dump_flag_info(): clear texts keep the columns; busy/combo/4K_pfn/special print only when set."""
    assert flags_text(PPC_KERNEL_RWX | PPC_P | (1 << 62) | PPC_A, _flags()) == (
        "      " + "  r  w   X   pte  valid  present        dirty  accessed                          ")
    tolerant = flags_text(PPC_KERNEL_RW | (1 << 62) | PPC_A | _PAGE_TOLERANT | 0x400, _flags())
    assert tolerant.endswith("accessed  non-idempotent  tolerant  special")  # 0x30 also matches 0x20
    assert "user" in flags_text(PPC_R | PPC_P, _flags())
    assert "  f_gix:5" in flags_text(PPC_KERNEL_RW | (5 << 53 & H_PAGE_F_GIX_4K), _flags(12))


def _flags(page_shift=16):
    from pagewalk.ptdump.ppc64 import flag_array

    return flag_array(page_shift)


def test_text_byte_for_byte(tmp_path):
    """Markers in the while loop, equal leaves merged, a level change ends a range, holes not printed."""
    b = RadixTableBuilder(RADIX_64K)
    b.map(KVA, 0, MB2, PPC_KERNEL_ROX | PPC_D)
    b.map(KVA + MB2, MB2, MB2, PPC_KERNEL_RW | PPC_A)
    b.map(KVA + 2 * MB2, 0x800000, KB64, PPC_KERNEL_RW | PPC_A)  # same flags, PTE level: a new range
    b.map(VMALLOC + 0x20000, 0x3A00000, KB64, PPC_KERNEL_ROX | PPC_D)
    b.map(IO + 0x10000, 1 << 45, KB64, PPC_KERNEL_RW | PPC_A | _PAGE_NON_IDEMPOTENT)
    assert _text(_target(b, tmp_path)) == [
        "---[ Start of kernel VM ]---",
        "0xc000000000000000-0xc0000000001fffff  0x0000000000000000         2M " + TEXT_RX,
        "0xc000000000200000-0xc0000000003fffff  0x0000000000200000         2M " + TEXT_RW,
        "0xc000000000400000-0xc00000000040ffff  0x0000000000800000        64K " + TEXT_RW,
        "---[ vmalloc() Area ]---",
        "0xc008000000020000-0xc00800000002ffff  0x0000000003a00000        64K " + TEXT_RX,
        "---[ vmalloc() End ]---",
        "---[ isa I/O start ]---",
        "---[ isa I/O end ]---",
        "---[ phb I/O start ]---",
        ("0xc00a000000010000-0xc00a00000001ffff  0x0000200000000000        64K "
         "        r  w       pte  valid  present        dirty  accessed  non-idempotent          "),
        "---[ phb I/O end ]---",
        *TAIL_MARKERS,
    ]


def test_marker_inside_a_run_prints_the_pa_of_the_entry_there(tmp_path):
    """A run across VMALLOC_END (= ISA_IO_BASE) is split there; the new line's PA is the entry's at the marker."""
    b = RadixTableBuilder(RADIX_64K)
    b.map(IO - KB64, 0x100000, KB64, PPC_KERNEL_RW | PPC_A)
    b.map(IO, 0x300000, KB64, PPC_KERNEL_RW | PPC_A)
    assert _text(_target(b, tmp_path)) == [
        "---[ Start of kernel VM ]---",
        "---[ vmalloc() Area ]---",
        "0xc009ffffffff0000-0xc009ffffffffffff  0x0000000000100000        64K " + TEXT_RW,
        "---[ vmalloc() End ]---",
        "---[ isa I/O start ]---",
        "0xc00a000000000000-0xc00a00000000ffff  0x0000000000300000        64K " + TEXT_RW,
        "---[ isa I/O end ]---",
        "---[ phb I/O start ]---",
        "---[ phb I/O end ]---",
        *TAIL_MARKERS,
    ]


def test_layout_defines_move_markers(tmp_path):
    """--define VMALLOC_START moves its marker; an unknown name is a usage error."""
    b = RadixTableBuilder(RADIX_64K)
    b.map(KVA, 0, MB2, PPC_KERNEL_RW | PPC_A)
    b.map(KVA + MB2, MB2, MB2, PPC_KERNEL_RW | PPC_A)
    lines = _text(_target(b, tmp_path, VMALLOC_START=KVA + MB2 - KB64))  # inside the first leaf
    assert lines[:4] == ["---[ Start of kernel VM ]---",
                         "0xc000000000000000-0xc0000000001fffff  0x0000000000000000         2M " + TEXT_RW,
                         "---[ vmalloc() Area ]---",  # reached at the next entry: a leaf is not split
                         "0xc000000000200000-0xc0000000003fffff  0x0000000000200000         2M " + TEXT_RW]
    with pytest.raises(UsageError):
        _target(b, tmp_path, MODULES_VADDR=1)


def test_layout_of_the_64k_radix_kernel():
    """The marker addresses are the radix constants of v6.1 (the module printed VMALLOC/IOREMAP/VMEMMAP)."""
    a = Layout().addresses()
    assert (a["VMALLOC_START"], a["VMALLOC_END"], a["IOREMAP_BASE"], a["H_VMEMMAP_START"]) == (
        0xC008000000000000, 0xC00A000000000000, 0xC00A000080000000, 0xC00C000000000000)
    assert Layout().ranges() == [(KVA, 0xC010000000000000)]
    assert Layout(page_shift=12).addresses()["H_VMEMMAP_START"] == 0xC0003F0000000000


def test_checkwx_counts_64k_pages(tmp_path):
    """ptdump_check_wx(): W and X together fail, counted in PAGE_SIZE (64 KiB) pages, first range warned."""
    b = RadixTableBuilder(RADIX_64K)
    b.map(KVA, 0, MB2, PPC_KERNEL_ROX)
    b.map(KVA + MB2, MB2, MB2, PPC_KERNEL_RWX)
    for k in range(3):
        b.map(VMALLOC + k * KB64, 0x4000000 + k * KB64, KB64, PPC_KERNEL_RWX | PPC_A)
    wx = checkwx(_target(b, tmp_path))
    assert not wx.passed and wx.wx_pages == 32 + 3
    assert wx.ranges == [(KVA + MB2, KVA + 2 * MB2), (VMALLOC, VMALLOC + 3 * KB64)]
    assert wx.lines == [
        "powerpc/mm: Found insecure W+X mapping at address 0xc000000000200000/0xc000000000200000",
        "Checked W+X mappings: FAILED, 35 W+X pages found",
    ]


def test_checkwx_passes_without_wx(tmp_path):
    """Writable-or-executable (never both) kernels pass; a user RWX page outside the range is not looked at."""
    b = RadixTableBuilder(RADIX_64K)
    b.map(KVA, 0, MB2, PPC_KERNEL_ROX)
    b.map(KVA + MB2, MB2, MB2, PPC_KERNEL_RW)
    b.map(VMALLOC, 0x4000000, KB64, PPC_P | PPC_R | PPC_X | PPC_PRIV)
    wx = checkwx(_target(b, tmp_path))
    assert wx.passed and wx.lines == ["Checked W+X mappings: passed, no W+X pages found"]


def test_json_records(tmp_path):
    """--format json gives the same ranges with PA, flags and the effective permissions."""
    b = RadixTableBuilder(RADIX_64K)
    b.map(KVA, 0, MB2, PPC_KERNEL_ROX | PPC_A)
    out = io.StringIO()
    n = dump(_target(b, tmp_path), "kernel", out, "json")
    doc = json.loads(out.getvalue())
    assert n == 1 and doc["arch"] == "ppc64" and doc["root_pa"] == b.root
    r = doc["ranges"][0]
    assert (r["start"], r["end"], r["pa"], r["level"]) == (KVA, KVA + MB2, 0, "pmd")
    assert r["effective"] == {"privileged": True, "read": True, "write": False, "exec": True}


def test_missing_table_is_a_line_not_a_crash(tmp_path):
    """A directory entry pointing outside the image prints one line saying so."""
    b = RadixTableBuilder(RADIX_64K)
    b.map(KVA, 0, MB2, PPC_KERNEL_RW | PPC_A)
    b.set_entry(b.root, 1, PPC_P | 0x7F000000 | 9)
    lines = _text(_target(b, tmp_path))
    assert "0xc000008000000000-0xc00000ffffffffff       512G [table at PA 0x7f000000 not in image]" in lines
