"""walk.py: the kernel's generic page walker (mm/pagewalk.c) over built page tables."""

from __future__ import annotations

import tempfile

import pytest
from builders import X86_G, X86_NX, X86_P, X86_RW, X86_TABLE_FLAGS, X86_US, PageTableBuilder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagewalk.arch.x86 import X86_64_4LEVEL, X86_64_5LEVEL
from pagewalk.errors import PagewalkError
from pagewalk.mode import Kind
from pagewalk.walk import (
    AGAIN_LIMIT,
    VM_PFNMAP,
    Action,
    MmWalk,
    Vma,
    WalkOps,
    kernel_depths,
    real_depth,
    walk_page_range,
    walk_page_range_novma,
)

TOP = 1 << 64
ULONG_MAX = TOP - 1
KB4, MB2, GB1 = 4096, 2 << 20, 1 << 30
KERNEL_TEXT = 0xFFFFFFFF81000000
MODES = [X86_64_4LEVEL, X86_64_5LEVEL]
LEVEL_NAMES = ("pgd", "p4d", "pud", "pmd", "pte")


def record(events: list, *names: str, hole: bool = True, result=None) -> WalkOps:
    """WalkOps whose entry callbacks (of `names`) and pte_hole append to `events`."""

    def entry_cb(name):
        def cb(entry: int, va: int, next_va: int, walk: MmWalk) -> int:
            events.append((name, va, next_va, entry))
            return result(name, entry, va, walk) if result else 0

        return cb

    ops = WalkOps(**{f"{n}_entry": entry_cb(n) for n in names})
    if hole:
        ops.pte_hole = lambda va, next_va, depth, walk: events.append(("hole", va, next_va, depth)) or 0
    return ops


def holes(events: list) -> list[tuple[int, int, int]]:
    return [e[1:] for e in events if e[0] == "hole"]


def named(events: list, name: str) -> list[tuple]:
    return [e[1:] for e in events if e[0] == name]


# -- hole depths and folding ---------------------------------------------------------------------


def test_hole_depths_4level(tmp_path):
    """With 4-level paging the p4d is folded: top-level holes have depth 0, PUD holes 2, PMD holes 3."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x40201000, 0x1000, KB4, X86_P)  # top 0, pud 1, pmd 1
    ev: list = []
    assert walk_page_range_novma(b.memory(tmp_path), X86_64_4LEVEL, b.root, 0, 1 << 47, record(ev, "pmd")) == 0
    h = holes(ev)
    assert len(h) == 255 + 511 + 511  # the lower half is top slots 0..255
    assert h[0] == (0, GB1, 2)  # PUD 0 is none
    assert (GB1, GB1 + MB2, 3) in h  # PMD 0 of the first PUD table
    assert (0x8000000000, 0x10000000000, 0) in h  # top-level slot 1
    assert {d for *_, d in h} == {0, 2, 3}
    assert h[-1] == ((1 << 47) - (1 << 39), 1 << 47, 0)


def test_hole_depths_5level(tmp_path):
    """With 5-level paging no level is folded: holes have depth 0, 1, 2 and 3 by level."""
    b = PageTableBuilder(X86_64_5LEVEL)
    b.map(0x40201000, 0x1000, KB4, X86_P)
    ev: list = []
    walk_page_range_novma(b.memory(tmp_path), X86_64_5LEVEL, b.root, 0, 1 << 56, record(ev, "pmd"))
    h = holes(ev)
    assert {d for *_, d in h} == {0, 1, 2, 3}
    assert (1 << 48, 2 << 48, 0) in h
    assert (1 << 39, 2 << 39, 1) in h
    assert (0, GB1, 2) in h
    assert (GB1, GB1 + MB2, 3) in h
    assert len(h) == 255 + 511 + 511 + 511


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_real_depth_matches_mode_levels(mode):
    """real_depth() of each level's kernel depth equals the hole depth the mode declares."""
    assert [real_depth(mode, lvl.klevel) for lvl in mode.levels] == [lvl.hole_depth for lvl in mode.levels]
    assert [d.depth for d in kernel_depths(mode)] == [0, 1, 2, 3, 4]


