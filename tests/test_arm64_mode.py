"""arm64 VMSAv8-64 modes: geometry, descriptor formats, hierarchical permissions, the kernel's view, ptdump text."""

from __future__ import annotations

import io

import builders_arm64  # noqa: F401  (registers the arm64 entry formats)
import numpy as np
import pytest
from builders import PageTableBuilder
from builders_arm64 import (
    AP_TABLE_NO_EL0, AP_TABLE_RDONLY, KERNEL_RO_X, KERNEL_RW, PTE_AF, PTE_CONT, PTE_NG, PTE_PXN, PTE_RDONLY,
    PTE_SHARED, PTE_USER, PTE_UXN, PXN_TABLE, UXN_TABLE, attr,
)

from pagewalk.arch import arm64
from pagewalk.mode import HwKind, Kind
from pagewalk.ptdump.arm64 import Arm64State
from pagewalk.ptdump.core import drive
from pagewalk.runs import root_runs
from pagewalk.translate import translate

TOP = 1 << 64
K, M, G = 1 << 10, 1 << 20, 1 << 30


@pytest.mark.parametrize(
    "granule,va,ds,levels,top_entries,start,blocks",
    [
        (4 * K, 48, False, 4, 512, 0, {1 << 30, 2 << 20}),
        (4 * K, 39, False, 3, 512, 1, {1 << 30, 2 << 20}),
        (4 * K, 52, True, 5, 16, -1, {512 << 30, 1 << 30, 2 << 20}),
        (16 * K, 47, False, 3, 2048, 1, {32 << 20}),
        (16 * K, 48, False, 4, 2, 0, {32 << 20}),
        (16 * K, 52, True, 4, 32, 0, {64 << 30, 32 << 20}),
        (64 * K, 42, False, 2, 8192, 2, {512 << 20}),
        (64 * K, 48, False, 3, 64, 1, {512 << 20}),
        (64 * K, 25, False, 1, 512, 3, set()),
    ],
)
def test_geometry_is_computed_from_granule_and_input_size(granule, va, ds, levels, top_entries, start, blocks):
    """Levels, start level, root size and block sizes follow D8.2 for every granule and input size."""
    pa_bits = 52 if ds else 48
    m = arm64.make_mode(granule, va, ds=ds, pa_bits=pa_bits)
    assert len(m.levels) == levels
    assert m.levels[0].entries == top_entries
    assert m.extra["start_level"] == start
    assert {m.levels[i].entry_span for i in m.extra["block_levels"]} == blocks
    assert m.levels[-1].entry_span == granule
    assert m.top_span == 1 << va


def test_input_sizes_beyond_48_bits_need_ds_with_4k_and_16k():
    """A 52-bit input size is only valid with TCR.DS (4K, 16K) or the 64K granule."""
    with pytest.raises(ValueError, match="52 needs TCR.DS"):
        arm64.make_mode(4 * K, 52)
    assert len(arm64.make_mode(64 * K, 52, pa_bits=52).levels) == 3


def test_mode_from_the_captured_tcr_values():
    """TCR_EL1 of the captures: 6.1 (T1SZ 16, TG1 4K, IPS 48) and 6.12 `-cpu max` (T1SZ 12, DS, IPS 52)."""
    m61 = arm64.mode_from_tcr(0x015001F5B5503510, kernel="6.1")
    assert (m61.va_bits, m61.pa_bits, m61.extra["granule"], len(m61.levels)) == (48, 48, 4096, 4)
    assert m61.canonical_va(0) == 0xFFFF000000000000
    lpa2 = arm64.mode_from_tcr(0x095001F6B54C350C)
    assert (lpa2.va_bits, lpa2.pa_bits, lpa2.extra["ds"], len(lpa2.levels)) == (52, 52, True, 5)
    user = arm64.mode_from_tcr(0x095001F6B54C350C, upper=False)
    assert user.canonical_va(0) == 0 and user.va_bits == 52


