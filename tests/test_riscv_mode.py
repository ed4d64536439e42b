"""RISC-V paging modes: satp decoding, Linux's view of entries, and the MMU's (faults included)."""

from __future__ import annotations

import builders_riscv  # noqa: F401  (registers the riscv entry formats)
import numpy as np
import pytest
from builders import PageTableBuilder
from builders_riscv import (
    RV_A,
    RV_D,
    RV_G,
    RV_IO,
    RV_KERNEL_RW,
    RV_N,
    RV_NC,
    RV_R,
    RV_U,
    RV_V,
    RV_W,
    RV_X,
    ppn_bits,
)

from pagewalk.arch.riscv import SV32, SV39, SV48, SV57, decode_satp, describe, leaf_pa
from pagewalk.mode import HwKind, Kind
from pagewalk.translate import translate

GB1, MB2, MB4, KB4 = 1 << 30, 2 << 20, 4 << 20, 4096


def hw(mode, level, entry):
    kind, out = mode.hw_classify(level, np.array([entry], dtype=np.uint64))
    return HwKind(int(kind[0])), int(out[0])


def kern(mode, level, entry):
    kind, out = mode.classify(level, np.array([entry], dtype=np.uint64))
    return Kind(int(kind[0])), int(out[0])


def test_satp_decoding_of_the_oracle_values():
    """satp's MODE picks Sv39/48/57, ASID is bits 59:44 and the root is PPN << 12 (§10.1.11)."""
    assert decode_satp(0xA000100000082E2C) == (SV57, 1, 0x82E2C000)
    assert decode_satp(0x9003800000082F99) == (SV48, 0x38, 0x82F99000)
    assert decode_satp(0x8002800000082E97) == (SV39, 0x28, 0x82E97000)


def test_satp_rv32_bare_and_reserved():
    """RV32 satp has MODE in bit 31, a 9-bit ASID and a 22-bit PPN; Bare gives no mode; 1 is reserved."""
    assert decode_satp(0x80000000 | (5 << 22) | 0x3FFFFF, xlen=32) == (SV32, 5, 0x3FFFFF000)
    assert decode_satp(0x12345, xlen=32)[0] is None
    assert decode_satp(0)[0] is None
    with pytest.raises(ValueError, match="reserved"):
        decode_satp(1 << 60)


def test_geometry_is_computed_per_mode():
    """Sv32 has 1024 4-byte entries and 4 MiB megapages; Sv39/48/57 have 512 8-byte entries."""
    assert (SV32.entry_bytes, SV32.levels[0].entries, SV32.levels[0].entry_span, SV32.va_bits) == (4, 1024, MB4, 32)
    assert [lvl.entry_span for lvl in SV39.levels] == [GB1, MB2, KB4]
    assert SV48.levels[0].entry_span == 1 << 39 and SV57.levels[0].entry_span == 1 << 48
    assert (SV39.va_bits, SV48.va_bits, SV57.va_bits) == (39, 48, 57)


def test_sv32_physical_addresses_have_34_bits():
    """An Sv32 PPN of 22 bits reaches 16 GiB: PPN 0x3FFFFF maps PA 0x3FFFFF000."""
    assert hw(SV32, 1, ppn_bits(0x3FFFFF000) | RV_V | RV_R) == (HwKind.LEAF, 0x3FFFFF000)