def test_folded_p4d_callbacks(tmp_path):
    """On a folded p4d, pgd_entry runs for every top slot (pgd_none() is 0) and p4d_entry gets the same raw entry."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(KERNEL_TEXT, 0x1000000, MB2, X86_P)
    top = b.entry(b.root, 511)
    ev: list = []
    walk_page_range_novma(b.memory(tmp_path), X86_64_4LEVEL, b.root, 0, TOP, record(ev, "pgd", "p4d"))
    pgd = named(ev, "pgd")
    assert len(pgd) == 512  # none slots included
    assert pgd[-1] == (0xFFFFFF8000000000, 0, top)
    assert named(ev, "p4d") == [(0xFFFFFF8000000000, 0, top)]
    assert len(holes(ev)) == 511 and {d for *_, d in holes(ev)} == {0}


def test_folded_p4d_with_only_pte_hole_reports_nothing(tmp_path):
    """Without entry callbacks a folded-p4d walk reports no hole at all, as in the kernel."""
    b = PageTableBuilder(X86_64_4LEVEL)
    ev: list = []
    assert walk_page_range_novma(b.memory(tmp_path), X86_64_4LEVEL, b.root, 0, TOP, record(ev)) == 0
    assert ev == []
    ev5: list = []
    b5 = PageTableBuilder(X86_64_5LEVEL)
    walk_page_range_novma(b5.memory(tmp_path), X86_64_5LEVEL, b5.root, 0, TOP, record(ev5))
    assert len(ev5) == 512 and {d for *_, d in holes(ev5)} == {0}


def test_bad_pgd_entry_is_a_hole(tmp_path):
    """A 5-level pgd entry with stray flags (pgd_bad()) is reported as a depth-0 hole and not entered."""
    b = PageTableBuilder(X86_64_5LEVEL)
    b.map(0x1000, 0x1000, KB4, X86_P)
    b.set_entry(b.root, 0, b.entry(b.root, 0) | X86_G)
    ev: list = []
    walk_page_range_novma(b.memory(tmp_path), X86_64_5LEVEL, b.root, 0, 1 << 48, record(ev, "pgd", "pte"))
    assert ev == [("hole", 0, 1 << 48, 0)]


# -- leaves, non-present entries and walk->action -------------------------------------------------


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_leaf_pud_and_pmd_not_descended(tmp_path, mode):
    """A 1G leaf gets pud_entry but no pmd_entry; a 2M leaf gets pmd_entry but no pte_entry."""
    b = PageTableBuilder(mode)
    b.map(0x40000000, 0x80000000, GB1, X86_P)
    b.map(0x80000000, 0x200000, MB2, X86_P)
    ev: list = []
    ops = record(ev, "pud", "pmd", "pte", hole=False)
    walk_page_range_novma(b.memory(tmp_path), mode, b.root, GB1, 3 * GB1, ops)
    pud_table = b.entry(*b.slot(2 * GB1, len(mode.levels) - 3))
    assert named(ev, "pud") == [(GB1, 2 * GB1, 0x80000000 | X86_P | 0x80), (2 * GB1, 3 * GB1, pud_table)]
    # pmd_entry only under the table PUD (the other 511 PMDs are none), pte_entry nowhere.
    assert named(ev, "pmd") == [(2 * GB1, 2 * GB1 + MB2, 0x200000 | X86_P | 0x80)]
    assert named(ev, "pte") == []


def test_non_present_pmd_not_descended(tmp_path):
    """A non-none, non-leaf, non-present PMD gets pmd_entry but is not descended into."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x1000, 0x1000, KB4, X86_P)
    pmd_table, idx = b.slot(0x1000, 2)
    b.set_entry(pmd_table, idx, b.entry(pmd_table, idx) & ~X86_P)
    ev: list = []
    walk_page_range_novma(b.memory(tmp_path), X86_64_4LEVEL, b.root, 0, MB2, record(ev, "pmd", "pte"))
    kinds: list = []
    ops = WalkOps(pmd_entry=lambda e, va, n, w: kinds.append(w.kind), pte_entry=lambda *a: 0)
    walk_page_range_novma(b.memory(tmp_path), X86_64_4LEVEL, b.root, 0, MB2, ops)
    assert named(ev, "pmd") == [(0, MB2, b.entry(pmd_table, idx))]
    assert named(ev, "pte") == []
    assert kinds == [Kind.SKIP]


