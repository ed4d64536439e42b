"""32-bit ARM paging modes (short descriptors, LPAE): the contract tests and the ptdump port.

Geometry per TTBCR, register decoding, round trips through the PageTableBuilder, translate
against the walk and translate_many, leaf detection at every level (sections, supersections,
large and small pages; LPAE blocks and pages), the MMU's faults, Linux's walker view (pairs of
first-level entries, software PTE tables), and the kernel_page_tables text: drive() over the
compressed runs against a literal port of dump.c's walk_pgd()/walk_pmd()/walk_pte(), which feeds
ArmState one note_page() per entry, on random tables.
"""

from __future__ import annotations

import io

import builders_arm  # noqa: F401  (registers the arm entry formats)
import numpy as np
import pytest
from builders import PageTableBuilder
from builders_arm import KB4, LD_KERNEL, MB1, MB2, SD_AP_RW, LinuxShortTables
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagewalk.arch import arm
from pagewalk.errors import RootError, UsageError
from pagewalk.memory.raw import RawMemory
from pagewalk.mode import HwKind, Kind
from pagewalk.ptdump.arm import PTE_BITS_2L, SECTION_BITS_3L, ArmState, Layout, prot_text
from pagewalk.ptdump.core import drive
from pagewalk.runs import root_runs
from pagewalk.target import resolve
from pagewalk.translate import translate, translate_many

GB1 = 1 << 30
SHORT_HW = arm.short_mode(0, linux=False)
LPAE_HW = arm.lpae_mode(0, linux=False)
LPAE_T1 = arm.lpae_mode(2, upper=True, linux=False)


def _one(f, level: int, entry: int) -> tuple[int, int]:
    kind, out = f(level, np.array([entry], np.uint64))
    return int(kind[0]), int(out[0])


# -- geometry and registers --------------------------------------------------------------------------


def test_geometry_per_ttbcr():
    """Short: 4096 >> N first-level words and 256-word second level; LPAE: 4-entry first level, T1SZ=2 starts at the second."""
    assert [(lv.name, lv.shift, lv.entries) for lv in arm.SHORT.levels] == [("pgd", 20, 4096), ("pte", 12, 256)]
    assert (arm.SHORT.entry_bytes, arm.SHORT.va_bits, arm.SHORT.root_align) == (4, 32, 16384)
    n2 = arm.short_mode(2)
    assert (n2.levels[0].entries, n2.va_bits, n2.root_align) == (1024, 30, 4096)
    up = arm.short_mode(2, upper=True)
    assert (up.levels[0].entries, up.is_canonical(0xC0000000), up.root_align) == (4096, True, 16384)
    assert [(lv.name, lv.shift, lv.entries) for lv in arm.LPAE.levels] == [("pgd", 30, 4), ("pmd", 21, 512), ("pte", 12, 512)]
    assert (arm.LPAE.entry_bytes, arm.LPAE.root_align) == (8, 32)
    assert [(lv.name, lv.entries) for lv in LPAE_T1.levels] == [("pmd", 512), ("pte", 512)]
    assert (LPAE_T1.va_base, LPAE_T1.is_canonical(0xBFFFFFFF), LPAE_T1.is_canonical(0xC0000000)) == (0xC0000000, False, True)
    assert LPAE_T1.table_offset(0xC0200000) == 0x200000
    t1 = arm.lpae_mode(1, upper=True)
    assert (t1.va_base, t1.levels[0].entries) == (0x80000000, 2)
    # note_page levels (dump.c numbers them one higher: pud 3, pmd 4, pte 5)
    assert [lv.klevel for lv in arm.LPAE.levels] == [2, 3, 4] and [lv.klevel for lv in arm.SHORT.levels] == [3, 4]


