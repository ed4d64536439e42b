"""i386 paging modes (PAE 3-level, 2-level with 4 MiB PSE pages and PSE-36): the contract tests.

Geometry and level folding, round trips through the PageTableBuilder, translate against the
walk, leaf detection at every level, the MMU's reserved bits, and the 32-bit ptdump: the
per-entry mm/ptdump.c reference (test_ptdump_properties.reference_ptdump, on walk.py) against
format_fast and drive() over random tables, with the kernel's PAE permission fold.
"""

from __future__ import annotations

import io
import tempfile

import numpy as np
import pytest
from builders import X86_A, X86_D, X86_G, X86_NX, X86_P, X86_PCD, X86_PSE, X86_PWT, X86_RW, X86_US, PageTableBuilder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ptdump_properties import drive_ptdump, reference_ptdump

from pagewalk.arch import x86
from pagewalk.arch.x86 import I386_2LEVEL, I386_PAE, i386_mode_for, make_mode, ptdump_view
from pagewalk.mode import HwKind, Kind
from pagewalk.ptdump.x86 import Layout32, X86State, format_fast
from pagewalk.runs import root_runs
from pagewalk.translate import translate, translate_many
from pagewalk.walk import kernel_depths, real_depth

KB4, MB2, MB4 = 4096, 2 << 20, 4 << 20
TOP32 = 1 << 32
NOPSE = make_mode("2level", pse=False)
MODES = {"pae": I386_PAE, "2level": I386_2LEVEL}
BIG = {"pae": MB2, "2level": MB4}


def linux_pae(**kw) -> PageTableBuilder:
    """A PAE builder whose four PDPTEs are preallocated as Linux does: PA | _PAGE_PRESENT."""
    b = PageTableBuilder(I386_PAE, **kw)
    for i in range(4):
        b.set_entry(b.root, i, b.alloc_table() | X86_P)
    return b


def builder(name: str, linux: bool = True) -> PageTableBuilder:
    """A 2-level builder, or a PAE one with Linux's PDPTEs (else _PAGE_TABLE ones, RW and USR set)."""
    if name == "pae":
        return linux_pae() if linux else PageTableBuilder(I386_PAE)
    return PageTableBuilder(I386_2LEVEL)


def _one(mode, level: int, entry: int, hw: bool = False):
    f = mode.hw_classify if hw else mode.classify
    kind, out = f(level, np.array([entry], np.uint64))
    return int(kind[0]), int(out[0])


# -- geometry ------------------------------------------------------------------------------------


def test_geometry_and_folding():
    """PAE: 4x8-byte PDPT + 512x8-byte PMD/PTE; 2-level: 1024x4-byte PD/PT; note_page levels and hole depths as the kernel folds them."""
    pae, two = I386_PAE, I386_2LEVEL
    assert [(lv.name, lv.shift, lv.entries) for lv in pae.levels] == [("pgd", 30, 4), ("pmd", 21, 512), ("pte", 12, 512)]
    assert [(lv.klevel, lv.hole_depth) for lv in pae.levels] == [(2, 0), (3, 3), (4, 4)]
    assert (pae.entry_bytes, pae.va_bits, pae.canonical, pae.root_align) == (8, 32, False, 32)
    assert [(lv.name, lv.shift, lv.entries) for lv in two.levels] == [("pgd", 22, 1024), ("pte", 12, 1024)]
    assert [(lv.klevel, lv.hole_depth) for lv in two.levels] == [(3, 0), (4, 4)]
    assert (two.entry_bytes, two.va_bits, two.canonical, two.root_align) == (4, 32, False, 4096)
    assert two.dtype == np.dtype("<u4") and pae.dtype == np.dtype("<u8")
    # walk.py's real_depth(): PAE folds p4d and pud, 2-level folds pmd too
    assert [real_depth(pae, d) for d in range(5)] == [0, 0, 0, 3, 4]
    assert [real_depth(two, d) for d in range(5)] == [0, 0, 0, 0, 4]
    assert [(d.hw, d.iterates, d.checks) for d in kernel_depths(two)] == [(0, True, False)] + [(0, False, False)] * 2 + [(0, False, True), (1, True, True)]
    assert two.ptdump_key_mask == 0xFFF and pae.ptdump_key_mask == x86.PTE_FLAGS_MASK