def test_action_continue_at_pmd_skips_pte_table(tmp_path):
    """pmd_entry setting ACTION_CONTINUE stops descent into that PMD's PTE table only."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x1000, 0x1000, KB4, X86_P)
    b.map(MB2, 0x2000, KB4, X86_P)

    def pmd_entry(entry, va, next_va, walk):
        if va == 0:
            walk.action = Action.CONTINUE
        return 0

    ev: list = []
    ops = record(ev, "pte", hole=False)
    ops.pmd_entry = pmd_entry
    walk_page_range_novma(b.memory(tmp_path), X86_64_4LEVEL, b.root, 0, 2 * MB2, ops)
    ptes = named(ev, "pte")
    assert len(ptes) == 512
    assert ptes[0][0] == MB2 and (MB2, MB2 + KB4, 0x2000 | X86_P) in ptes


def test_action_continue_at_pud_skips_pmd_table(tmp_path):
    """pud_entry setting ACTION_CONTINUE stops descent into the PMD table below it."""
    b = PageTableBuilder(X86_64_5LEVEL)
    b.map(0x1000, 0x1000, KB4, X86_P)
    ev: list = []
    ops = record(ev, "pmd", "pte", hole=False)
    ops.pud_entry = lambda e, va, n, w: setattr(w, "action", Action.CONTINUE)
    assert walk_page_range_novma(b.memory(tmp_path), X86_64_5LEVEL, b.root, 0, GB1, ops) == 0
    assert ev == []


def test_action_again_recalls_callback(tmp_path):
    """ACTION_AGAIN re-runs the slot: the callback is called again for the same entry, then descent goes on."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x1000, 0x1000, KB4, X86_P)
    calls: list = []

    def pmd_entry(entry, va, next_va, walk):
        calls.append((va, next_va, entry))
        walk.action = Action.AGAIN if len(calls) < 3 else Action.SUBTREE
        return 0

    ev: list = []
    ops = record(ev, "pte", hole=False)
    ops.pmd_entry = pmd_entry
    walk_page_range_novma(b.memory(tmp_path), X86_64_4LEVEL, b.root, 0, MB2, ops)
    pmd = b.entry(*b.slot(0, 2))
    assert calls == [(0, MB2, pmd)] * 3
    assert len(named(ev, "pte")) == 512


def test_action_again_from_pte_entry_reruns_pmd(tmp_path):
    """ACTION_AGAIN left by pte_entry makes the PMD loop re-evaluate the slot (walk_pmd_range(), v6.5+)."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x1000, 0x1000, KB4, X86_P)
    pmd_calls: list = []
    ptes: list = []

    def pte_entry(entry, va, next_va, walk):
        ptes.append(va)
        if len(ptes) == 512:
            walk.action = Action.AGAIN
        return 0

    ops = WalkOps(pmd_entry=lambda e, va, n, w: pmd_calls.append(va), pte_entry=pte_entry)
    walk_page_range_novma(b.memory(tmp_path), X86_64_4LEVEL, b.root, 0, MB2, ops)
    assert pmd_calls == [0, 0]
    assert len(ptes) == 1024


def test_action_again_forever_raises(tmp_path):
    """A callback that always asks ACTION_AGAIN raises PagewalkError instead of looping forever."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x1000, 0x1000, KB4, X86_P)
    calls: list = []

    def pud_entry(entry, va, next_va, walk):
        calls.append(va)
        walk.action = Action.AGAIN

    with pytest.raises(PagewalkError, match="ACTION_AGAIN"):
        walk_page_range_novma(b.memory(tmp_path), X86_64_4LEVEL, b.root, 0, GB1, WalkOps(pud_entry=pud_entry))
    assert len(calls) == AGAIN_LIMIT + 1


def test_action_continue_in_pgd_p4d_has_no_effect(tmp_path):
    """ACTION_CONTINUE set by pgd_entry or p4d_entry is ignored: the walk still descends to the PTEs."""
    b = PageTableBuilder(X86_64_5LEVEL)
    b.map(0x1000, 0x1000, KB4, X86_P)
    ev: list = []

    def cont(name, entry, va, walk):
        if name in ("pgd", "p4d"):
            walk.action = Action.CONTINUE
        return 0

    walk_page_range_novma(b.memory(tmp_path), X86_64_5LEVEL, b.root, 0, MB2, record(ev, "pgd", "p4d", "pte", result=cont))
    assert [e[0] for e in ev[:2]] == ["pgd", "p4d"]
    assert len(named(ev, "pte")) == 512
    assert (0x1000, 0x2000, 0x1000 | X86_P) in named(ev, "pte")


