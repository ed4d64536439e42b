"""The riscv ptdump text, markers, PA column and W+X check on built tables (arch/riscv/mm/ptdump.c)."""

from __future__ import annotations

import io

import builders_riscv  # noqa: F401  (registers the riscv entry formats)
import pytest
from builders import PageTableBuilder
from builders_riscv import (
    RV_A,
    RV_G,
    RV_IO,
    RV_KERNEL_RW,
    RV_KERNEL_RX,
    RV_N,
    RV_NC,
    RV_R,
    RV_V,
    RV_X,
    ppn_bits,
)

from pagewalk.api import checkwx, dump
from pagewalk.arch.riscv import SV32, SV39, SV48, SV57
from pagewalk.errors import RootError
from pagewalk.ptdump.riscv import Layout, prot_text
from pagewalk.target import resolve

GB1, MB2, MB4, KB4 = 1 << 30, 2 << 20, 4 << 20, 4096
SATP_MODE = {"sv39": 8, "sv48": 9, "sv57": 10}


def _target(b: PageTableBuilder, tmp_path, **defines):
    if b.mode is SV32:
        satp = (1 << 31) | (b.root >> 12)
    else:
        satp = (SATP_MODE[b.mode.name] << 60) | (b.root >> 12)
    return resolve(b.memory(tmp_path), arch=b.mode.arch, regs={"satp": satp}, defines=defines)


def _text(t) -> list[str]:
    out = io.StringIO()
    dump(t, "kernel", out)
    return out.getvalue().splitlines()


def test_sv39_text_byte_for_byte(tmp_path):
    """Markers print in a while loop, holes and zero PTEs do not print, equal leaves merge, PA column."""
    b = PageTableBuilder(SV39)
    b.map(0xFFFFFFD600000000, 0x80000000, MB2, RV_KERNEL_RW)
    b.map(0xFFFFFFD600200000, 0x80200000, MB2, RV_KERNEL_RW)
    b.map(0xFFFFFFD600400000, 0x80400000, KB4, RV_KERNEL_RW | RV_NC)
    b.map(0xFFFFFFFF80000000, 0x80000000, GB1, RV_KERNEL_RX)
    assert _text(_target(b, tmp_path, MODULES_VADDR=0xFFFFFFFF01E6C000)) == [
        "---[ Fixmap start ]---",
        "---[ Fixmap end ]---",
        "---[ PCI I/O start ]---",
        "---[ PCI I/O end ]---",
        "---[ vmemmap start ]---",
        "---[ vmemmap end ]---",
        "---[ vmalloc() area ]---",
        "---[ vmalloc() end ]---",
        "---[ Linear mapping ]---",
        "0xffffffd600000000-0xffffffd600400000    0x0000000080000000         4M PMD .   ..     ..   D A G . . W R V",
        "0xffffffd600400000-0xffffffd600401000    0x0000000080400000         4K PTE . MT(NC)   ..   D A G . . W R V",
        "---[ Modules/BPF mapping ]---",
        "---[ Kernel mapping ]---",
        "0xffffffff80000000-0xffffffffc0000000    0x0000000080000000         1G PGD .   ..     ..   . A G . X . R V",
    ]


def test_marker_inside_a_run_prints_the_pa_of_the_entry_there(tmp_path):
    """A marker splits a run; the new line's PA is that of the entry at the marker (note_page's pa)."""
    b = PageTableBuilder(SV57)
    for k in range(8):
        b.map(0xFFFFFFFF00000000 + k * KB4, 0x90000000 + k * KB4, KB4, RV_KERNEL_RW)
    lines = _text(_target(b, tmp_path, MODULES_VADDR=0xFFFFFFFF00003000))
    i = lines.index("---[ Modules/BPF mapping ]---")
    assert lines[i - 1] == (
        "0xffffffff00000000-0xffffffff00003000    0x0000000090000000        12K PTE .   ..     ..   D A G . . W R V"
    )
    assert lines[i + 1] == (
        "0xffffffff00003000-0xffffffff00008000    0x0000000090003000        20K PTE .   ..     ..   D A G . . W R V"
    )


def test_runs_merge_across_discontiguous_pas(tmp_path):
    """Only the protection bits split runs: a run keeps the PA of its first entry (as the kernel's)."""
    b = PageTableBuilder(SV48)
    b.map(0xFFFF8F8000000000, 0x82626000, KB4, RV_KERNEL_RW)
    b.map(0xFFFF8F8000001000, 0x9FE00000, KB4, RV_KERNEL_RW)
    lines = _text(_target(b, tmp_path))
    assert "0xffff8f8000000000-0xffff8f8000002000    0x0000000082626000         8K PTE .   ..     ..   D A G . . W R V" in lines


def test_prot_text_of_every_column():
    """N, MT(NC)/MT(IO)/MT(??), RSW(n) and the eight letters, in pte_bits[] order."""
    assert prot_text(RV_N | RV_IO | (3 << 8) | 0xFF) == " N MT(IO) RSW(3) D A G U X W R V"
    assert prot_text(RV_NC | RV_IO | (1 << 8) | RV_V) == " . MT(??) RSW(1) . . . . . . . V"
    assert prot_text(RV_NC | (2 << 8)) == " . MT(NC) RSW(2) . . . . . . . ."
    assert prot_text((1 << 8) | RV_R | RV_V, xlen=32) == " RSW(1) . . . . . . R V"


def test_level_names_follow_the_mode():
    """Folded levels print "PGD": Sv57 PGD P4D PUD PMD PTE, Sv48 PGD PGD PUD, Sv39 PGD PGD PGD PMD, Sv32 all PGD."""
    assert Layout(57).level_names() == ("PGD", "P4D", "PUD", "PMD", "PTE")
    assert Layout(48).level_names() == ("PGD", "PGD", "PUD", "PMD", "PTE")
    assert Layout(39).level_names() == ("PGD", "PGD", "PGD", "PMD", "PTE")
    assert Layout(32).level_names() == ("PGD", "PGD", "PGD", "PGD", "PTE")


