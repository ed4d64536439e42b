"""walk.py's pte_hole() depths and note_page() events against the whole-table walk (runs.py), every architecture.

runs.py (the ptdump fast path, checked line for line against real kernels' ptdump text) gives
each hole run the depth of `mode.levels[i].hole_depth`; walk.py computes the depth the kernel's
mm/pagewalk.c passes to pte_hole() from its loops and real_depth(). For random tables of every
mode the two must agree on where the holes are, at which depth, and on the leaf events; s390
partial tables (TF/TL of region entries, TL of the ASCE) make holes in both the same way.

The one deliberate difference is 32-bit arm: its ptdump (arch/arm/mm/dump.c) is its own walker
and never calls pte_hole(); its note_page() level of a none entry is the entry's own level,
where mm/pagewalk.c (which arm's kernel runs for other callers) merges the folded levels:
PTRS_PER_PMD == 1 (arch/arm/include/asm/pgtable-2level.h) and pgtable-nopud.h / -nop4d.h.
"""

from __future__ import annotations

import tempfile

import builders_arc
import builders_arm
import builders_arm64
import builders_mips
import builders_ppc64
import builders_riscv
import builders_s390
import builders_sparc64
import pytest
from builders import X86_P, X86_RW, PageTableBuilder
from builders_s390 import S390Builder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagewalk.arch import arc, arm, arm64, mips, ppc64, riscv, s390, sparc64, x86
from pagewalk.mode import Kind, PagingMode
from pagewalk.runs import root_runs
from pagewalk.walk import (
    KernelDepth,
    WalkOps,
    folding,
    kernel_depths,
    real_depth,
    walk_page_range_novma,
)

TOP = 1 << 64
ULONG_MASK = TOP - 1

MODES: list[PagingMode] = [
    x86.X86_64_4LEVEL, x86.X86_64_5LEVEL, x86.I386_PAE, x86.I386_2LEVEL,
    arm.SHORT, arm.LPAE,
    riscv.SV32, riscv.SV39, riscv.SV48, riscv.SV57,
    ppc64.RADIX_64K, ppc64.RADIX_4K, ppc64.HASH_64K,
    s390.REGION1, s390.REGION2, s390.REGION3, s390.SEGMENT,
    arm64.make_mode(4096, 39), arm64.make_mode(4096, 48), arm64.make_mode(4096, 52, ds=True),
    arm64.make_mode(16384, 36), arm64.make_mode(16384, 47), arm64.make_mode(16384, 48),
    arm64.make_mode(65536, 42), arm64.make_mode(65536, 48), arm64.make_mode(4096, 48, upper=False),
    *(mips.make_mode(c) for c in mips.CONFIGS),
    *(sparc64.make_mode(c) for c in sparc64.CONFIGS),
    *(arc.make_mode(c) for c in arc.CONFIGS),
]

# pte_hole() depth in mm/pagewalk.c of a none entry at each hardware level, where it is not the
# depth arm's own ptdump (dump.c) notes: the root's none entry is found by pmd_none() (2-level:
# PTRS_PER_PMD 1, pgtable-2level.h) or pud_none() (LPAE: pgtable-nopud.h, PTRS_PER_PGD 4 in
# pgtable-3level.h) and real_depth() merges the folded levels above it down to 0.
PAGEWALK_DEPTH = {"arm": {0: 0}}

# a leaf the mode's classify() accepts, per architecture (flags of a kernel RW page)
LEAF_FLAGS = {
    "x86_64": X86_P | X86_RW,
    "i386": X86_P | X86_RW,
    "arm": 0,  # short: section / small page type bits from the builder; LPAE below
    "arm64": builders_arm64.KERNEL_RW,
    "riscv32": builders_riscv.RV_KERNEL_RW,
    "riscv64": builders_riscv.RV_KERNEL_RW,
    "ppc64": builders_ppc64.PPC_KERNEL_RW,
    "s390x": 0,
    "mips64": builders_mips.M_KERNEL,
    "sparc64": builders_sparc64.SUN4V_KERNEL,
    "arc": arc.PAGE_KERNEL,
}
assert builders_arc and builders_arm and builders_s390  # imported for their entry formats


def _flags(mode: PagingMode) -> int:
    if mode.arch == "arm" and mode.extra["format"] != "short":
        return builders_arm.LD_KERNEL
    if mode.arch == "sparc64" and "sun4u" in mode.name:
        return builders_sparc64.SUN4U_KERNEL
    return LEAF_FLAGS[mode.arch]