# -- return values -----------------------------------------------------------------------------


def test_nonzero_return_stops_walk(tmp_path):
    """A non-zero callback return stops every loop and is returned unchanged."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x1000, 0x1000, KB4, X86_P)
    b.map(GB1, 0x1000, KB4, X86_P)
    ev: list = []
    stop = lambda name, entry, va, walk: 7 if va == 0x2000 else 0  # noqa: E731
    mem = b.memory(tmp_path)
    assert walk_page_range_novma(mem, X86_64_4LEVEL, b.root, 0, TOP, record(ev, "pte", result=stop)) == 7
    assert ev[-1] == ("pte", 0x2000, 0x3000, 0)
    assert len(ev) == 3
    # A negative value from an upper level, and from pte_hole, are returned the same way.
    neg = lambda name, entry, va, walk: -5  # noqa: E731
    assert walk_page_range_novma(mem, X86_64_4LEVEL, b.root, 0, TOP, record([], "pud", "pte", result=neg)) == -5
    stop_hole = WalkOps(pte_hole=lambda va, n, d, w: 3 if d == 0 else 0, pte_entry=lambda *a: 0)
    assert walk_page_range_novma(mem, X86_64_4LEVEL, b.root, 0, TOP, stop_hole) == 3


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_start_not_below_end_is_einval(tmp_path, mode):
    """start >= end returns -EINVAL (-22) without calling anything."""
    b = PageTableBuilder(mode)
    ev: list = []
    mem = b.memory(tmp_path)
    assert walk_page_range_novma(mem, mode, b.root, 0x2000, 0x2000, record(ev, "pte")) == -22
    assert walk_page_range_novma(mem, mode, b.root, 0x3000, 0x2000, record(ev, "pte")) == -22
    assert walk_page_range(mem, mode, b.root, [Vma(0, 0x10000)], 0x5000, 0x1000, record(ev, "pte")) == -22
    assert ev == []


# -- the PTE loop --------------------------------------------------------------------------------


def test_pte_entry_called_for_every_slot(tmp_path):
    """pte_entry is called for every slot of a PTE table, zero entries included, with consecutive ranges."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x5000, 0x9000, KB4, X86_P | X86_RW)
    ev: list = []
    walk_page_range_novma(b.memory(tmp_path), X86_64_4LEVEL, b.root, 0, MB2, record(ev, "pte"))
    ptes = named(ev, "pte")
    assert [(va, n) for va, n, _ in ptes] == [(i * KB4, (i + 1) * KB4) for i in range(512)]
    assert [e for *_, e in ptes if e] == [0x9000 | X86_P | X86_RW]
    assert holes(ev) == []  # the PTE level never reports holes


@pytest.mark.parametrize("end", [TOP, ULONG_MAX], ids=["2**64", "ULONG_MAX"])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_walk_to_top_terminates(tmp_path, mode, end):
    """A walk ending at the top of the address space ends after the last page, whose next wraps to 0."""
    b = PageTableBuilder(mode)
    b.map(TOP - KB4, 0x7000, KB4, X86_P)
    ev: list = []
    assert walk_page_range_novma(b.memory(tmp_path), mode, b.root, TOP - MB2, end, record(ev, "pte")) == 0
    ptes = named(ev, "pte")
    assert len(ptes) == 512
    assert ptes[-1] == (TOP - KB4, 0, 0x7000 | X86_P)
    assert ptes[0][0] == TOP - MB2


def test_non_canonical_gap_is_not_walked(tmp_path):
    """Only canonical addresses are walked: the x86-64 hole between the halves produces no callback."""
    b = PageTableBuilder(X86_64_4LEVEL)
    ev: list = []
    mem = b.memory(tmp_path)
    assert walk_page_range_novma(mem, X86_64_4LEVEL, b.root, 1 << 47, TOP - (1 << 47), record(ev, "pmd")) == 0
    assert ev == []
    walk_page_range_novma(mem, X86_64_4LEVEL, b.root, (1 << 47) - (1 << 39), TOP - (1 << 47) + (1 << 39), record(ev, "pmd"))
    assert holes(ev) == [((1 << 47) - (1 << 39), 1 << 47, 0), (TOP - (1 << 47), TOP - (1 << 47) + (1 << 39), 0)]