def test_register_decoding_of_the_oracle_values():
    """TTBR table addresses drop the walk attributes (short) or the ASID (LPAE); TTBCR.EAE selects LPAE."""
    assert arm.ttbr_short_base(0x4020406A) == 0x40204000
    assert arm.ttbr_short_base(0x4020406A, n=2) == 0x40204000 and arm.ttbr_short_base(0x40201F6A, n=2) == 0x40201000
    assert arm.ttbr_lpae_base(0x28000042539480, 0) == 0x42539480
    assert arm.ttbr_lpae_base(0x40207000, 2) == 0x40207000
    assert arm.is_lpae(0xB5023500) and not arm.is_lpae(0)
    with pytest.raises(ValueError, match="not 0..7"):
        arm.short_mode(8)


# -- the MMU's view -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "level", "entry", "kind", "out"),
    [
        (SHORT_HW, 0, 0x40100C02, HwKind.LEAF, 0x40100000),  # section
        (SHORT_HW, 0, 0x40100C03, HwKind.LEAF, 0x40100000),  # section with PXN (PXN extension)
        (SHORT_HW, 0, 0x42345C01, HwKind.TABLE, 0x42345C00),  # page table, 1 KiB aligned
        (SHORT_HW, 0, 0x4F1C0402 | arm.SD_SECT_SUPER | (0xA << 5), HwKind.LEAF, 0xA_1_4F000000),  # supersection, PA[39:32]
        (SHORT_HW, 1, 0x40005032, HwKind.LEAF, 0x40005000),  # small page
        (SHORT_HW, 1, 0x40005033, HwKind.LEAF, 0x40005000),  # small page, XN
        (SHORT_HW, 1, 0x4001C031, HwKind.LEAF, 0x40010000),  # large page
        (SHORT_HW, 0, 0x40100000, HwKind.FAULT, 1),
        (SHORT_HW, 1, 0x40005000, HwKind.FAULT, 2),
        (arm.short_mode(0, pxn=False, linux=False), 0, 0x40100C03, HwKind.FAULT, 3),
        (arm.short_mode(0, afe=True, linux=False), 0, 0x40100802, HwKind.FAULT, 4),  # AP[0] = AF clear
        (arm.short_mode(0, afe=True, linux=False), 1, 0x40005022, HwKind.FAULT, 4),
        (LPAE_HW, 0, 0x40000401, HwKind.LEAF, 0x40000000),  # 1 GiB block at the first level
        (LPAE_HW, 1, 0x40200401, HwKind.LEAF, 0x40200000),  # 2 MiB block
        (LPAE_HW, 1, 0x0080000040207003, HwKind.TABLE, 0x40207000),
        (LPAE_HW, 2, 0x0400005EFF47DF, HwKind.LEAF, 0x5EFF4000),
        (LPAE_HW, 2, 0x5EFF4401, HwKind.FAULT, 6),  # 0b01 at the third level is reserved
        (LPAE_HW, 2, 0x5EFF4003, HwKind.FAULT, 4),  # AF clear
        (LPAE_HW, 1, 0x40200400, HwKind.FAULT, 5),  # invalid
        (LPAE_HW, 2, 0x100_5EFF_4403, HwKind.FAULT, 7),  # OA bits 47:40 set
    ],
)
def test_hw_classify(mode, level, entry, kind, out):
    """Descriptor types, output addresses and faults as B3.5.1 / B3.6.1 define them."""
    assert _one(mode.hw_classify, level, entry) == (kind, out)
    if kind == HwKind.FAULT:
        assert mode.fault_reason(out) != "fault"


def test_linux_walker_reads_first_level_entries_in_pairs():
    """walk_pmd(): pmd[0] decides; after a page table the odd entry is the Linux table at +1024, else a section or nothing."""
    tab, sect = 0x41CAC801, 0x40100C0E
    l1 = np.array([tab, tab + 0x400, sect, 0, 0, sect | MB1, 0, 0x999, sect, 0], np.uint64)
    kind, out = arm.SHORT.classify(0, l1)
    assert kind.tolist() == [Kind.TABLE, Kind.TABLE, Kind.LEAF, Kind.SKIP, Kind.HOLE, Kind.LEAF, Kind.HOLE, Kind.SKIP,
                             Kind.LEAF, Kind.SKIP]
    assert out[:2].tolist() == [0x41CAC000, 0x41CAC400]  # the Linux tables, not the hardware ones
    # the hardware walks the hardware table of each entry
    assert _one(arm.SHORT.hw_classify, 0, tab + 0x400) == (HwKind.TABLE, 0x41CACC00)
    # every Linux PTE slot is an event
    assert arm.SHORT.classify(1, np.array([0, 0x5EFF467E], np.uint64))[0].tolist() == [Kind.LEAF, Kind.LEAF]