def _builder(mode: PagingMode) -> PageTableBuilder:
    if mode.arch == "s390x":
        return S390Builder(mode)
    return PageTableBuilder(mode, base=0x100000)


def _offset_windows(mode: PagingMode) -> list[tuple[int, int]]:
    """The VA windows of the mode as offsets in the root's span (what runs.py's starts are)."""
    return [(mode.table_offset(lo), mode.table_offset(lo) + (hi - lo)) for lo, hi in mode.va_windows()]


def _collapse(events: list[tuple[int, tuple]]) -> list[tuple[int, tuple]]:
    """note_page(): an event equal to the current state changes nothing; keep the first of each group."""
    out: list[tuple[int, tuple]] = []
    for off, state in sorted(events, key=lambda e: e[0]):
        if not out or out[-1][1] != state:
            out.append((off, state))
    return out


def walk_events(mem, mode: PagingMode, root: int) -> tuple[list, list]:
    """(pte_hole calls as (offset, end offset, depth, hw level), note_page-like events) from walk.py."""
    holes: list[tuple[int, int, int, int]] = []
    events: list[tuple[int, tuple]] = []
    kmask = mode.ptdump_key_mask

    def hole(va: int, next_va: int, depth: int, walk) -> int:
        off = mode.table_offset(va)
        holes.append((off, off + ((next_va - va) & ULONG_MASK), depth, walk.hw_level))
        events.append((off, ("hole", depth)))
        return 0

    def entry(val: int, va: int, next_va: int, walk) -> int:
        if walk.kind == Kind.LEAF:
            klevel = mode.levels[walk.hw_level].klevel
            zero = klevel == 4 and val == 0
            events.append((mode.table_offset(va), ("leaf", klevel, val & kmask, zero)))
        return 0

    ops = WalkOps(pgd_entry=entry, p4d_entry=entry, pud_entry=entry, pmd_entry=entry, pte_entry=entry, pte_hole=hole)
    assert walk_page_range_novma(mem, mode, root, 0, TOP, ops) == 0
    return holes, _collapse(events)


def runs_events(mem, mode: PagingMode, root: int) -> tuple[list, list]:
    """(hole runs as (offset, end offset, depth, hw level), note_page-like events) from runs.py,
    cut to the mode's VA windows; a run of entries the kernel skips makes no event."""
    r = root_runs(mem, mode, root)
    starts = [int(s) for s in r.start]
    ends = starts[1:] + [1 << mode.va_bits]
    holes, events = [], []
    depth_of = PAGEWALK_DEPTH.get(mode.arch, {})
    for k in range(len(r)):
        klevel, hw = int(r.klevel[k]), int(r.hw[k])
        if klevel < 0:
            continue  # SKIP (neither reported nor descended into), or a missing table
        hole = bool(r.zero[k]) and klevel < 4
        if hole:
            klevel = depth_of.get(hw, klevel)
            state = ("hole", klevel)
        else:
            state = ("leaf", klevel, int(r.key[k]), bool(r.zero[k]))
        for lo, hi in _offset_windows(mode):
            a, b = max(starts[k], lo), min(ends[k], hi)
            if a < b:
                events.append((a, state))
                if hole:
                    holes.append((a, b, klevel, hw))
    return holes, _collapse(events)