# -- where entries live, missing tables ---------------------------------------------------------------


def test_callbacks_see_entry_location(tmp_path):
    """walk.table_pa / index / entry_pa point at the entry the callback got, on every level."""
    b = PageTableBuilder(X86_64_5LEVEL)
    b.map(KERNEL_TEXT, 0x1000000, KB4, X86_P)
    seen: dict = {}

    def cb(name):
        def f(entry, va, next_va, walk):
            if va == KERNEL_TEXT:
                seen[name] = (walk.table_pa, walk.index, walk.entry_pa, walk.depth, walk.hw_level, entry)

        return f

    ops = WalkOps(**{f"{n}_entry": cb(n) for n in LEVEL_NAMES})
    walk_page_range_novma(b.memory(tmp_path), X86_64_5LEVEL, b.root, KERNEL_TEXT, KERNEL_TEXT + MB2, ops)
    for level, name in enumerate(LEVEL_NAMES):
        table, idx = b.slot(KERNEL_TEXT, level)
        assert seen[name] == (table, idx, table + 8 * idx, level, level, b.entry(table, idx))


def test_missing_table_reported_and_walk_continues(tmp_path):
    """A table the image does not hold goes to table_missing (or pte_hole, depth of its level) and the walk goes on."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x1000, 0x1000, KB4, X86_P)
    b.map(MB2, 0x2000, KB4, X86_P)
    pmd_table, idx = b.slot(0, 2)
    b.set_entry(pmd_table, idx, 0x7F000000 | X86_TABLE_FLAGS)  # PTE table far outside the image
    mem = b.memory(tmp_path)
    missing: list = []
    ev: list = []
    ops = record(ev, "pte")
    ops.table_missing = lambda pa, va, n, depth, w: missing.append((pa, va, n, depth)) or 0
    assert walk_page_range_novma(mem, X86_64_4LEVEL, b.root, 0, 2 * MB2, ops) == 0
    assert missing == [(0x7F000000, 0, MB2, 4)]
    assert len(named(ev, "pte")) == 512 and named(ev, "pte")[0][0] == MB2
    ev2: list = []
    walk_page_range_novma(mem, X86_64_4LEVEL, b.root, 0, 2 * MB2, record(ev2, "pte"))
    assert holes(ev2) == [(0, MB2, 4)]
    assert len(named(ev2, "pte")) == 512
    # A missing root is one hole per canonical half, at depth 0.
    ev3: list = []
    assert walk_page_range_novma(mem, X86_64_4LEVEL, 0x7F000000, 0, TOP, record(ev3, "pte")) == 0
    assert ev3 == [("hole", 0, 1 << 47, 0), ("hole", TOP - (1 << 47), 0, 0)]


def test_self_referencing_table_terminates(tmp_path):
    """A PMD entry pointing back at its own table is walked as a PTE table once and the walk ends."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x1000, 0x1000, KB4, X86_P)
    pmd_table, idx = b.slot(0, 2)
    b.set_entry(pmd_table, idx, pmd_table | X86_TABLE_FLAGS)
    ev: list = []
    walk_page_range_novma(b.memory(tmp_path), X86_64_4LEVEL, b.root, 0, GB1, record(ev, "pte"))
    ptes = named(ev, "pte")
    assert len(ptes) == 512
    assert ptes[0] == (0, KB4, pmd_table | X86_TABLE_FLAGS)
    assert len(holes(ev)) == 511


# -- walk_page_range with VMAs --------------------------------------------------------------------