def test_linux_walker_view_of_lpae():
    """pgd: zero is a hole, anything else a table; pmd: blocks and not-present entries are noted, tables walked."""
    k, o = arm.LPAE.classify(0, np.array([0, 0x40207003, 0x40207000], np.uint64))
    assert k.tolist() == [Kind.HOLE, Kind.TABLE, Kind.TABLE] and o.tolist()[1] == 0x40207000
    k, o = arm.LPAE.classify(1, np.array([0, 0x40400401, 0x5EFF6003, 0x800000, 0x5EFF6002], np.uint64))
    assert k.tolist() == [Kind.HOLE, Kind.LEAF, Kind.TABLE, Kind.LEAF, Kind.LEAF]


def test_leaf_pa_takes_low_bits_from_the_va():
    """Supersections map 16 MiB, large pages 64 KiB (both repeated 16 times); the VA supplies the offset."""
    sup = 0x4F000402 | arm.SD_SECT_SUPER
    assert arm.leaf_pa(SHORT_HW, 0, sup, 0xC0ABCDEF) == 0x4FABCDEF
    assert arm.leaf_pa(SHORT_HW, 1, 0x40010031, 0xC000F123) == 0x4001F123
    vas = np.array([0xC0ABCDEF, 0xC1000010], np.uint64)
    assert arm.leaf_pa(SHORT_HW, 0, np.array([sup, 0x40100C02], np.uint64), vas).tolist() == [0x4FABCDEF, 0x40100010]


# -- round trips through the builder --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "va", "size"),
    [(SHORT_HW, 0xC0300000, MB1), (SHORT_HW, 0xFFFF0000, KB4), (arm.SHORT, 0xC0000000, MB1), (arm.SHORT, 0xBF001000, KB4),
     (LPAE_HW, 0x40000000, GB1), (LPAE_HW, 0xC0400000, MB2), (LPAE_HW, 0xFFFF0000, KB4),
     (LPAE_T1, 0xC0400000, MB2), (LPAE_T1, 0xFFFF1000, KB4), (arm.lpae_mode(2), 0x3FE00000, MB2)],
    ids=lambda v: v.name if hasattr(v, "name") else hex(v),
)
def test_builder_round_trip(tmp_path, mode, va, size):
    """A leaf of every size the mode has translates to the PA it was built with, level by level."""
    b = PageTableBuilder(mode, base=0x100000)
    pa = 0x80000000 if size == GB1 else 0x4F000000 + size
    b.map(va, pa, size, SD_AP_RW if mode.extra["format"] == "short" else LD_KERNEL)
    with b.memory(tmp_path) as mem:
        t = translate(mem, mode, b.root, va + 0x10)
        assert (t.pa, t.page_size) == (pa + 0x10, size)
        assert [s.kind for s in t.steps][-1] == "leaf"
        got, _, ok = translate_many(mem, mode, b.root, np.array([va + 0x10, va + size - 4], np.uint64))
        assert ok.all() and got.tolist() == [pa + 0x10, pa + size - 4]