@pytest.mark.parametrize(
    "mode, level, entry, reason",
    [
        (SV39, 2, ppn_bits(0x5000) | RV_V | RV_W, "W=1 with R=0"),
        (SV39, 2, ppn_bits(0x5000) | RV_R | RV_W, "V=0"),
        (SV39, 1, ppn_bits(0x201000) | RV_V | RV_R, "misaligned superpage"),
        (SV39, 0, ppn_bits(0x40200000) | RV_V | RV_R, "misaligned superpage"),
        (SV32, 0, ppn_bits(0x401000) | RV_V | RV_R, "misaligned superpage"),
        (SV48, 1, ppn_bits(0x5000) | RV_V | RV_A, "non-leaf entry (D, A or U)"),
        (SV48, 1, ppn_bits(0x5000) | RV_V | RV_D, "non-leaf entry (D, A or U)"),
        (SV57, 0, ppn_bits(0x5000) | RV_V | RV_U, "non-leaf entry (D, A or U)"),
        (SV57, 2, ppn_bits(0x5000) | RV_V | RV_NC, "non-leaf entry (N or PBMT)"),
        (SV39, 1, ppn_bits(0x5000) | RV_V | RV_N, "non-leaf entry (N or PBMT)"),
        (SV39, 2, ppn_bits(0x5000) | RV_V | RV_R | RV_NC | RV_IO, "PBMT=3"),
        (SV39, 2, ppn_bits(0x5000) | RV_V | RV_R | (1 << 54), "reserved bits 60:54"),
        (SV39, 2, ppn_bits(0x5000) | RV_V | RV_R | RV_N, "Svnapot"),  # ppn[3:0] = 0101, not 1000
        (SV39, 1, ppn_bits(0x208000) | RV_V | RV_R | RV_N, "Svnapot"),  # N on a megapage
        (SV39, 2, ppn_bits(0x5000) | RV_V, "pointer entry at the last level"),
    ],
)
def test_reserved_encodings_fault(mode, level, entry, reason):
    """Reserved encodings are page faults for the MMU (§10.3.2 steps 2, 4 and 6; Svnapot; Svpbmt)."""
    kind, code = hw(mode, level, entry)
    assert kind == HwKind.FAULT
    assert reason in mode.fault_reason(code)


def test_valid_leaves_and_pointers():
    """X-only and R leaves are leaves at any level; V alone is a pointer; PBMT NC/IO leaves are valid."""
    assert hw(SV57, 0, ppn_bits(1 << 48) | RV_V | RV_X) == (HwKind.LEAF, 1 << 48)
    assert hw(SV39, 0, ppn_bits(GB1) | RV_V | RV_R) == (HwKind.LEAF, GB1)
    assert hw(SV39, 0, ppn_bits(0x7000) | RV_V) == (HwKind.TABLE, 0x7000)
    assert hw(SV39, 2, ppn_bits(0x7000) | RV_V | RV_R | RV_IO) == (HwKind.LEAF, 0x7000)
    assert hw(SV39, 2, ppn_bits(0x7000) | RV_V | RV_R | RV_NC) == (HwKind.LEAF, 0x7000)


def test_napot_leaf_gives_the_64k_base_and_the_va_picks_the_page():
    """A NAPOT PTE (ppn[3:0] = 1000b) maps 64 KiB: ppn[0][3:0] comes from the VA (step 8)."""
    entry = ppn_bits(0x80008000) | RV_V | RV_R | RV_N
    assert hw(SV48, 3, entry) == (HwKind.LEAF, 0x80000000)
    assert leaf_pa(SV48, 3, entry, 0xFFFFFFC000035123) == 0x80005123
    assert leaf_pa(SV39, 1, ppn_bits(0x80200000) | RV_V | RV_R, 0xFFFFFFC0001FF123) == 0x803FF123


def test_leaf_pa_on_arrays_equals_leaf_pa_on_ints():
    """translate_many()'s array form of leaf_pa gives the scalar answers, NAPOT and superpages alike."""
    import numpy as np

    entries = [ppn_bits(0x80008000) | RV_V | RV_R | RV_N, ppn_bits(0x80200000) | RV_V | RV_R]
    vas = [0xFFFFFFC000035123, 0xFFFFFFC0001FF123]
    for level in (1, 3):
        arr = leaf_pa(SV48, level, np.array(entries, np.uint64), np.array(vas, np.uint64))
        assert arr.tolist() == [leaf_pa(SV48, level, e, v) for e, v in zip(entries, vas)]