def test_walk_page_range_holes_outside_vmas(tmp_path):
    """Outside VMAs pte_hole(start, next, -1) is called without reading any table."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x400000, 0x1000, KB4, X86_P)
    mem = b.memory(tmp_path)
    ev: list = []
    vmas = [Vma(0x400000, 0x402000), Vma(0x600000, 0x601000)]
    assert walk_page_range(mem, X86_64_4LEVEL, b.root, vmas, 0x1000, 0x800000, record(ev, "pte")) == 0
    assert ev == [
        ("hole", 0x1000, 0x400000, -1),
        ("pte", 0x400000, 0x401000, 0x1000 | X86_P),
        ("pte", 0x401000, 0x402000, 0),
        ("hole", 0x402000, 0x600000, -1),
        ("hole", 0x600000, 0x601000, 3),  # inside the VMA: a none PMD, reported by the walk
        ("hole", 0x601000, 0x800000, -1),
    ]
    # With a root the image does not hold, areas outside VMAs still never touch the tables.
    missing: list = []
    ev2: list = []
    ops = record(ev2, "pte")
    ops.table_missing = lambda *a: missing.append(a[:4]) or 0
    assert walk_page_range(mem, X86_64_4LEVEL, 0x7F000000, [], 0, 1 << 47, ops) == 0
    assert ev2 == [("hole", 0, 1 << 47, -1)]
    assert missing == []


def test_walk_page_range_second_vma_walks_tables(tmp_path):
    """Inside a VMA the tables are walked as in a no-VMA walk, clipped to the VMA."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x600000, 0x3000, KB4, X86_P)
    ev: list = []
    walk_page_range(b.memory(tmp_path), X86_64_4LEVEL, b.root, [Vma(0x600000, 0x602000)], 0, 0x700000, record(ev, "pte"))
    assert ev == [
        ("hole", 0, 0x600000, -1),
        ("pte", 0x600000, 0x601000, 0x3000 | X86_P),
        ("pte", 0x601000, 0x602000, 0),
        ("hole", 0x602000, 0x700000, -1),
    ]


def test_test_walk_skips_and_aborts(tmp_path):
    """test_walk > 0 skips the VMA (and is not returned), < 0 aborts the walk with that value."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x400000, 0x1000, KB4, X86_P)
    b.map(0x600000, 0x2000, KB4, X86_P)
    mem = b.memory(tmp_path)
    vmas = [Vma(0x400000, 0x401000, flags=1), Vma(0x600000, 0x601000, flags=2)]
    ev: list = []
    ops = record(ev, "pte", hole=False)
    ops.test_walk = lambda s, e, w: 1 if w.vma.flags == 1 else 0
    assert walk_page_range(mem, X86_64_4LEVEL, b.root, vmas, 0, 1 << 47, ops) == 0
    assert ev == [("pte", 0x600000, 0x601000, 0x2000 | X86_P)]
    ev.clear()
    ops.test_walk = lambda s, e, w: -14 if w.vma.flags == 1 else 0
    assert walk_page_range(mem, X86_64_4LEVEL, b.root, vmas, 0, 1 << 47, ops) == -14
    assert ev == []


def test_pfnmap_vma_is_a_hole(tmp_path):
    """Without test_walk a VM_PFNMAP VMA is skipped after one pte_hole(start, end, -1)."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x400000, 0x1000, KB4, X86_P)
    ev: list = []
    vmas = [Vma(0x400000, 0x402000, VM_PFNMAP)]
    assert walk_page_range(b.memory(tmp_path), X86_64_4LEVEL, b.root, vmas, 0x400000, 0x403000, record(ev, "pte")) == 0
    assert ev == [("hole", 0x400000, 0x402000, -1), ("hole", 0x402000, 0x403000, -1)]