def test_layout_addresses_of_the_three_captured_modes():
    """The marker addresses computed from VA_BITS are the ones the Debian kernel's text shows."""
    a57, a48, a39 = Layout(57).addresses(), Layout(48).addresses(), Layout(39).addresses()
    assert (a57["PCI_IO_START"], a57["VMEMMAP_START"], a57["VMALLOC_START"]) == (
        0xFF1BFFFFFF000000, 0xFF1C000000000000, 0xFF20000000000000)
    assert (a48["VMEMMAP_START"], a48["VMALLOC_START"], a48["PAGE_OFFSET"]) == (
        0xFFFF8D8000000000, 0xFFFF8F8000000000, 0xFFFFAF8000000000)
    assert (a39["VMEMMAP_START"], a39["VMALLOC_START"], a39["PAGE_OFFSET"]) == (
        0xFFFFFFC500000000, 0xFFFFFFC600000000, 0xFFFFFFD600000000)
    assert [Layout(v).ranges()[0][0] for v in (57, 48, 39)] == [
        0xFF00000000000000, 0xFFFF800000000000, 0xFFFFFFC000000000]


def test_sv48_gigapage_is_a_pud(tmp_path):
    """A 1 GiB leaf in Sv48 is pud_leaf() and prints as "PUD"."""
    b = PageTableBuilder(SV48)
    b.map(0xFFFFAF8040000000, 0xC0000000, GB1, RV_KERNEL_RW)
    assert (
        "0xffffaf8040000000-0xffffaf8080000000    0x00000000c0000000         1G PUD .   ..     ..   D A G . . W R V"
        in _text(_target(b, tmp_path))
    )


def test_sv32_text_has_32_bit_columns(tmp_path):
    """Sv32: 8-digit addresses, no N/MT columns, 4M leaves named PGD, the PA column cut to 32 bits."""
    b = PageTableBuilder(SV32)
    b.map(0xC0000000, 0x80000000, MB4, RV_KERNEL_RW)
    b.map(0xC0400000, 0x300001000, KB4, RV_KERNEL_RW)  # above 4 GiB: start_pa is an unsigned long
    t = _target(b, tmp_path)
    assert t.mode is SV32
    assert _text(t) == [
        "---[ Fixmap start ]---",
        "---[ Fixmap end ]---",
        "---[ PCI I/O start ]---",
        "---[ PCI I/O end ]---",
        "---[ vmalloc() area ]---",
        "---[ vmalloc() end ]---",
        "---[ Linear mapping ]---",
        "0xc0000000-0xc0400000    0x80000000         4M PGD   ..   D A G . . W R V",
        "0xc0400000-0xc0401000    0x00001000         4K PTE   ..   D A G . . W R V",
    ]


def test_checkwx_fails_with_the_kernel_messages(tmp_path):
    """W+X pages are counted per run; the kernel warns once at the first, then reports "failed"."""
    b = PageTableBuilder(SV39)
    b.map(0xFFFFFFFF80000000, 0x80200000, MB2, RV_KERNEL_RX)
    for k in range(3):
        b.map(0xFFFFFFC600010000 + k * KB4, 0x90000000 + k * KB4, KB4, RV_KERNEL_RW | RV_X)
    b.map(0xFFFFFFD600000000, 0x80000000, MB2, RV_KERNEL_RW | RV_X)
    res = checkwx(_target(b, tmp_path))
    assert not res.passed and res.wx_pages == 3 + 512
    assert res.ranges == [(0xFFFFFFC600010000, 0xFFFFFFC600013000), (0xFFFFFFD600000000, 0xFFFFFFD600200000)]
    assert res.lines == [
        "riscv/mm: Found insecure W+X mapping at address 0xffffffc600010000/0xffffffc600010000",
        "Checked W+X mappings: failed, 515 W+X pages found",
    ]


def test_checkwx_passes_without_wx(tmp_path):
    """RW and RX mappings alone pass with the kernel's "passed" line."""
    b = PageTableBuilder(SV57)
    b.map(0xFFFFFFFF80000000, 0x80200000, MB2, RV_KERNEL_RX)
    b.map(0xFF60000000000000, 0x80000000, MB2, RV_KERNEL_RW)
    res = checkwx(_target(b, tmp_path))
    assert res.passed and res.lines == ["Checked W+X mappings: passed, no W+X pages found"]


def test_prot_none_pte_prints_without_v(tmp_path):
    """A not-valid PTE with G (PROT_NONE) has protection bits, so the kernel prints it, V shown as '.'."""
    b = PageTableBuilder(SV39)
    va = 0xFFFFFFC600000000
    b.map(va, 0x90000000, KB4, RV_KERNEL_RW)
    table, idx = b.slot(va, 2)
    b.set_entry(table, idx + 1, ppn_bits(0x90001000) | RV_G | RV_R | RV_A)
    assert (
        "0xffffffc600001000-0xffffffc600002000    0x0000000090001000         4K PTE .   ..     ..   . A G . . . R ."
        in _text(_target(b, tmp_path))
    )


def test_no_satp_and_bare_satp_are_errors(tmp_path):
    """Without satp there is no root (the message says how to give it); a Bare satp has no tables."""
    b = PageTableBuilder(SV39)
    mem = b.memory(tmp_path)
    with pytest.raises(RootError, match="--reg satp="):
        resolve(mem, arch="riscv64")
    with pytest.raises(RootError, match="Bare"):
        resolve(mem, arch="riscv64", regs={"satp": b.root >> 12})