def test_linux_view_of_upper_levels():
    """pgd/p4d: !V is a hole and a leaf is walked as a table; pud: !V is skipped; pmd: G or RWX is present."""
    leaf = ppn_bits(0x200000) | RV_V | RV_R | RV_W
    assert kern(SV57, 0, leaf) == (Kind.TABLE, 0x200000)  # no pgd_leaf() on riscv
    assert kern(SV57, 1, leaf)[0] == Kind.TABLE  # no p4d_leaf()
    assert kern(SV48, 0, ppn_bits(0x5000) | RV_R)[0] == Kind.HOLE  # p4d_bad(): V clear
    assert kern(SV57, 0, 0)[0] == Kind.HOLE
    assert kern(SV57, 2, ppn_bits(GB1) | RV_V | RV_R)[0] == Kind.LEAF  # pud_leaf()
    assert kern(SV39, 0, ppn_bits(GB1) | RV_V | RV_R)[0] == Kind.LEAF  # Sv39 root = the pud
    assert kern(SV57, 2, ppn_bits(GB1) | RV_R)[0] == Kind.SKIP  # !pud_present()
    assert kern(SV39, 1, ppn_bits(MB2) | RV_R | RV_W)[0] == Kind.LEAF  # THP pmd_present(): RWX
    assert kern(SV39, 1, ppn_bits(0x5000) | RV_G)[0] == Kind.TABLE  # PROT_NONE pmd is present
    assert kern(SV39, 1, ppn_bits(0x5000) | RV_A)[0] == Kind.SKIP
    assert kern(SV32, 0, ppn_bits(MB4) | RV_R | RV_W)[0] == Kind.SKIP  # no THP on rv32
    assert kern(SV39, 2, 0)[0] == Kind.LEAF  # every PTE slot is reported


def test_hole_depths_follow_the_folding():
    """Sv57 root holes are depth 0, Sv48's root is the p4d (1), Sv39's the pud (2), Sv32's depth 0."""
    assert [m.levels[0].hole_depth for m in (SV57, SV48, SV39, SV32)] == [0, 1, 2, 0]
    assert [m.levels[0].klevel for m in (SV57, SV48, SV39, SV32)] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "mode, va, size",
    [
        (SV39, 0xFFFFFFC040000000, GB1),
        (SV39, 0xFFFFFFD600200000, MB2),
        (SV48, 0xFFFFAF8000201000, KB4),
        (SV57, 0xFF60000000400000, MB2),
        (SV57, 0x0000000000402000, KB4),
        (SV32, 0xC0400000, MB4),
        (SV32, 0xC0001000, KB4),
    ],
)
def test_translate_through_built_tables(tmp_path, mode, va, size):
    """translate() follows built tables to the leaf and adds the offset inside the page."""
    b = PageTableBuilder(mode)
    pa = 0x80000000 + size * 3
    b.map(va, pa, size, RV_KERNEL_RW)
    t = translate(b.memory(tmp_path), mode, b.root, va + 0x123)
    assert t.ok and t.pa == pa + 0x123 and t.page_size == size


def test_translate_reports_the_reserved_encoding(tmp_path):
    """A W-without-R PTE stops the walk with the reason, as a hardware page fault would."""
    b = PageTableBuilder(SV39)
    va = 0xFFFFFFD600001000
    b.map(va, 0x80001000, KB4, RV_KERNEL_RW)
    table, idx = b.slot(va, 2)
    b.set_entry(table, idx, ppn_bits(0x80001000) | RV_V | RV_W)
    t = translate(b.memory(tmp_path), SV39, b.root, va)
    assert not t.ok and "W=1 with R=0" in t.fault
    assert t.steps[-1].kind == "fault"


def test_describe_lists_the_bits_in_ptdump_order():
    """describe() names N, PBMT, RSW and D A G U X W R V, and marks pointers."""
    assert describe(ppn_bits(0x1000) | RV_N | RV_NC | (2 << 8) | RV_KERNEL_RW) == "N PBMT=NC RSW=2 D A G W R V"
    assert describe(RV_V) == "V (pointer)"
    assert describe(RV_R) == "not valid"