def test_pre_vma_error_aborts_and_post_vma_is_called(tmp_path):
    """pre_vma's error aborts before the VMA is walked; post_vma follows every walked VMA, even a failed one."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x400000, 0x1000, KB4, X86_P)
    mem = b.memory(tmp_path)
    vmas = [Vma(0x400000, 0x401000), Vma(0x500000, 0x501000), Vma(0x600000, 0x601000)]
    log: list = []
    ops = WalkOps(
        pre_vma=lambda s, e, w: log.append(("pre", s, e)) or (-12 if s == 0x600000 else 0),
        post_vma=lambda w: log.append(("post", w.vma.start)),
        pte_entry=lambda e, va, n, w: log.append(("pte", va)) or 0,
    )
    assert walk_page_range(mem, X86_64_4LEVEL, b.root, vmas, 0, 1 << 47, ops) == -12
    assert log == [
        ("pre", 0x400000, 0x401000),
        ("pte", 0x400000),
        ("post", 0x400000),
        ("pre", 0x500000, 0x501000),
        ("pte", 0x500000),
        ("post", 0x500000),
        ("pre", 0x600000, 0x601000),
    ]
    log.clear()
    ops.pre_vma = None
    ops.pte_entry = lambda e, va, n, w: log.append(("pte", va)) or 9
    assert walk_page_range(mem, X86_64_4LEVEL, b.root, vmas, 0, 1 << 47, ops) == 9
    assert log == [("pte", 0x400000), ("post", 0x400000)]


# -- property: the walk reports exactly what was mapped --------------------------------------------

_REGIONS = (0, 0x7FFF00000000, 0xFFFF888000000000, KERNEL_TEXT & ~(GB1 - 1))
_FLAGS = st.sets(st.sampled_from([X86_RW, X86_US, X86_G, X86_NX])).map(lambda s: X86_P | sum(s))


@st.composite
def mapping_requests(draw):
    mode = draw(st.sampled_from(MODES))
    n = draw(st.integers(1, 8))
    reqs = []
    for _ in range(n):
        size = draw(st.sampled_from([KB4, MB2, GB1]))
        region = draw(st.sampled_from(_REGIONS))
        va = region + draw(st.integers(0, 4)) * GB1 + draw(st.integers(0, (GB1 // size) - 1)) * size
        pa = draw(st.integers(0, (1 << 40) // size - 1)) * size
        reqs.append((va, pa, size, draw(_FLAGS)))
    return mode, reqs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mapping_requests())
def test_walk_reports_exactly_the_mapped_leaves(case):
    """For random mappings, the leaves pud/pmd/pte_entry see are exactly the (va, entry) pairs mapped."""
    mode, reqs = case
    b = PageTableBuilder(mode)
    for va, pa, size, flags in reqs:
        try:
            b.map(va, pa, size, flags)
        except ValueError:
            pass  # overlaps an earlier mapping
    leaves: set = set()

    def leaf(entry, va, next_va, walk):
        if walk.kind == Kind.LEAF and entry:
            assert (va, entry) not in leaves
            leaves.add((va, entry))
        return 0

    ops = WalkOps(pud_entry=leaf, pmd_entry=leaf, pte_entry=leaf)
    with tempfile.TemporaryDirectory() as d, b.memory(d) as mem:
        assert walk_page_range_novma(mem, mode, b.root, 0, TOP, ops) == 0
    assert leaves == {(m.va, m.entry) for m in b.mappings}


# -- modes whose VAs do not start at 0 -------------------------------------------------------------


def test_ttbr1_mode_walks_at_its_own_vas(tmp_path):
    """An arm64 TTBR1 table (VAs from 2^64 - 2^39) is walked at those VAs, not at offsets from 0."""
    import builders_arm64  # noqa: F401  (registers the arm64 entry formats)

    from pagewalk.arch.arm64 import make_mode

    mode = make_mode(4096, 39, upper=True)
    b = PageTableBuilder(mode)
    va = (1 << 64) - (1 << 39) + 0x4020_3000
    b.map(va, 0x8000_0000, KB4, builders_arm64.KERNEL_RW)
    ev: list = []
    assert walk_page_range_novma(b.memory(tmp_path), mode, b.root, 0, TOP, record(ev, "pte", hole=False)) == 0
    assert [e[:2] for e in named(ev, "pte") if e[2] & 1] == [(va, va + KB4)]


def test_windowed_mips_mode_walks_each_window(tmp_path):
    """A mips64 PGD's last entries map CKSSEG (0xffffffffc0000000): the walker reaches it there, after XKSEG."""
    import builders_mips  # noqa: F401  (registers the mips64 entry formats)

    from pagewalk.arch import mips

    mode = mips.make_mode("4k")
    b = PageTableBuilder(mode, base=0x100000)
    vmalloc_va, module_va = 0xC000_0000_0000_4000, 0xFFFF_FFFF_C000_2000
    for va, pa in ((vmalloc_va, 0x200000), (module_va, 0x300000)):
        b.map(va, pa, KB4, builders_mips.M_KERNEL)
    ev: list = []
    assert walk_page_range_novma(b.memory(tmp_path), mode, b.root, 0, TOP, record(ev, "pte", hole=False)) == 0
    assert [e[0] for e in named(ev, "pte") if e[2] & builders_mips.M_P] == [vmalloc_va, module_va]