def test_ttbr_baddr_drops_asid_and_cnp_and_places_52_bit_addresses():
    """TTBR1_EL1's ASID (63:48) and CnP (bit 0) are not address bits; with 52-bit OAs bits 5:2 are BADDR[51:48]."""
    assert arm64.ttbr_baddr(0x005C000041EFE001, pa52=True) == 0x41EFE000
    assert arm64.ttbr_baddr(0x003C000041858001, pa52=False) == 0x41858000
    assert arm64.ttbr_baddr(0x41858000 | (0xA << 2), pa52=True) == 0xA_0000_4185_8000


def test_ttbr1_and_ttbr0_address_ranges_and_tbi():
    """TTBR1 translates VAs whose bits above the input size are all ones, TTBR0 all zeros; TBI ignores the top byte."""
    up = arm64.make_mode(4 * K, 48)
    assert up.is_canonical(0xFFFF800000000000) and not up.is_canonical(0xFFFE800000000000)
    assert not up.is_canonical(0x0000800000000000)
    assert up.table_offset(0xFFFF000000001000) == 0x1000
    low = arm64.make_mode(4 * K, 48, upper=False)
    assert low.is_canonical(0x0000FFFFFFFFF000) and not low.is_canonical(0x0001000000000000)
    tagged = arm64.make_mode(4 * K, 48, upper=False, tbi=True)
    assert tagged.is_canonical(0x5A00FFFFFFFFF000) and not low.is_canonical(0x5A00FFFFFFFFF000)


@pytest.mark.parametrize("granule,va,ds,pa_bits", [(4 * K, 52, True, 52), (16 * K, 52, True, 52), (64 * K, 48, False, 52)])
def test_52_bit_output_addresses_round_trip(tmp_path, granule, va, ds, pa_bits):
    """A PA above 2^50 is encoded in bits 9:8 (LPA2) or 15:12 (64K LPA) and decoded by both views."""
    m = arm64.make_mode(granule, va, ds=ds, pa_bits=pa_bits)
    pa = (0xB << 48) | (7 * granule)
    flags = KERNEL_RW & ~PTE_SHARED if ds else KERNEL_RW  # with DS, bits 9:8 are OA[51:50], not SH
    e = arm64.encode_oa(pa, ds=ds, lpa=m.extra["lpa"]) | 3 | flags
    last = len(m.levels) - 1
    kind, out = m.hw_classify(last, np.array([e], np.uint64))
    assert (kind[0], int(out[0])) == (HwKind.LEAF, pa)
    kind, out = m.classify(last, np.array([e], np.uint64))
    assert (kind[0], int(out[0])) == (Kind.LEAF, pa)
    # and a table descriptor's next-level address the same way
    kind, out = m.hw_classify(last - 1, np.array([arm64.encode_oa(pa, ds=ds, lpa=m.extra["lpa"]) | 3], np.uint64))
    assert (kind[0], int(out[0])) == (HwKind.TABLE, pa)


def test_output_address_beyond_ips_is_an_address_size_fault():
    """With a 48-bit PA size (IPS), bits 49:48 of a LPA2-format descriptor would make an address size fault."""
    m = arm64.make_mode(4 * K, 48, pa_bits=40)
    kind, out = m.hw_classify(3, np.array([(1 << 44) | 3 | KERNEL_RW], np.uint64))
    assert kind[0] == HwKind.FAULT and "address size" in m.fault_reason(int(out[0]))


def test_hw_descriptor_types_per_level():
    """bits[1:0]: 0b01 is a block only where the granule has blocks; at the last level it is reserved."""
    m = arm64.make_mode(4 * K, 48)
    e = np.array([0x40000000 | 1, 0x40000000 | 3, 0x40000000 | 2, 0], np.uint64)
    kinds0, _ = m.hw_classify(0, e)  # level 0: no blocks without DS
    assert kinds0.tolist() == [HwKind.FAULT, HwKind.TABLE, HwKind.FAULT, HwKind.FAULT]
    kinds1, out1 = m.hw_classify(1, e)  # level 1: 1G blocks
    assert kinds1.tolist() == [HwKind.LEAF, HwKind.TABLE, HwKind.FAULT, HwKind.FAULT]
    assert int(out1[0]) == 0x40000000
    kinds3, out3 = m.hw_classify(3, e)
    assert kinds3.tolist() == [HwKind.FAULT, HwKind.LEAF, HwKind.FAULT, HwKind.FAULT]
    assert "0b01" in m.fault_reason(int(out3[0]))