def test_mode_from_cr4():
    """CR4.PAE selects PAE; without it CR4.PSE decides whether 2-level PDEs can be 4 MiB pages."""
    assert i386_mode_for(0x350EF0) is I386_PAE  # the PAE captures' CR4
    assert i386_mode_for(0x350ED0) is I386_2LEVEL  # the 2-level capture's CR4 (PSE, no PAE)
    assert i386_mode_for(0).name == "i386-2level-nopse"
    assert i386_mode_for(None, pae=True) is I386_PAE
    assert x86.i386_root_from_cr3(0x21F6767, pae=True) == 0x21F6760
    assert x86.i386_root_from_cr3(0x2D46018, pae=False) == 0x2D46000


# -- builder round trips and translate --------------------------------------------------------------


@pytest.mark.parametrize("name", ["pae", "2level"])
@pytest.mark.parametrize("big", [False, True], ids=["4K", "large"])
def test_map_translates_and_walks(tmp_path, name, big):
    """A mapping of each page size translates to the PA it was given, and the walk reports it at the kernel's level."""
    b = builder(name)
    size = BIG[name] if big else KB4
    va, pa = 0xC1000000, 0x3C00000 if big else 0x1234000
    b.map(va, pa, size, X86_P | X86_RW | X86_G)
    mem = b.memory(tmp_path)
    mode = b.mode
    t = translate(mem, mode, b.root, va + 0x567)
    assert t.ok and t.pa == pa + 0x567 and t.page_size == size
    assert [s.kind for s in t.steps] == ["table"] * (len(t.steps) - 1) + ["leaf"]
    pas, sizes, ok = translate_many(mem, mode, b.root, np.array([va + 0x567, va + size - 4, va + size, 0], np.uint64))
    assert ok.tolist() == [True, True, False, False]
    assert pas[:2].tolist() == [pa + 0x567, pa + size - 4] and sizes[0] == size
    runs = root_runs(mem, mode, b.root)
    leaf = [k for k in range(len(runs)) if runs.key[k] & X86_P]
    assert len(leaf) == 1
    k = leaf[0]
    assert int(runs.start[k]) == va
    assert int(runs.klevel[k]) == (3 if big else 4)  # 2 MiB and 4 MiB pages are "pmd", 4K "pte"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["pae", "2level"]),
    maps=st.lists(st.tuples(st.integers(0, 1023), st.booleans(), st.integers(1, 255), st.integers(0, 0xFFF)), min_size=1, max_size=10),
    probes=st.lists(st.integers(0, TOP32 - 1), max_size=20),
)
def test_translate_many_equals_translate_and_the_builder(name, maps, probes):
    """For random mappings, translate_many() equals translate() on every probe and each mapping's PA."""
    b = builder(name)
    big = BIG[name]
    done = []
    for slot, is_big, pa_unit, off in maps:
        size = big if is_big else KB4
        va = (slot * (TOP32 // 1024)) & ~(size - 1)
        pa = pa_unit * big
        try:
            b.map(va, pa, size, X86_P | X86_RW)
            done.append((va, pa, size, off))
        except ValueError:
            pass
    with tempfile.TemporaryDirectory() as d:
        mem = b.memory(d)
        vas = [va + (off * 4) % size for va, _, size, off in done] + probes
        pas, sizes, ok = translate_many(mem, b.mode, b.root, np.array(vas, np.uint64))
        for i, va in enumerate(vas):
            t = translate(mem, b.mode, b.root, va)
            assert bool(ok[i]) == t.ok
            if t.ok:
                assert int(pas[i]) == t.pa and int(sizes[i]) == t.page_size
        for i, (va, pa, size, off) in enumerate(done):
            assert ok[i] and int(pas[i]) == pa + (off * 4) % size
        mem.close()


# -- leaves, holes and reserved bits at every level --------------------------------------------------


def test_leaf_detection_every_level():
    """The kernel's view per level: PSE makes a leaf where the kernel has p?d_leaf(), A/D alone is none, PTE slots are all leaves."""
    pae, two = I386_PAE, I386_2LEVEL
    # PDPT = the kernel's pud: none / table / pud_leaf() on PSE / not present and not none: skipped
    assert _one(pae, 0, 0) == (Kind.HOLE, 0)
    assert _one(pae, 0, X86_A | X86_D)[0] == Kind.HOLE
    assert _one(pae, 0, 0x1E94021) == (Kind.TABLE, 0x1E94000)  # a captured PDPTE (QEMU set A)
    assert _one(pae, 0, 0x40000000 | X86_P | X86_PSE)[0] == Kind.LEAF
    assert _one(pae, 0, 0x1E94000 | X86_RW)[0] == Kind.SKIP
    # PMD: pmd_leaf() is PSE alone; pmd_present() also accepts PROTNONE (GLB)
    assert _one(pae, 1, 0x3C00000 | X86_P | X86_PSE) == (Kind.LEAF, 0x3C00000)
    assert _one(pae, 1, 0x3C00000 | X86_PSE)[0] == Kind.LEAF
    assert _one(pae, 1, 0x5000 | X86_G)[0] == Kind.TABLE
    assert _one(pae, 1, 0x5000 | X86_RW)[0] == Kind.SKIP
    # 32-bit pmd_none() reads an unsigned long: a PAE PMD with only high bits set is none
    assert _one(pae, 1, X86_NX)[0] == Kind.HOLE
    assert _one(pae, 1, (1 << 32) | X86_A)[0] == Kind.HOLE
    assert _one(pae, 2, 0)[0] == Kind.LEAF and _one(pae, 2, X86_NX)[0] == Kind.LEAF
    # 2-level: the PDE is the kernel's pmd
    assert _one(two, 0, 0)[0] == Kind.HOLE
    assert _one(two, 0, 0x20F8063) == (Kind.TABLE, 0x20F8000)
    assert _one(two, 0, 0xC1000000 | X86_P | X86_PSE | X86_G) == (Kind.LEAF, 0xC1000000)
    assert _one(two, 1, 0)[0] == Kind.LEAF


def test_pse36_high_address_bits():
    """2-level 4 MiB pages take PA bits 39:32 from PDE bits 20:13; bit 21 is reserved; without CR4.PSE PS is ignored."""
    pde = 0x00400000 | X86_P | X86_PSE | (0x81 << 13)
    assert _one(I386_2LEVEL, 0, pde, hw=True) == (HwKind.LEAF, 0x81_0040_0000)
    kind, reason = _one(I386_2LEVEL, 0, pde | (1 << 21), hw=True)
    assert kind == HwKind.FAULT and I386_2LEVEL.fault_reason(reason).endswith("bits below the large page's alignment)")
    assert _one(NOPSE, 0, pde, hw=True) == (HwKind.TABLE, 0x00400000 | (0x81 << 13) & ~0xFFF)
    assert _one(I386_2LEVEL, 0, pde)[1] == 0x81_0040_0000  # classify's output PA too
    # a PAE 2 MiB page has no PSE-36: bits 20:13 are reserved
    kind, reason = _one(I386_PAE, 1, 0x200000 | X86_P | X86_PSE | (1 << 13), hw=True)
    assert kind == HwKind.FAULT


def test_pdpte_as_the_mmu_sees_it():
    """A PDPTE restricts no permission and ignores A (QEMU sets it); XD or address bits above MAXPHYADDR fault; PS is no page."""
    pae = make_mode("pae", pa_bits=40)
    assert _one(pae, 0, 0x1E94021, hw=True) == (HwKind.TABLE, 0x1E94000)
    assert _one(pae, 0, 0x1E94001 | X86_PSE, hw=True)[0] == HwKind.TABLE
    for bad in (X86_NX, 1 << 40, 1 << 55):
        kind, reason = _one(pae, 0, 0x1E94001 | bad, hw=True)
        assert kind == HwKind.FAULT and "MAXPHYADDR" in pae.fault_reason(reason)
    assert _one(pae, 1, 0x5001 | X86_NX, hw=True)[0] == HwKind.TABLE  # XD is fine below the PDPT
    assert _one(pae, 1, 0x5001 | (1 << 40), hw=True)[0] == HwKind.FAULT
    assert _one(pae, 2, 0x5001 | (1 << 55), hw=True)[0] == HwKind.FAULT  # 62:52 reserved with PAE
    assert _one(I386_PAE, 2, 0x5001 | (1 << 55), hw=True)[0] == HwKind.FAULT  # MAXPHYADDR 52 too
    assert _one(x86.X86_64_4LEVEL, 3, 0x5001 | (1 << 55), hw=True)[0] == HwKind.LEAF  # ignored in IA-32e
    assert int(pae.perm(0, np.array([0x1E94001], np.uint64))[0]) == X86_US | X86_RW
    kview = ptdump_view(pae)
    assert kview is pae.extra["ptdump_view"] and ptdump_view(kview) is kview
    assert int(kview.perm(0, np.array([0x1E94001], np.uint64))[0]) == 0
    assert ptdump_view(I386_2LEVEL) is I386_2LEVEL


def test_describe_entries():
    """translate's flag text: PDPTEs show only their own bits; 32-bit entries never show a protection key."""
    assert I386_PAE.describe("pgd", 0x1E94021) == "P A"
    assert I386_PAE.describe("pgd", 0x1E94001 | X86_RW) == "P reserved=0x2"
    assert I386_PAE.describe("pmd", 0x3C00000 | X86_P | X86_PSE | X86_NX | (3 << 59)) == "P RO S PS XD"
    assert I386_2LEVEL.describe("pgd", 0xC1000000 | X86_P | X86_RW | X86_PSE | X86_G) == "P RW S PS G X"


def test_translate_trace_and_user_store_permission(tmp_path):
    """translate folds U/S and RW over the PDE and PTE (not the PDPTE) and names the fault level."""
    b = linux_pae()
    b.map(0x08048000, 0x100000, KB4, X86_P | X86_RW | X86_US)
    t, i = b.slot(0x08048000, 1)
    b.set_entry(t, i, b.entry(t, i) & ~X86_RW)  # the PDE is read-only
    mem = b.memory(tmp_path)
    tr = translate(mem, I386_PAE, b.root, 0x08048010)
    assert tr.ok and tr.pa == 0x100010
    assert tr.perm == X86_US  # user, read-only, executable
    assert [s.level for s in tr.steps] == ["pgd", "pmd", "pte"]
    tr = translate(mem, I386_PAE, b.root, 0x40000000)
    assert tr.fault == "pmd entry 0x0000000000000000: not present (P=0)"


# -- the 32-bit ptdump text ------------------------------------------------------------------------


def _fast(mem, mode, root, layout, check_wx=True):
    kview = ptdump_view(mode)
    runs = root_runs(mem, kview, root)
    out = io.StringIO()
    st_ = format_fast(kview, runs, layout, out, check_wx=check_wx)
    return out.getvalue(), st_, runs


def assert_all_agree(mem, mode, root, layout):
    """Per-entry reference, drive() and format_fast() print the same text and count the same W+X pages."""
    ref_text, ref_st, ref = reference_ptdump(mem, mode, root, layout)
    fast_text, fast_st, runs = _fast(mem, mode, root, layout)
    drv_text, drv_st = drive_ptdump(ptdump_view(mode), runs, layout)
    if ref.missing:
        return ref_text
    assert fast_text.splitlines() == ref_text.splitlines()
    assert drv_text.splitlines() == ref_text.splitlines()
    assert fast_st.wx_pages == ref_st.wx_pages == drv_st.wx_pages
    assert fast_st.wx_ranges == ref_st.wx_ranges == drv_st.wx_ranges
    assert set(drv_st.addrs) <= ref.addrs
    return ref_text


def test_hand_built_pae_text(tmp_path):
    """A small PAE table prints exactly as the 32-bit note_page() would: 8 hex digits, markers, pmd/pte/pgd levels, flush at 0."""
    b = linux_pae()
    b.map(0xC0000000, 0, MB2, X86_P | X86_RW | X86_G | X86_NX)
    b.map(0xC0200000, 0x200000, KB4, X86_P | X86_G)
    b.map(0xFFFFB000, 0xFEE00000, KB4, X86_P | X86_RW | X86_PWT | X86_PCD | X86_G | X86_NX)
    b.set_entry(b.root, 0, 0)  # user space: no PMD table
    layout = Layout32(pae=True, high_memory=0xC0400000)
    text = assert_all_agree(b.memory(tmp_path), I386_PAE, b.root, layout)
    hole = " " * 30
    assert text.splitlines() == [
        "---[ User Space ]---",
        "0x00000000-0x40000000           1G " + hole + "pgd",
        "0x40000000-0xc0000000           2G " + hole + "pmd",
        "---[ Kernel Mapping ]---",
        "0xc0000000-0xc0200000           2M     RW         PSE     GLB NX pmd",
        "0xc0200000-0xc0201000           4K     ro                 GLB x  pte",
        "0xc0201000-0xc0400000        2044K " + hole + "pte",
        "0xc0400000-0xc0c00000           8M " + hole + "pmd",
        "---[ vmalloc() Area ]---",
        "0xc0c00000-0xff000000         996M " + hole + "pmd",
        "---[ vmalloc() End ]---",
        "0xff000000-0xff200000           2M " + hole + "pmd",
        "---[ Persistent kmap() Area ]---",
        # one marker per note_page(): each header waits for the next event, 2 MiB later
        "0xff200000-0xff400000           2M " + hole + "pmd",
        "---[ LDT remap ]---",
        "0xff400000-0xff600000           2M " + hole + "pmd",
        "---[ CPU entry area ]---",
        "0xff600000-0xffe00000           8M " + hole + "pmd",
        "---[ Fixmap area ]---",
        "0xffe00000-0xffffb000        2028K " + hole + "pte",
        "0xffffb000-0xffffc000           4K     RW PWT PCD         GLB NX pte",
        "0xffffc000-0x00000000          16K " + hole + "pte",
    ]


def test_pae_w_plus_x_is_hidden_by_the_pdpte_fold(tmp_path):
    """RW executable pages under a Linux PDPTE (P only) pass the kernel's check; under a PDPTE with RW they are found."""
    b = linux_pae()
    b.map(0xC1000000, 0x1000000, MB2, X86_P | X86_RW | X86_PSE)
    layout = Layout32(pae=True, high_memory=0xE0000000)
    mem = b.memory(tmp_path)
    _, st_, _ = _fast(mem, I386_PAE, b.root, layout)
    assert st_.wx_pages == 0
    _, ref_st, _ = reference_ptdump(mem, I386_PAE, b.root, layout)
    assert ref_st.wx_pages == 0
    b.set_entry(b.root, 3, b.entry(b.root, 3) | X86_RW)  # a PDPTE the kernel would never write
    mem = b.memory(tmp_path)
    _, st_, _ = _fast(mem, I386_PAE, b.root, layout)
    assert st_.wx_pages == 512 and st_.wx_ranges == [(0xC1000000, 0xC1200000)]
    assert_all_agree(mem, I386_PAE, b.root, layout)


def test_layout32_options():
    """Without HIGHMEM VMALLOC_END is LDT_BASE_ADDR - 8K and there is no kmap marker; without LDT no LDT marker."""
    lay = Layout32(pae=False, high_memory=0xF0000000, highmem=False, ldt=False, cpu_entry_area_base=0xFF800000)
    assert [(hex(a), n) for a, n, _ in lay.markers()] == [
        ("0x0", "User Space"),
        ("0xc0000000", "Kernel Mapping"),
        ("0xf0800000", "vmalloc() Area"),
        ("0xff3fe000", "vmalloc() End"),
        ("0xff800000", "CPU entry area"),
        ("0xffdb8000", "Fixmap area"),
        ("0xffffffff", ""),
    ]
    assert lay.ranges() == [(0, 1 << 32)]
    assert Layout32(pae=True, fixaddr_top=0xFFBFF000).fixaddr_start == 0xFF9B8000


# random tables: (op, anchor, delta, ...) near the interesting addresses of the 32-bit layout
ANCHORS = [0, 0x08048000, 0xBFFFF000, 0xC0000000, 0xC1000000, 0xDFFE0000, 0xE07E0000, 0xFEFFE000, 0xFF000000,
           0xFF200000, 0xFF400000, 0xFFDB8000, 0xFFFFF000]
_FLAGS = [X86_RW, X86_US, X86_PWT, X86_PCD, X86_A, X86_D, X86_G, 1 << 9, 1 << 11, X86_NX, X86_NX, X86_RW]
flags_st = st.tuples(st.integers(0, 9), st.lists(st.sampled_from(_FLAGS), max_size=5)).map(
    lambda t: (X86_P if t[0] else 0) | sum(set(t[1]))
)
op_st = st.one_of(
    st.tuples(st.just("map"), st.integers(0, 12), st.integers(-3, 3), st.booleans(), flags_st, st.integers(0, 1 << 12)),
    st.tuples(st.just("stripe"), st.integers(0, 12), st.integers(-20, 20), st.integers(2, 30), flags_st, flags_st),
    st.tuples(st.just("np_pte"), st.integers(0, 12), st.integers(-8, 8), st.integers(1, (1 << 32) - 1)),
    st.tuples(st.just("pmd_raw"), st.integers(0, 12), st.integers(-2, 2),
              st.sampled_from(["ad_none", "protnone", "np_leaf", "skip", "high_none", "pdpte_rw", "pdpte_none"])),
    st.tuples(st.just("perm"), st.integers(0, 12), st.integers(-2, 2), st.sampled_from([~X86_RW, ~X86_US, X86_NX, X86_G])),
    st.tuples(st.just("shared"), st.integers(0, 12), st.integers(-3, 3), st.integers(1, 4)),
)


def build_random(name: str, ops, linux: bool = True) -> PageTableBuilder:
    b = builder(name, linux)
    mode = b.mode
    big = BIG[name]
    pte_l, pmd_l = len(mode.levels) - 1, len(mode.levels) - 2
    wide = 8 if name == "pae" else 4  # PAE entries are 8 bytes: NX and high PA bits exist
    shared = None
    for op in ops:
        kind, a = op[0], ANCHORS[op[1]]
        try:
            if kind == "map":
                _, _, delta, is_big, flags, pa_i = op
                size = big if is_big else KB4
                va = (a & ~(size - 1)) + delta * size
                if 0 <= va < TOP32:
                    fl = flags if wide == 8 else flags & 0xFFF
                    b.map(va, (pa_i * size) % (1 << 32), size, fl)
            elif kind == "stripe":
                _, _, start, n, fa, fb = op
                for k in range(n):
                    va = (a & ~(KB4 - 1)) + (start + k) * KB4
                    if 0 <= va < TOP32:
                        try:
                            fl = fa if k % 2 else fb
                            b.map(va, (0x100 + k) * KB4, KB4, fl if wide == 8 else fl & 0xFFF)
                        except ValueError:
                            pass
            elif kind == "np_pte":
                _, _, delta, value = op
                va = (a & ~(KB4 - 1)) + delta * KB4
                if 0 <= va < TOP32:
                    t, i = b.slot(va, pte_l, create=True)
                    if b.entry(t, i) == 0:
                        b.set_entry(t, i, value & ~X86_P)
            elif kind == "pmd_raw":
                _, _, delta, what = op
                va = (a & ~(big - 1)) + delta * big
                if not 0 <= va < TOP32:
                    continue
                if what in ("pdpte_rw", "pdpte_none"):
                    if name == "pae":
                        i = va >> 30
                        e = b.entry(b.root, i)
                        b.set_entry(b.root, i, e | X86_RW | X86_US if what == "pdpte_rw" else X86_A)
                    continue
                t, i = b.slot(va, pmd_l, create=True)
                e = b.entry(t, i)
                if what == "ad_none" and e == 0:
                    b.set_entry(t, i, X86_A | X86_D)
                elif what == "high_none" and e == 0 and wide == 8:  # none to a 32-bit kernel
                    b.set_entry(t, i, X86_NX | (1 << 33))
                elif what == "skip":
                    b.set_entry(t, i, (e or 0x5000 | X86_RW | X86_US) & ~X86_P & ~X86_PSE & ~X86_G)
                elif what == "protnone" and e and not e & X86_PSE:
                    b.set_entry(t, i, (e & ~X86_P) | X86_G)
                elif what == "np_leaf" and e == 0:
                    b.set_entry(t, i, 0x400000 | X86_PSE | X86_RW)
            elif kind == "perm":
                _, _, delta, m = op
                va = (a & ~(big - 1)) + delta * big
                if 0 <= va < TOP32 and (m > 0 or wide == 8 or m != X86_NX):
                    t, i = b.slot(va, pmd_l)
                    e = b.entry(t, i)
                    if e and not e & X86_PSE:
                        b.set_entry(t, i, ((e & m) if m < 0 else (e | m)) & ((1 << (8 * wide)) - 1))
            elif kind == "shared":
                _, _, delta, count = op
                if shared is None:
                    shared = b.alloc_table()
                    for k in range(0, mode.levels[-1].entries, 3):
                        b.set_entry(shared, k, (0x200000 + k * KB4) | X86_P | (X86_RW if k % 2 else 0))
                for k in range(count):
                    va = (a & ~(big - 1)) + (delta + k) * big
                    if 0 <= va < TOP32:
                        t, i = b.slot(va, pmd_l, create=True)
                        if b.entry(t, i) == 0:
                            b.set_entry(t, i, b.make_table_entry(shared))
        except (ValueError, KeyError):
            pass
    return b


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    name=st.sampled_from(["pae", "2level"]),
    opts=st.tuples(st.booleans(), st.booleans(), st.integers(0, 1 << 20), st.booleans()),
    ops=st.lists(op_st, min_size=1, max_size=12),
)
def test_random_tables_reference_equals_fast_and_drive(name, opts, ops):
    """For random PAE and 2-level tables the per-entry kernel ptdump, drive(X86State) and format_fast agree on text and W+X."""
    highmem, ldt, hm, linux = opts
    layout = Layout32(pae=name == "pae", high_memory=0xC0000000 + hm * KB4, highmem=highmem, ldt=ldt)
    b = build_random(name, ops, linux)
    with tempfile.TemporaryDirectory() as d:
        mem = b.memory(d)
        text = assert_all_agree(mem, b.mode, b.root, layout)
        assert text.startswith("---[ User Space ]---\n0x00000000-")
        mem.close()


def test_x86state_words_are_32_bits():
    """The 32-bit note_page() prints 8 hex digits, wraps sizes modulo 2^32 and records the last range up to 2^32."""
    out = io.StringIO()
    records: list[dict] = []
    st_ = X86State(Layout32(pae=True, high_memory=0xC8000000), out, records=records)
    st_.note(0, 0, 0, 0, 0)
    st_.note(0xFFFFF000, 4, 0x1003, 0x3, 0x2)
    st_.flush()
    assert out.getvalue().splitlines()[-1] == "0xfffff000-0x00000000           4K     RW                     x  pte"
    assert records[-1]["end"] == 1 << 32 and records[-1]["size"] == 4096


# -- resolving a target without a capture -----------------------------------------------------------


def test_resolve_finds_a_2g_split_from_swapper_pg_dir(tmp_path):
    """With VMSPLIT_2G swapper_pg_dir's VA maps onto its PA only under PAGE_OFFSET 0x80000000, which resolve() finds."""
    from pagewalk.api import dump
    from pagewalk.errors import UsageError
    from pagewalk.target import resolve

    b = PageTableBuilder(I386_2LEVEL)  # root (swapper_pg_dir) at PA 0x1000
    for k in range(4):  # the direct map: 16 MiB of 4 MiB pages from PA 0
        b.map(0x80000000 + k * MB4, k * MB4, MB4, X86_P | X86_RW | X86_G)
    b.map(0xFFFFB000, 0xFEE00000, KB4, X86_P | X86_RW | X86_PCD)
    mem = b.memory(tmp_path)
    t = resolve(mem, "i386", {"cr4": 0x10}, {"swapper_pg_dir": 0x80000000 + b.root})
    assert t.mode is I386_2LEVEL and t.root("kernel") == b.root
    assert t.layout.page_offset == 0x80000000
    assert t.layout.high_memory == 0x81000000  # the end of the direct map, with a note
    assert any("high_memory taken as the end of the direct map, 0x81000000" in n for n in t.notes)
    out = io.StringIO()
    dump(t, "kernel", out)
    lines = out.getvalue().splitlines()
    assert lines[:4] == [
        "---[ User Space ]---",
        "0x00000000-0x80000000           2G                               pgd",
        "---[ Kernel Mapping ]---",
        "0x80000000-0x81000000          16M     RW         PSE     GLB x  pmd",
    ]
    assert lines[5] == "---[ vmalloc() Area ]---"  # VMALLOC_START = high_memory + 8 MiB, a PDE boundary
    # --define wins over the guesses; unknown names are refused
    t = resolve(mem, "i386", {"cr4": 0x10}, {"swapper_pg_dir": 0x80000000 + b.root},
                {"PAGE_OFFSET": 0x80000000, "high_memory": 0x81400000})
    assert t.layout.areas()["VMALLOC_START"] == 0x81C00000 and not t.notes
    with pytest.raises(UsageError, match="unknown for i386"):
        resolve(mem, "i386", {"cr4": 0x10}, {}, {"init_top_pgt": 1})
    # no CR4, no VMCOREINFO: PAE is assumed, and said
    t = resolve(make_pae_image(tmp_path), "i386", {"cr3": 0x1000})
    assert t.mode is I386_PAE and any("assuming PAE" in n for n in t.notes)


def make_pae_image(tmp_path):
    b = linux_pae()
    b.map(0xC0000000, 0, MB2, X86_P | X86_RW)
    return b.memory(tmp_path)