def _merge_holes(holes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Adjacent holes of one depth and level as one (runs.py merges them, walk.py reports each entry)."""
    out: list[tuple[int, int, int, int]] = []
    for h in sorted(holes):
        if out and out[-1][1] == h[0] and out[-1][2:] == h[2:]:
            out[-1] = (out[-1][0], h[1], *h[2:])
        else:
            out.append(h)
    return out


def compare(b: PageTableBuilder, mode: PagingMode) -> list[tuple[int, int, int, int]]:
    """Assert that walk.py and runs.py agree on `b`'s tables; the merged holes."""
    with tempfile.TemporaryDirectory() as d, b.memory(d) as mem:
        w_holes, w_events = walk_events(mem, mode, b.root)
        r_holes, r_events = runs_events(mem, mode, b.root)
    w, r = _merge_holes(w_holes), _merge_holes(r_holes)
    assert w == r
    assert w_events == r_events
    return w


@st.composite
def tables(draw, mode: PagingMode):
    """A builder with a few mappings of every size the mode has leaves of."""
    b = _builder(mode)
    windows = mode.va_windows()
    flags = _flags(mode)
    for _ in range(draw(st.integers(1, 6))):
        level = draw(st.integers(0, len(mode.levels) - 1))
        size = mode.levels[level].entry_span
        lo, hi = draw(st.sampled_from(windows))
        if hi - lo < size:
            continue
        va = lo + draw(st.integers(0, (hi - lo) // size - 1)) * size
        pa_top = 1 << min(mode.pa_bits, 40, 8 * mode.entry_bytes)
        pa = draw(st.integers(0, max(1, pa_top // size) - 1)) * size
        try:
            b.map(va, pa, size, flags)
        except (ValueError, KeyError):
            pass  # no leaf of that size, or it overlaps an earlier mapping
    return b


def _fresh_s390(mode: PagingMode, asce_tl: int) -> PagingMode:
    return s390.make_mode(mode.extra["dt"], asce_tl)


# -- the depths themselves --------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_real_depth_is_the_ptdump_hole_depth(mode):
    """walk.py's real_depth() of each level's kernel depth is the hole depth the ptdump path uses (arm: pagewalk.c's)."""
    expect = [PAGEWALK_DEPTH.get(mode.arch, {}).get(i, lvl.hole_depth) for i, lvl in enumerate(mode.levels)]
    got = [0 if lvl.klevel == 0 else real_depth(mode, lvl.klevel) for lvl in mode.levels]
    assert got == expect
    assert [d.depth for d in kernel_depths(mode)] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("mode", "depth"),
    [(riscv.SV39, 2), (riscv.SV48, 1), (riscv.SV32, 0), (s390.REGION3, 2), (s390.REGION2, 1), (s390.SEGMENT, 3),
     (x86.X86_64_4LEVEL, 0), (x86.I386_PAE, 0), (ppc64.RADIX_64K, 0)],
    ids=lambda v: v.name if isinstance(v, PagingMode) else str(v),
)
def test_root_hole_depth_per_kernel_folding(mode, depth, tmp_path):
    """A none root entry is reported at the depth the kernel passes: runtime folding (riscv64, s390x) keeps the level's own depth."""
    b = _builder(mode)
    if mode.arch == "s390x":
        b.finish()
    holes: list = []
    ops = WalkOps(pte_hole=lambda va, nxt, d, w: holes.append(d) or 0, pgd_entry=lambda *a: 0, pmd_entry=lambda *a: 0)
    assert walk_page_range_novma(b.memory(tmp_path), mode, b.root, 0, TOP, ops) == 0
    assert set(holes) == {depth}
    assert len(holes) == mode.levels[0].entries  # one per root entry: none of them is folded away


def test_folding_styles():
    """riscv64 and s390x fold at run time (PTRS_PER_P?D > 1), the other architectures like pgtable-nop?d.h."""
    assert {m.arch: folding(m) for m in MODES} == {
        "x86_64": "compile", "i386": "compile", "arm": "compile", "riscv32": "compile", "riscv64": "runtime-top",
        "ppc64": "compile", "s390x": "runtime-bottom", "arm64": "compile", "mips64": "compile",
        "sparc64": "compile", "arc": "compile",
    }


def test_s390_region3_folded_loops_run_once(tmp_path):
    """With a region-third ASCE pgd_entry and p4d_entry run once over the whole range, pud_entry per region-third entry."""
    mode = s390.REGION3
    b = S390Builder(mode)
    b.map(0x8000_0000, 0x10_0000, 1 << 20, 0)  # segment leaf under R3 entry 1
    b.finish()
    seen: dict[str, list] = {"pgd": [], "p4d": [], "pud": []}

    def cb(name):
        return lambda e, va, nxt, w: seen[name].append((va, nxt, w.depth, w.index)) or 0

    ops = WalkOps(pgd_entry=cb("pgd"), p4d_entry=cb("p4d"), pud_entry=cb("pud"), pmd_entry=lambda *a: 0)
    assert walk_page_range_novma(b.memory(tmp_path), mode, b.root, 0, TOP, ops) == 0
    assert seen["pgd"] == [(0, 1 << 42, 0, 0)]
    assert seen["p4d"] == [(0, 1 << 42, 1, 0)]
    assert seen["pud"] == [(1 << 31, 2 << 31, 2, 1)]


def test_kernel_depths_mark_one_pointer_levels():
    """PTRS_PER_P?D == 1 only where the kernel folds at compile time (or x86's ptrs_per_p4d)."""
    assert [d.one_ptr for d in kernel_depths(x86.X86_64_4LEVEL)] == [False, True, False, False, False]
    assert [d.one_ptr for d in kernel_depths(riscv.SV39)] == [False] * 5
    assert [d.iterates for d in kernel_depths(riscv.SV39)] == [True, False, False, True, True]
    assert [d.iterates for d in kernel_depths(s390.SEGMENT)] == [False, False, False, True, True]
    assert isinstance(kernel_depths(s390.SEGMENT)[0], KernelDepth)


# -- properties: walk.py against runs.py ------------------------------------------------------


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_walk_holes_and_events_equal_runs(mode, data):
    """For random tables, walk.py's pte_hole (start, end, depth) and leaf events equal runs.py's hole runs and events."""
    b = data.draw(tables(mode))
    if isinstance(b, S390Builder):
        b.finish()
    holes = compare(b, mode)  # asserts walk.py's holes and events equal runs.py's
    # a few mappings leave holes somewhere, except where they fill a tiny root (PAE's 4 PDPTEs)
    assert holes or mode.levels[0].entries <= 4


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from([s390.REGION1, s390.REGION2, s390.REGION3, s390.SEGMENT]),
    asce_tl=st.integers(0, 3),
    data=st.data(),
)
def test_s390_partial_tables_are_holes_in_both(mode, asce_tl, data):
    """s390 TF/TL: entries outside a region table's window (and beyond the ASCE's TL) are holes in walk.py as in runs.py."""
    mode = _fresh_s390(mode, asce_tl)
    b = data.draw(tables(mode))
    b.finish()
    # give some region entries that point at tables a partial window: TF..TL in quarters of 512 entries
    for pa, i in b.tables():
        role = mode.levels[i].name
        if role in ("pmd", "pte"):
            continue
        for k in range(mode.levels[i].entries):
            e = b.entry(pa, k)
            if e & builders_s390.S390_I_REGION or not data.draw(st.booleans()):
                continue
            tf, tl = data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))
            b.set_entry(pa, k, (e & ~0xC3) | tf << 6 | tl)
    holes = compare(b, mode)
    _, hi = (int(x[0]) for x in mode.extra["index_window"](0, None))
    span = mode.levels[0].entry_span
    if hi < mode.levels[0].entries:  # beyond the ASCE's table length: one hole at the root's depth
        assert holes[-1][1] == 1 << mode.va_bits and holes[-1][0] <= hi * span
        assert holes[-1][2] == mode.levels[0].hole_depth


def test_s390_entry_outside_tf_tl_is_a_hole(tmp_path):
    """A mapping behind a region-third entry whose TF/TL leave out its segment index is a pmd hole, where the CPU faults."""
    mode = s390.REGION3
    b = S390Builder(mode)
    va = 3 << 20  # R3 index 0, segment index 3 (first quarter)
    b.map(va, 0x20_0000, 1 << 20, 0)
    b.finish()
    e = b.entry(b.root, 0)
    b.set_entry(b.root, 0, (e & ~0xC3) | 1 << 6 | 3)  # the segment table holds indexes 512..2047 only
    holes = compare(b, mode)
    # indexes 0..511 of the segment table (outside TF/TL) and 512..2047 (empty): one pmd hole
    assert holes == [(0, 1 << 31, 3, 1), (1 << 31, 1 << 42, 2, 0)]
    leaves: list = []
    ops = WalkOps(pud_entry=lambda *a: 0, pmd_entry=lambda e, v, n, w: leaves.append(v) if w.kind == Kind.LEAF else 0)
    assert walk_page_range_novma(b.memory(tmp_path), mode, b.root, 0, TOP, ops) == 0
    assert leaves == []


def test_s390_region_entry_with_tf_is_bad_in_both(tmp_path):
    """A region-second entry with TF set has bits outside _REGION_ENTRY_BITS: p4d_bad(), so a hole at depth 1 (pgtable.h)."""
    mode = s390.REGION2
    b = S390Builder(mode)
    b.map(3 << 31, 0x20_0000, 1 << 20, 0)
    b.finish()
    e = b.entry(b.root, 0)
    b.set_entry(b.root, 0, (e & ~0xC3) | 1 << 6 | 3)
    assert compare(b, mode) == [(0, 1 << 53, 1, 0)]