def test_kernel_view_6_12_and_6_1_present_bits():
    """v6.12 sees an invalid PMD with nG (PTE_PRESENT_INVALID) as a leaf, v6.1 one with PROT_NONE (bit 58)."""
    new = arm64.make_mode(4 * K, 48, kernel="6.12")
    old = arm64.make_mode(4 * K, 48, kernel="6.1")
    e = np.array([0, 0x200000 | 1, 0x1000 | 3, 0x200000 | PTE_NG, 0x200000 | (1 << 58), 0x200000 | 2], np.uint64)
    k_new, _ = new.classify(2, e)
    k_old, _ = old.classify(2, e)
    assert k_new.tolist() == [Kind.HOLE, Kind.LEAF, Kind.TABLE, Kind.LEAF, Kind.SKIP, Kind.SKIP]
    assert k_old.tolist() == [Kind.HOLE, Kind.LEAF, Kind.TABLE, Kind.SKIP, Kind.LEAF, Kind.SKIP]


def test_kernel_view_top_levels_and_64k_pud():
    """pgd/p4d entries with bit 1 clear are holes (p?d_bad); with 64K pages a PUD is never a leaf (pud_table() true)."""
    m = arm64.make_mode(4 * K, 48)
    k, _ = m.classify(0, np.array([0, 0x1000 | 1, 0x1000 | 3], np.uint64))
    assert k.tolist() == [Kind.HOLE, Kind.HOLE, Kind.TABLE]
    m64 = arm64.make_mode(64 * K, 48, pa_bits=52)
    assert m64.levels[0].klevel == 2
    k, _ = m64.classify(0, np.array([0, 1 << 42 | 1, 0x10000 | 3, 2], np.uint64))
    assert k.tolist() == [Kind.HOLE, Kind.TABLE, Kind.TABLE, Kind.SKIP]


def test_hierarchical_permissions_fold_into_the_effective_word(tmp_path):
    """APTable[1] makes a writable page read-only, APTable[0] takes EL0 access, PXN/UXNTable add XN; HPD ignores them."""
    for hpd in (False, True):
        m = arm64.make_mode(4 * K, 48, upper=False, hpd=hpd)
        b = PageTableBuilder(m)
        va = 0x0000_0040_0000_0000
        b.map(va, 0x80000, 4 * K, PTE_AF | PTE_USER | attr(0))
        pud_table, idx = b.slot(va, 0)
        b.set_entry(pud_table, idx, b.entry(pud_table, idx) | AP_TABLE_RDONLY | AP_TABLE_NO_EL0 | PXN_TABLE | UXN_TABLE)
        t = translate(b.memory(tmp_path), m, b.root, va + 0x123)
        assert t.pa == 0x80123 and t.page_size == 4 * K
        if hpd:
            assert t.perm == PTE_USER
        else:
            assert t.perm == PTE_RDONLY | PTE_PXN | PTE_UXN
        assert "APTable=ro" in t.steps[0].flags and t.steps[-1].flags.startswith("PAGE EL0+EL1 RW")


@pytest.mark.parametrize("granule,va,ds", [(4 * K, 48, False), (4 * K, 52, True), (16 * K, 47, False), (16 * K, 48, False), (64 * K, 42, False), (64 * K, 48, False)])
def test_builder_blocks_and_pages_translate(tmp_path, granule, va, ds):
    """Every block size and the page size of a mode map where translate() says, in both halves."""
    for upper in (True, False):
        m = arm64.make_mode(granule, va, upper=upper, ds=ds, pa_bits=52 if ds else 48)
        b = PageTableBuilder(m)
        sizes = [m.levels[i].entry_span for i in m.extra["block_levels"]] + [granule]
        base = m.canonical_va(0)
        for k, size in enumerate(sizes):
            if size >= (1 << 36):
                continue  # 512G/64G blocks sit at p4d/pud-with-16K, which Linux never maps (and the builder checks leaves with the kernel's view)
            vaddr = base + (k + 1) * (1 << (va - 3))
            b.map(vaddr, size * (k + 1), size, KERNEL_RW & ~PTE_SHARED if ds else KERNEL_RW)
        mem = b.memory(tmp_path)
        for mp in b.mappings:
            t = translate(mem, m, b.root, mp.va + mp.size - 8)
            assert (t.pa, t.page_size) == (mp.pa + mp.size - 8, mp.size)
        t = translate(mem, m, b.root, base + 8)
        assert not t.ok and "entry 0x0000000000000000: translation fault" in t.fault