@st.composite
def built_tables(draw, mode):
    """Random leaves of every size and probe VAs (inside, at the end of and beside each leaf)."""
    b = PageTableBuilder(mode, base=0x100000)
    short = mode.extra["format"] == "short"
    spans = [lv.entry_span for lv in mode.levels]
    probes = []
    for _ in range(draw(st.integers(1, 8))):
        size = draw(st.sampled_from(spans))
        if size > MB2 and not short and mode.extra["first_level"] == 1:
            size = draw(st.sampled_from(spans[1:]))
        n = (1 << mode.va_bits) // size
        va = mode.canonical_va(draw(st.integers(0, n - 1)) * size)
        pa = draw(st.integers(0x400, 0xFFF)) * max(size, MB1) if size < GB1 else draw(st.integers(1, 3)) * GB1
        flags = draw(st.sampled_from([SD_AP_RW, SD_AP_RW | arm.SD_SECT_XN]) if short else st.sampled_from([LD_KERNEL, LD_KERNEL | arm.LD_XN]))
        if short and size == KB4:
            flags = draw(st.sampled_from([arm.SD_L2_AP0, arm.SD_L2_AP0 | arm.SD_SMALL_XN]))
        try:
            b.map(va, pa, size, flags)
        except (ValueError, KeyError):
            continue
        probes += [va + draw(st.integers(0, size // 4 - 1)) * 4, va + size - 4]
        if mode.is_canonical(va + size):
            probes.append(va + size)
    return b, probes


@pytest.mark.parametrize("mode", [SHORT_HW, LPAE_HW, LPAE_T1, arm.short_mode(1, linux=False)], ids=lambda m: m.name)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_translate_agrees_with_the_walk(tmp_path, mode, data):
    """For random tables, translate(), translate_many() and the run walk agree on every mapping and hole."""
    b, probes = data.draw(built_tables(mode))
    with b.memory(tmp_path) as mem:
        runs = root_runs(mem, mode, b.root)
        starts = [mode.canonical_va(int(s)) for s in runs.start]
        vals = runs.val.tolist()
        expect = {}
        for va in probes:
            hit = [m for m in b.mappings if m.va <= va < m.va + m.size]
            expect[va] = (hit[0].pa + va - hit[0].va) if hit else None
            t = translate(mem, mode, b.root, va)
            assert (t.pa if t.ok else None) == expect[va], hex(va)
            k = max(i for i, s in enumerate(starts) if s <= va)
            if hit:  # the run holding va starts with this leaf's entry (same ptdump key at least)
                assert vals[k] & mode.ptdump_key_mask == hit[0].entry & mode.ptdump_key_mask
        pa, _, ok = translate_many(mem, mode, b.root, np.array(probes, np.uint64))
        assert [int(p) if o else None for p, o in zip(pa, ok)] == [expect[v] for v in probes]


# -- the kernel_page_tables text --------------------------------------------------------------------------


def reference_dump(mem: RawMemory, root: int, lpae: bool, layout: Layout, check_wx: bool = False) -> ArmState:
    """dump.c's walk_pgd()/walk_pmd()/walk_pte() entry by entry, feeding ArmState one note_page() each."""
    out = io.StringIO()
    st_ = ArmState(layout, None if check_wx else out, check_wx=check_wx)
    st_.text = out

    def note(addr: int, level: int, val: int, domain: int = 0) -> None:
        st_.note(addr, level - 1, val, val, domain << arm.PERM_DOMAIN_SHIFT)

    def u(pa: int, n: int) -> int:
        return int.from_bytes(mem.read(pa, n), "little")

    if lpae:
        for i in range(4):
            pud = u(root + 8 * i, 8)
            if not pud:
                note(i << 30, 3, 0)
                continue
            pmdt = pud & arm.PHYS_MASK_3L & ~0xFFF
            for j in range(512):
                addr = (i << 30) + j * MB2
                pmd = u(pmdt + 8 * j, 8)
                if pmd == 0 or pmd & 3 == 1 or not pmd & 1:
                    note(addr, 4, pmd)
                    continue
                ptet = pmd & arm.PHYS_MASK_3L & ~0xFFF
                for k in range(512):
                    note(addr + k * KB4, 5, u(ptet + 8 * k, 8))
    else:
        for i in range(2048):
            addr = i * MB2
            p0, p1 = u(root + 8 * i, 4), u(root + 8 * i + 4, 4)
            if p0 == 0 or p0 & 2:
                note(addr, 4, p0, (p0 >> 5) & 15)
            else:
                page = p0 & ~0xFFF
                for k in range(512):
                    note(addr + k * KB4, 5, u(page + 4 * k, 4), (p0 >> 5) & 15)
            if p1 & 2:
                note(addr + MB1, 4, p1, (p1 >> 5) & 15)
    st_.flush()
    return st_


def fast_dump(mem, root: int, mode, layout: Layout, check_wx: bool = False) -> ArmState:
    out = io.StringIO()
    st_ = ArmState(layout, None if check_wx else out, check_wx=check_wx)
    st_.text = out
    drive(st_, mode, root_runs(mem, mode, root), layout.ranges())
    return st_


SECT_FLAGS_2L = [arm.SD_SECT_AP0 | arm.SD_SECT_XN | arm.SD_SECT_S, arm.SD_SECT_AP0 | arm.SD_SECT_AP2 | arm.SD_SECT_S,
                 arm.SD_SECT_AP0, arm.SD_SECT_AP1, arm.SD_SECT_AP1 | arm.SD_SECT_AP0 | arm.SD_SECT_XN]
PTE_FLAGS_2L = [0, 0x7F | arm.L_PTE_XN_2L, 0x7F | arm.L_PTE_RDONLY_2L, 0x1F | arm.L_PTE_XN_2L | arm.L_PTE_SHARED_2L,
                0x13 | arm.L_PTE_USER_2L, 0x1 | (0x4 << 2), 0x2]  # the last: present clear, young set


@st.composite
def linux_short_tables(draw):
    """Linux 2-level tables: random sections (any domain), PTE pages with random Linux PTEs, odd-only sections."""
    t = LinuxShortTables()
    regions = draw(st.lists(st.integers(0x5F0, 0x7FF), min_size=1, max_size=8, unique=True))  # 2 MiB indexes near the top
    for i in regions:
        what = draw(st.sampled_from(["sections", "ptes", "odd", "even"]))
        dom = draw(st.sampled_from([0, 0, 1, 2, 3, 7]))
        va = i * MB2
        if what in ("sections", "even"):
            t.section(va, 0x40000000 + va % (1 << 28), draw(st.sampled_from(SECT_FLAGS_2L)), dom)
        if what in ("sections", "odd"):
            t.section(va + MB1, 0x40100000 + va % (1 << 28), draw(st.sampled_from(SECT_FLAGS_2L)),
                      draw(st.sampled_from([dom, 1])))
        if what == "ptes":
            for k in sorted(draw(st.lists(st.integers(0, 511), max_size=12, unique=True))):
                t.pte(va + k * KB4, 0x50000000 + k * KB4, draw(st.sampled_from(PTE_FLAGS_2L)), None, dom)
    return t


@st.composite
def lpae_tables(draw, tmp_path):
    b = PageTableBuilder(LPAE_HW, base=0x100000)
    for _ in range(draw(st.integers(1, 12))):
        size = draw(st.sampled_from([MB2, KB4, KB4, KB4]))
        hi = draw(st.sampled_from([2, 3, 3]))
        va = (hi << 30) + draw(st.integers(0, (GB1 // size) - 1)) * size
        flags = draw(st.sampled_from([LD_KERNEL | arm.LD_XN, LD_KERNEL | arm.L_PTE_RDONLY_3L | arm.LD_AP2,
                                      LD_KERNEL | arm.LD_AP1, LD_KERNEL, (4 << 2) | arm.LD_AF | arm.LD_XN]))
        try:
            b.map(va, 0x50000000 + draw(st.integers(0, 255)) * MB2, size, flags)
        except (ValueError, KeyError):
            continue
    if draw(st.booleans()):  # a not-present pmd with bits set: the kernel notes it at level 4
        b.set_entry(b.root, 1, b.alloc_table() | 3)
        pmdt = int(b.entry(b.root, 1)) & ~0xFFF
        b.set_entry(pmdt, 7, arm.LD_XN | (3 << 8))
    return b


def test_dump_text_of_sections_ptes_and_domains(tmp_path):
    """Sections print as PGD with their domain and section_bits[]; PTE pages as PTE with the pmd's domain and pte_bits[]."""
    t = LinuxShortTables()
    t.section(0xC0000000, 0x40000000, arm.SD_SECT_AP0 | arm.SD_SECT_XN | arm.SD_SECT_S)
    t.section(0xC0100000, 0x40100000, arm.SD_SECT_AP0 | arm.SD_SECT_XN | arm.SD_SECT_S)
    t.pte(0xFFFF0000, 0x5EFF4000, 0x5F | arm.L_PTE_RDONLY_2L | arm.L_PTE_USER_2L | arm.L_PTE_SHARED_2L, domain=3)
    layout = Layout(lpae=False, high_memory=0xC0200000)
    with t.memory(tmp_path) as mem:
        text = fast_dump(mem, t.root, arm.SHORT, layout).text.getvalue()
    assert text.splitlines() == [
        "---[ Modules ]---",
        "---[ Kernel Mapping ]---",
        "0xc0000000-0xc0200000           2M PGD KERNEL      RW NX SHD",
        "---[ vmalloc() Area ]---",
        "---[ FDT Area ]---",
        "---[ Fixmap Area ]---",
        "---[ Vectors ]---",
        "0xffff0000-0xffff1000           4K PTE VECTORS USR ro x  SHD MEM/CACHED/WBWA",
        "---[ Vectors End ]---",
    ]
    assert prot_text(0, PTE_BITS_2L) == "     RW x      SO/UNCACHED"
    assert prot_text(arm.LD_AP1, SECTION_BITS_3L) == " USR RW x     "


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(t=linux_short_tables(), hm=st.sampled_from([0xE0000000, 0xEF000000, 0xD0123000]))
def test_short_dump_equals_the_per_entry_walk(tmp_path, t, hm):
    """On random Linux 2-level tables, drive() over the runs prints what dump.c's own walk prints, and counts the same W+X pages."""
    layout = Layout(lpae=False, high_memory=hm)
    with t.memory(tmp_path) as mem:
        ref = reference_dump(mem, t.root, False, layout)
        fast = fast_dump(mem, t.root, arm.SHORT, layout)
        assert fast.text.getvalue() == ref.text.getvalue()
        wref = reference_dump(mem, t.root, False, layout, check_wx=True)
        wfast = fast_dump(mem, t.root, arm.SHORT, layout, check_wx=True)
        assert (wfast.wx_pages, wfast.wx_ranges) == (wref.wx_pages, wref.wx_ranges)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_lpae_dump_equals_the_per_entry_walk(tmp_path, data):
    """On random LPAE tables, drive() over the runs prints what dump.c's own walk prints, and counts the same W+X pages."""
    b = data.draw(lpae_tables(tmp_path))
    layout = Layout(lpae=True, high_memory=0xE0000000)
    with b.memory(tmp_path) as mem:
        ref = reference_dump(mem, b.root, True, layout)
        fast = fast_dump(mem, b.root, arm.LPAE, layout)
        assert fast.text.getvalue() == ref.text.getvalue()
        wref = reference_dump(mem, b.root, True, layout, check_wx=True)
        wfast = fast_dump(mem, b.root, arm.LPAE, layout, check_wx=True)
        assert (wfast.wx_pages, wfast.wx_ranges) == (wref.wx_pages, wref.wx_ranges)


# -- resolve: registers, roots, errors ------------------------------------------------------------------


def test_resolve_without_registers_is_a_clear_error(tmp_path):
    """An arm image with no TTBRs gets a RootError naming the registers to pass."""
    t = LinuxShortTables()
    with t.memory(tmp_path) as mem:
        with pytest.raises(RootError, match="ttbr0"):
            resolve(mem, "arm", {})
        with pytest.raises(UsageError, match="unknown for arm"):
            resolve(mem, "armhf", {"ttbr0": t.root}, defines={"NOPE": 1})


def test_resolve_short_roots_and_views(tmp_path):
    """TTBCR.N = 0: TTBR1 is taken as swapper_pg_dir, TTBR0 is the current table; hardware twins of both exist for extract."""
    t = LinuxShortTables()
    t.section(0xC0000000, 0x40000000, SD_AP_RW)
    with t.memory(tmp_path) as mem:
        tg = resolve(mem, "armv7l", {"ttbr0": t.root | 0x6A, "ttbr1": t.root | 0x6A, "ttbcr": 0})
        assert tg.roots["kernel"] == tg.roots["current_kernel"] == tg.roots["kernel_hw"] == t.root
        assert tg.mode_for("kernel").extra["linux"] and not tg.mode_for("kernel_hw").extra["linux"]
        assert any("TTBR1" in n for n in tg.notes)
        assert (tg.layout.high_memory, tg.layout.vmalloc_start) == (0xC0100000, 0xC0800000)  # + 8 MiB, rounded down


@pytest.mark.parametrize("mode", [SHORT_HW, LPAE_HW], ids=lambda m: m.name)
def test_generic_walker_finds_every_leaf_level(tmp_path, mode):
    """walk_page_range_novma() reports each built leaf once, at its level's callback (1 GiB at pud, sections/2 MiB at pmd, pages at pte)."""
    from pagewalk.walk import WalkOps, walk_page_range_novma

    b = PageTableBuilder(mode, base=0x100000)
    short = mode.extra["format"] == "short"
    flags = SD_AP_RW if short else LD_KERNEL
    b.map(0xC0000000, 0x40000000, mode.levels[-2].entry_span, flags)
    b.map(0xFFFF0000, 0x5EFF4000, KB4, flags)
    if not short:
        b.map(0x40000000, 0x80000000, GB1, flags)
    got: list[tuple[str, int, int, int]] = []

    def leaf(name):
        return lambda e, va, nxt, w: got.append((name, va, nxt - va, e)) if w.kind == Kind.LEAF and e else None

    ops = WalkOps(pud_entry=leaf("pud"), pmd_entry=leaf("pmd"), pte_entry=leaf("pte"))
    with b.memory(tmp_path) as mem:
        assert walk_page_range_novma(mem, mode, b.root, 0, 1 << 32, ops) == 0
    assert sorted((va, size, e) for _, va, size, e in got) == sorted((m.va, m.size, m.entry) for m in b.mappings)
    assert {(name, size) for name, _, size, _ in got} == {("pmd", mode.levels[-2].entry_span), ("pte", KB4)} | (
        set() if short else {("pud", GB1)})


def test_a_table_missing_from_the_image_is_printed_as_such(tmp_path):
    """A first-level entry whose PTE page the image lacks gives one line saying so, not a traceback."""
    t = LinuxShortTables()
    t.set_pmd(0xC00, 0x7FFFF801)  # pmd[0] of 0xc0000000: a page table far outside the image
    t.set_pmd(0xC01, 0x7FFFFC01)
    t.section(0xC0200000, 0x40200000, SD_AP_RW)
    with t.memory(tmp_path) as mem:
        text = fast_dump(mem, t.root, arm.SHORT, Layout(lpae=False, high_memory=0xC0300000)).text.getvalue()
    lines = text.splitlines()
    assert lines[2:5] == [
        "0xc0000000-0xc0100000           1M PGD [table of entry 0x7ffff801 not in image]",
        "0xc0100000-0xc0200000           1M PGD [table of entry 0x7ffffc01 not in image]",
        # pmd[1] of the section's pair is empty: dump.c makes no event there, the section's run goes on
        "0xc0200000-0xc0400000           2M PGD KERNEL      RW x     ",
    ]


@pytest.mark.parametrize("page_offset", [0xC0000000, 0x80000000, 0xB0000000])
def test_page_offset_is_the_split_under_which_swapper_maps_itself(tmp_path, page_offset):
    """PAGE_OFFSET is found as the VMSPLIT under which swapper_pg_dir's VA (PA mod 16 MiB above it) maps onto its PA."""
    t = LinuxShortTables(base=0x40004000)  # swapper_pg_dir at PHYS_OFFSET + 0x4000, as head.S puts it
    t.section(page_offset, 0x40000000, SD_AP_RW)
    with t.memory(tmp_path) as mem:
        tg = resolve(mem, "arm", {"ttbr0": t.root, "ttbr1": t.root, "ttbcr": 0})
    assert tg.layout.page_offset == page_offset
    assert tg.layout.markers()[:2] == [(page_offset - (16 << 20), "Modules"), (page_offset, "Kernel Mapping")]
    assert not any("PAGE_OFFSET" in n for n in tg.notes)