def _ptdump(m, b, tmp_path, markers, series="6.12"):
    out = io.StringIO()
    st = Arm64State(markers, out, series=series, nlevels=len(m.levels), page_size=m.extra["granule"])
    drive(st, m, root_runs(b.memory(tmp_path), m, b.root), [(m.canonical_va(0), TOP - 1)])
    return out.getvalue().splitlines()


def test_synthetic_kernel_table_prints_like_the_kernel(tmp_path):
    """A 4K/48-bit table with a block, contiguous pages and holes prints the kernel's columns and hole levels."""
    m = arm64.make_mode(4 * K, 48)
    b = PageTableBuilder(m)
    base = 0xFFFF000000000000
    b.map(base, 0x40000000, 2 * M, KERNEL_RW)
    for i in range(16):
        b.map(base + 2 * M + i * 4 * K, 0x40200000 + i * 4 * K, 4 * K, KERNEL_RO_X | PTE_CONT)
    lines = _ptdump(m, b, tmp_path, [(base, "Linear Mapping start"), (base + G, "Linear Mapping end"), (TOP - 1, None)])
    assert lines == [
        "---[ Linear Mapping start ]---",
        "0xffff000000000000-0xffff000000200000           2M PMD       RW NX SHD AF        BLK UXN    MEM/NORMAL",
        "0xffff000000200000-0xffff000000210000          64K PTE       ro x  SHD AF    CON     UXN    MEM/NORMAL",
        "0xffff000000210000-0xffff000000400000        1984K PTE",
        "0xffff000000400000-0xffff000040000000        1020M PMD",
        "---[ Linear Mapping end ]---",
        "0xffff000040000000-0xffff008000000000         511G PUD",
        "0xffff008000000000-0x0000000000000000      261632G PGD",
    ]


@pytest.mark.parametrize("series,name", [("6.1", "PGD"), ("6.12", "PMD")])
def test_two_level_leaf_names_per_series(tmp_path, series, name):
    """With 2 levels (64K, 42-bit) v6.1 names a 512M block "PGD" (folded pmd), v6.12 keeps "PMD"; holes are PGD in both."""
    m = arm64.make_mode(64 * K, 42, kernel=series)
    b = PageTableBuilder(m)
    base = m.canonical_va(0)
    b.map(base, 512 * M, 512 * M, KERNEL_RW)
    lines = _ptdump(m, b, tmp_path, [(base, "start"), (TOP - 1, None)], series=series)
    assert lines[1].split()[2] == name and lines[1].endswith("BLK UXN    MEM/NORMAL")
    assert lines[2].endswith(" PGD")


# -- AttrIndx through MAIR_EL1 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "attr_byte,text",
    [
        (0x00, "Device-nGnRnE"), (0x04, "Device-nGnRE"), (0x08, "Device-nGRE"), (0x0C, "Device-GRE"),
        (0x05, "Device-nGnRE XS=0 (FEAT_XS)"), (0x02, "reserved Device encoding 0x02"),
        (0xFF, "Normal WB-RWA"), (0x44, "Normal NC"), (0xBB, "Normal WT-RWA"), (0xEE, "Normal WB-RA"),
        (0x4F, "Normal inner WB-RWA outer NC"), (0x1C, "Normal inner WB-noalloc outer WT-transient-WA"),
        (0xF0, "Normal-Tagged WB-RWA (FEAT_MTE2)"), (0x40, "Normal NC XS=0 (FEAT_XS)"),
        (0x30, "reserved Normal encoding 0x30"),
    ],
)
def test_mair_attribute_encodings(attr_byte, text):
    """MAIR_EL1 Attr<n> (D19): Device nGnRnE..GRE, Normal inner/outer cacheability and allocation hints, Tagged, reserved."""
    assert arm64.mair_attr_text(attr_byte << 24, 3) == text


def test_linux_mair_layout_follows_the_kernel_version():
    """MT_* indices: v5.13+ NORMAL 0 ... DEVICE_nGnRE 4; v5.10-5.12 with NORMAL_WT 3; before v5.10 the device types first."""
    names, mair, label = arm64.linux_mair("6.1.0-27-arm64")
    assert (names[0], names[3], mair, label) == ("NORMAL", "DEVICE_nGnRnE", 0x40044FFFF, "Linux v5.13+ MAIR layout")
    assert arm64.linux_mair(None) == arm64.linux_mair("6.12.9")
    assert arm64.linux_mair("5.10.0")[0][3] == "NORMAL_WT" and arm64.linux_mair("5.12")[0][5] == "DEVICE_nGnRE"
    old = arm64.linux_mair("4.19.0-21-arm64")
    assert old[0][0] == "DEVICE_nGnRnE" and old[0][4] == "NORMAL" and old[2] == "Linux before v5.10 MAIR layout"
    assert (old[1] >> 32) & 0xFF == 0xFF and old[1] & 0xFF == 0x00


@pytest.mark.parametrize("case", ["6.1-nokaslr-48bit", "6.12-nokaslr-52bit-lpa2"])
def test_captured_mair_is_the_linux_layout_of_its_version(case):
    """The MAIR_EL1 QEMU read from the 6.1 and 6.12 guests is the one linux_mair() builds for their OSRELEASE."""
    from conftest import FIXTURES

    from pagewalk import open_image

    mem = open_image(str(FIXTURES / "arm64" / case / "core.elf"))
    assert arm64.linux_mair(mem.cpu.vmcoreinfo["OSRELEASE"])[1] == mem.cpu.regs["mair_el1"]


def test_translate_decodes_attrindx_through_mair_el1_or_linux_layout():
    """With MAIR_EL1 the trace gives its memory type and source; without, Linux's MT_* of the image's version, saying so."""
    from conftest import FIXTURES

    from pagewalk import open_image
    from pagewalk.kernel import arm64 as karm64

    core = str(FIXTURES / "arm64" / "6.1-nokaslr-48bit" / "core.elf")
    va = 0xFFFF_8000_0A00_0010  # a PAGE_KERNEL (MT_NORMAL) page
    mem = open_image(core)
    t = karm64.resolve(mem, {}, {}, {}, {})  # VMCOREINFO only: no MAIR_EL1
    leaf = translate(mem, t.mode, t.root("kernel"), va).steps[-1].flags
    assert "AttrIndx=0(MT_NORMAL: Normal WB-RWA; Linux v5.13+ MAIR layout)" in leaf
    regs = dict(mem.cpu.regs, mair_el1=0x000000040044FF44)  # AttrIndx 0 made Normal-NC
    t = karm64.resolve(mem, regs, {}, {}, {})
    leaf = translate(mem, t.mode, t.root("kernel"), va).steps[-1].flags
    assert "AttrIndx=0(Normal NC; MAIR_EL1 from --reg mair_el1)" in leaf
    t = karm64.resolve(mem, dict(mem.cpu.regs), {}, {}, {})
    leaf = translate(mem, t.mode, t.root("kernel"), va).steps[-1].flags
    assert "AttrIndx=0(Normal WB-RWA; MAIR_EL1 from the image's registers)" in leaf


@pytest.mark.parametrize("page_size,t1sz", [("1", "16"), ("4096", "60"), ("65536", "2")])
def test_corrupt_vmcoreinfo_geometry_is_a_root_error(page_size, t1sz):
    """A VMCOREINFO PAGESIZE or TCR_EL1_T1SZ no granule allows is a RootError naming them, not a traceback."""
    from types import SimpleNamespace

    from pagewalk.errors import RootError
    from pagewalk.kernel import arm64 as karm64

    vi = {"OSRELEASE": "6.12.0", "PAGESIZE": page_size, "NUMBER(TCR_EL1_T1SZ)": t1sz}
    mem = SimpleNamespace(cpu=SimpleNamespace(vmcoreinfo=vi, regs={}))
    with pytest.raises(RootError, match=f"PAGESIZE={page_size} NUMBER\\(TCR_EL1_T1SZ\\)={t1sz}"):
        karm64.resolve(mem, {}, {}, {}, {})
