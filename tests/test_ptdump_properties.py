"""ptdump against a per-entry reference: the kernel's mm/ptdump.c rebuilt on walk.py.

`reference_ptdump()` below is mm/ptdump.c (v5.8+, spec §2.2/§2.3) written on top of
`walk_page_range_novma()`: every p?d_entry callback calls effective_prot() and notes leaves,
pte_entry notes every slot, pte_hole notes (addr, depth, 0), each of `layout.ranges()` is
walked, then the state is flushed. It feeds pagewalk's `X86State` (the x86 note_page()) one
event per entry, exactly as the kernel does. The fast paths (`format_fast` over `root_runs`, and
`drive` over the same runs, and `format_fast` over `iter_runs` chunks) must produce the same text
and the same W+X verdict; so must the compiled path (`ptdump.x86_compiled`).
"""

from __future__ import annotations

import io
import tempfile
import time

import numpy as np
import pytest
from builders import X86_A, X86_D, X86_G, X86_NX, X86_P, X86_PCD, X86_PSE, X86_PWT, X86_RW, X86_US, PageTableBuilder
from conftest import FIXTURES, X86_64_CASES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagewalk import open_image
from pagewalk.arch.x86 import PTE_FLAGS_MASK, X86_64_4LEVEL, X86_64_5LEVEL
from pagewalk.mode import Kind
from pagewalk.ptdump import x86_compiled
from pagewalk.ptdump.core import drive
from pagewalk.ptdump.x86 import Layout, X86State, format_fast
from pagewalk.runs import discover, iter_runs, root_runs
from pagewalk.target import read_kallsyms, resolve
from pagewalk.walk import WalkOps, walk_page_range_novma

TOP = 1 << 64
KB4, MB2, GB1 = 4096, 2 << 20, 1 << 30
X86_PAT_LARGE = 1 << 12
_USER_RW = X86_US | X86_RW


# -- the per-entry reference -----------------------------------------------------------------------


class Reference:
    """mm/ptdump.c's callbacks (v5.8+: effective_prot before the leaf test) driving an X86State."""

    def __init__(self, mode, layout: Layout, out, check_wx: bool) -> None:
        self.mode = mode
        self.st = X86State(layout, out, check_wx=check_wx)
        self.prot_levels = [0] * 5  # struct pg_state.prot_levels[]
        self.events = 0
        self.first_event: list[int | None] = []  # per range walked: address of its first note_page()
        self.missing: list[int] = []  # tables the image does not hold (pagewalk's, not the kernel's)
        self.addrs: set[int] = set()  # every address a note_page() was made for
        self.skips: list[tuple[int, int]] = []  # [addr, next) of PUD/PMD entries that make no event

    # arch/x86/mm/dump_pagetables.c, effective_prot() (v5.8+)
    def effective_prot(self, level: int, val: int) -> None:
        prot = val & PTE_FLAGS_MASK
        if level > 0:
            higher = self.prot_levels[level - 1]
            eff = (higher & prot & _USER_RW) | ((higher | prot) & X86_NX)
        else:
            eff = prot
        self.prot_levels[level] = eff

    # arch/x86/mm/dump_pagetables.c, note_page(): new_eff = val ? prot_levels[level] : 0
    def note_page(self, addr: int, level: int, val: int) -> None:
        self.events += 1
        if self.first_event and self.first_event[-1] is None:
            self.first_event[-1] = addr
        self.addrs.add(addr)
        new_eff = self.prot_levels[level] if val else 0
        self.st.note(addr, level, val, val & PTE_FLAGS_MASK, new_eff)

    def _kind(self, level: int, val: int, walk) -> Kind:
        """mode.classify() at the level the mode names; Kind.TABLE on folded levels (p?d_leaf() 0)."""
        if self.mode.levels[walk.hw_level].klevel != level:
            return Kind.TABLE
        kind, _ = self.mode.classify(walk.hw_level, np.array([val], dtype=np.uint64))
        return Kind(int(kind[0]))

    def _entry(self, level: int):
        def cb(val: int, addr: int, next_addr: int, walk) -> int:
            self.effective_prot(level, val)
            kind = Kind.LEAF if level == 4 else self._kind(level, val, walk)
            if kind == Kind.LEAF:  # p?d_leaf(): note it; the walker will not descend
                self.note_page(addr, level, val)
            elif kind == Kind.SKIP:  # !p?d_present(), not a leaf: no event, no descent
                self.skips.append((addr, next_addr or TOP))
            return 0

        return cb

    def ops(self) -> WalkOps:
        return WalkOps(
            pgd_entry=self._entry(0),
            p4d_entry=self._entry(1),
            pud_entry=self._entry(2),
            pmd_entry=self._entry(3),
            pte_entry=self._entry(4),
            pte_hole=lambda addr, next_addr, depth, walk: self.note_page(addr, depth, 0),
            table_missing=lambda pa, addr, next_addr, depth, walk: self.missing.append(pa),
        )


def reference_ptdump(mem, mode, root: int, layout: Layout, check_wx: bool = True) -> tuple[str, X86State, Reference]:
    """ptdump_walk_pgd(): walk every range of `layout` per entry, then flush. (text, state, reference)."""
    out = io.StringIO()
    ref = Reference(mode, layout, out, check_wx)
    ops = ref.ops()
    for start, end in layout.ranges():
        ref.first_event.append(None)
        walk_page_range_novma(mem, mode, root, start, end, ops)
    ref.st.flush()  # note_page(st, 0, -1, 0)
    return out.getvalue(), ref.st, ref


def fast_ptdump(mem, mode, root: int, layout: Layout) -> tuple[str, X86State, object]:
    """What the CLI does: root_runs() then format_fast()."""
    runs = root_runs(mem, mode, root)
    out = io.StringIO()
    st = format_fast(mode, runs, layout, out, check_wx=True)
    return out.getvalue(), st, runs


class RecordingState(X86State):
    """X86State that remembers the address of every note_page() it gets (the flush excepted)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.addrs: list[int] = []

    def note(self, va: int, level: int, val: int, key: int, eff: int) -> None:
        if level != -1:
            self.addrs.append(va)
        super().note(va, level, val, key, eff)


def drive_ptdump(mode, runs, layout: Layout) -> tuple[str, RecordingState]:
    out = io.StringIO()
    st = RecordingState(layout, out, check_wx=True)
    drive(st, mode, runs, layout.ranges())
    return out.getvalue(), st


def assert_all_agree(mem, mode, root: int, layout: Layout) -> tuple[str, object]:
    """Reference, drive() and format_fast() give the same text, W+X pages and W+X ranges."""
    ref_text, ref_st, ref = reference_ptdump(mem, mode, root, layout)
    fast_text, fast_st, runs = fast_ptdump(mem, mode, root, layout)
    drv_text, drv_st = drive_ptdump(mode, runs, layout)
    # the compiled path (pagewalk._x86dump), which dump/checkwx use when it is built
    if x86_compiled.available(mode, layout):  # x86-64 (i386 stays on the numpy path)
        out = io.StringIO()
        c_st = x86_compiled.run(mem, mode, root, layout, out)
        assert out.getvalue() == fast_text and c_st.ranges_written == fast_st.ranges_written
        c_st = x86_compiled.run(mem, mode, root, layout, None, check_wx=True)
        assert (c_st.wx_pages, c_st.wx_ranges) == (fast_st.wx_pages, fast_st.wx_ranges)
    if ref.missing:
        # a random table entry points outside the image: the kernel would read whatever memory is
        # there; runs.py prints a "[table ... not in image]" line, the reference has no equivalent
        return ref_text, runs
    assert drv_text.splitlines() == ref_text.splitlines()
    assert drv_st.wx_pages == ref_st.wx_pages and drv_st.wx_ranges == ref_st.wx_ranges
    # drive() feeds fewer events (one per run), but only where the kernel makes one too
    assert set(drv_st.addrs) <= ref.addrs
    assert fast_text.splitlines() == ref_text.splitlines()
    assert fast_st.wx_pages == ref_st.wx_pages
    assert fast_st.wx_ranges == ref_st.wx_ranges
    # the CLI's path: iter_runs() chunks (small here, so runs and markers cross chunk boundaries)
    out = io.StringIO()
    str_st = format_fast(mode, iter_runs(mem, mode, root, chunk_runs=64), layout, out, check_wx=True)
    assert out.getvalue() == fast_text
    assert (str_st.wx_pages, str_st.wx_ranges) == (fast_st.wx_pages, fast_st.wx_ranges)
    return ref_text, runs


# -- random page tables --------------------------------------------------------------------------


def anchors(mode, layout: Layout) -> list[int]:
    """VAs where interesting things are: the ends of both halves, the guard hole, every marker."""
    half = 1 << (mode.va_bits - 1)
    high = TOP - half
    pts = [0, half - GB1, half - KB4, high, layout.ranges()[1][0], TOP - GB1, TOP - KB4]
    pts += [m[0] for m in layout.markers()[1:-1]]
    return sorted({a for a in pts if mode.is_canonical(a)})


N_ANCHORS = 24  # more than any layout has; taken modulo the real count
_FLAG_BITS = [X86_RW, X86_US, X86_PWT, X86_PCD, X86_A, X86_D, X86_G, 1 << 9, 1 << 10, 1 << 11, 1 << 58,
              1 << 59, 1 << 61, X86_NX, X86_NX, X86_RW]
flags_st = st.tuples(st.integers(0, 9), st.lists(st.sampled_from(_FLAG_BITS), max_size=6), st.booleans()).map(
    lambda t: ((X86_P if t[0] else 0) | sum(set(t[1])), t[2])  # (flags, PAT wanted: bit placed by size)
)
anchor_st = st.integers(0, N_ANCHORS - 1)
delta_st = st.integers(-3, 3)

op_st = st.one_of(
    st.tuples(st.just("map"), anchor_st, delta_st, st.sampled_from([KB4, KB4, MB2, MB2, GB1]), flags_st,
              st.integers(0, 1 << 16)),
    st.tuples(st.just("stripe"), anchor_st, st.integers(-40, 40), st.integers(2, 40), flags_st, flags_st),
    st.tuples(st.just("np_pte"), anchor_st, st.integers(-8, 8), st.integers(1, (1 << 63) - 1)),
    st.tuples(st.just("pmd_raw"), anchor_st, delta_st, st.sampled_from(["ad_none", "protnone", "np_leaf", "skip", "pud_skip"])),
    # SKIP entries next to the anchors too, not only on them
    st.tuples(st.just("pmd_raw"), anchor_st, st.sampled_from([-3, -2, -1, 1, 2, 3]), st.sampled_from(["skip", "pud_skip"])),
    st.tuples(st.just("shared"), anchor_st, st.integers(-4, 4), st.integers(1, 6)),
    st.tuples(st.just("loop"), anchor_st, delta_st, st.sampled_from(["pmd->pud", "pmd->self", "pmd->root", "pud->root"])),
    st.tuples(st.just("perm"), anchor_st, delta_st, st.integers(0, 3), st.sampled_from([~X86_RW, ~X86_US, X86_NX, X86_G, ~X86_P])),
)
shared_st = st.lists(st.tuples(st.integers(1, 200), flags_st), min_size=1, max_size=4)


def leaf_flags(flags: tuple[int, bool], size: int) -> int:
    """Flags for a leaf of `size`: PAT is bit 7 in a PTE, bit 12 in a 2M/1G leaf."""
    bits, pat = flags
    return bits | (0 if not pat else X86_PSE if size == KB4 else X86_PAT_LARGE)


def _va(mode, anchor: int, delta: int, size: int) -> int | None:
    va = (anchor & ~(size - 1)) + delta * size
    if not 0 <= va < TOP or not mode.is_canonical(va):
        return None
    return va


def build_random(mode, layout: Layout, ops: list, shared_spec: list) -> PageTableBuilder:
    """Apply `ops` to a PageTableBuilder; an op that conflicts with the tables so far is skipped."""
    b = PageTableBuilder(mode)
    nlev = len(mode.levels)
    pte_l, pmd_l, pud_l = nlev - 1, nlev - 2, nlev - 3
    ach = anchors(mode, layout)
    shared = None
    for op in ops:
        kind, a = op[0], ach[op[1] % len(ach)]
        try:
            if kind == "map":
                _, _, delta, size, flags, pa_i = op
                va = _va(mode, a, delta, size)
                if va is not None:
                    b.map(va, (pa_i * size) % (1 << 46), size, leaf_flags(flags, size))
            elif kind == "stripe":  # many 4K pages with alternating flags: many lines (ESPfix max_lines)
                _, _, start, n, fa, fb = op
                for k in range(n):
                    va = _va(mode, a, start + k, KB4)
                    if va is not None:
                        try:
                            b.map(va, (0x100000 + k) * KB4, KB4, leaf_flags(fa if k % 2 else fb, KB4))
                        except ValueError:
                            pass
            elif kind == "np_pte":  # a non-present but non-zero PTE (swap entry, PROT_NONE...)
                _, _, delta, value = op
                va = _va(mode, a, delta, KB4)
                if va is not None:
                    t, i = b.slot(va, pte_l, create=True)
                    if b.entry(t, i) == 0:
                        b.set_entry(t, i, value & ~X86_P)
            elif kind == "pmd_raw":
                _, _, delta, what = op
                va = _va(mode, a, delta, MB2)
                if va is not None:
                    t, i = b.slot(va, pmd_l, create=True)
                    e = b.entry(t, i)
                    if what == "ad_none" and e == 0:  # pmd_none() ignores A and D
                        b.set_entry(t, i, X86_A | X86_D)
                    elif what == "skip":  # not none, not present, not a leaf: no event at all
                        b.set_entry(t, i, (e or 0x5000 | X86_RW | X86_US) & ~X86_P & ~X86_PSE & ~X86_G)
                    elif what == "pud_skip":
                        t, i = b.slot(va, pud_l)
                        e = b.entry(t, i)
                        b.set_entry(t, i, (e or 0x5000 | X86_RW) & ~X86_P & ~X86_PSE)
                    elif what == "protnone" and e and not e & X86_PSE:  # PROT_NONE: still walked
                        b.set_entry(t, i, (e & ~X86_P) | X86_G)
                    elif what == "np_leaf" and e == 0:  # PSE without P: pmd_leaf(), noted
                        b.set_entry(t, i, 0x40000000 | X86_PSE | X86_RW)
            elif kind == "shared":  # several PMD entries -> one PTE table (KASAN early shadow shape)
                _, _, delta, count = op
                if shared is None:
                    shared = b.alloc_table()
                    pos = 0
                    for n, fl in shared_spec:
                        for k in range(pos, min(512, pos + n)):
                            b.set_entry(shared, k, 0x200000 + k * KB4 | leaf_flags(fl, KB4))
                        pos += n
                for k in range(count):
                    va = _va(mode, a, delta + k, MB2)
                    if va is None:
                        continue
                    t, i = b.slot(va, pmd_l, create=True)
                    if b.entry(t, i) == 0:
                        b.set_entry(t, i, b.make_table_entry(shared))
            elif kind == "loop":  # an entry pointing back up: read as a lower-level table
                _, _, delta, what = op
                va = _va(mode, a, delta, MB2)
                if va is not None:
                    if what == "pud->root":
                        t, i = b.slot(va, pud_l, create=True)
                        target = b.root
                    else:
                        t, i = b.slot(va, pmd_l, create=True)
                        target = {"pmd->pud": b.slot(va, pud_l)[0], "pmd->self": t, "pmd->root": b.root}[what]
                    if b.entry(t, i) == 0:
                        b.set_entry(t, i, b.make_table_entry(target))
            elif kind == "perm":  # upper-level permissions: RO, supervisor, NX, or a stray bit (pgd_bad)
                _, _, delta, level, m = op
                level = level % (nlev - 1)
                va = _va(mode, a, delta, MB2)
                if va is not None:
                    t, i = b.slot(va, level)
                    e = b.entry(t, i)
                    if e and not e & X86_PSE:
                        b.set_entry(t, i, (e & m) if m < 0 else (e | m))
        except (ValueError, KeyError):
            pass
    return b


layout_st = st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans())


def make_layout(mode, opts) -> Layout:
    ldt, espfix, efi, kaslr = opts
    lay = Layout(l5=mode is X86_64_5LEVEL, ldt=ldt, espfix=espfix, efi=efi)
    if kaslr:  # KASLR moves the bases by whole PUDs (kernel_randomize_memory())
        lay.page_offset += 3 * GB1
        lay.vmalloc_start += 517 * GB1
        lay.vmemmap_start += 7 * GB1
    return lay


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    mode=st.sampled_from([X86_64_4LEVEL, X86_64_5LEVEL]),
    opts=layout_st,
    ops=st.lists(op_st, min_size=1, max_size=12),
    shared_spec=shared_st,
)
def test_random_tables_reference_equals_fast_and_drive(mode, opts, ops, shared_spec):
    """For random 4/5-level tables the per-entry kernel ptdump, drive(X86State) and format_fast agree on text and W+X."""
    layout = make_layout(mode, opts)
    b = build_random(mode, layout, ops, shared_spec)
    with tempfile.TemporaryDirectory() as d:
        mem = b.memory(d)
        assert_all_agree(mem, mode, b.root, layout)
        mem.close()


def test_espfix_skipped_lines_agree(tmp_path):
    """More than 16 lines in the ESPfix area: the kernel's "... N entries skipped ..." appears identically everywhere."""
    mode = X86_64_4LEVEL
    layout = Layout(l5=False)
    b = PageTableBuilder(mode)
    espfix = 0xFFFFFF0000000000
    for k in range(40):
        b.map(espfix + k * KB4, 0x100000 + k * KB4, KB4, X86_P | (X86_RW if k % 2 else X86_NX))
    # Without an event at or after the EFI marker the ESPfix area never closes: the kernel then
    # prints neither the EFI header nor the skipped count. A mapping in the last PGD slot gives one.
    b.map(0xFFFFFFFF80000000, 0x1000000, MB2, X86_P | X86_G)
    text, _ = assert_all_agree(b.memory(tmp_path), mode, b.root, layout)
    # 40 pages, then the PTE, PMD and PUD holes up to the EFI marker: 43 lines, 16 shown
    assert "... 27 entries skipped ... \n---[ EFI Runtime Services ]---\n" in text


# -- real kernel captures ------------------------------------------------------------------------


def _target(case):
    path = FIXTURES / "x86_64" / case
    return resolve(open_image(str(path / "core.elf")), kallsyms=read_kallsyms(str(path / "kallsyms.txt")))


@pytest.mark.parametrize("case", X86_64_CASES)
def test_reference_on_fixture_equals_kernel_text(case):
    """The per-entry reference over a real capture prints the kernel's own page_tables/kernel text, as does format_fast."""
    t = _target(case)
    root = t.root("kernel")
    t0 = time.perf_counter()
    ref_text, ref_st, ref = reference_ptdump(t.mem, t.mode, root, t.layout)
    events = ref.events
    assert not ref.missing
    elapsed = time.perf_counter() - t0
    expected = (FIXTURES / "x86_64" / case / "ptdump_kernel.txt").read_text()
    assert ref_text.splitlines() == expected.splitlines()
    fast_text, fast_st, _ = fast_ptdump(t.mem, t.mode, root, t.layout)
    assert fast_text == ref_text
    assert fast_st.wx_pages == ref_st.wx_pages and fast_st.wx_ranges == ref_st.wx_ranges
    assert elapsed < 20, f"per-entry walk of {case} took {elapsed:.1f}s ({events} note_page calls)"


@pytest.mark.parametrize("view", ["current_kernel", "current_user"])
def test_reference_on_process_tables_equals_fast(view):
    """A process's PGD (user half populated) and its PTI user copy: per-entry reference, drive and format_fast agree."""
    t = _target("6.12-kaslr-4level-pti")
    assert t.pti
    text, _ = assert_all_agree(t.mem, t.mode, t.root(view), t.layout)
    assert "USR" in text


# -- one table referenced 100 000 times ----------------------------------------------------------

VMALLOC_4L = 0xFFFFC90000000000  # VMALLOC_START, 4-level, no KASLR: top-level slot 402
N_PUD = 200
PTE_FLAGS = X86_P | X86_RW | X86_G | X86_NX


def _shared_pte_table(b: PageTableBuilder) -> int:
    pte = b.alloc_table()
    for k in range(512):  # same flags everywhere, different PFNs: one run
        b.set_entry(pte, k, (0x10000000 + k * KB4) | PTE_FLAGS)
    return pte


def _build_shared(distinct_pmd_tables: bool) -> PageTableBuilder:
    """PUD entries 0..199 under VMALLOC_START -> PMD tables whose entries 0..510 -> one PTE table."""
    b = PageTableBuilder(X86_64_4LEVEL)
    pte = _shared_pte_table(b)
    pud = b.alloc_table()
    b.set_entry(b.root, 402, b.make_table_entry(pud))
    one_pmd = None
    for p in range(N_PUD):
        if distinct_pmd_tables or one_pmd is None:
            pmd = b.alloc_table()
            for k in range(511):  # entry 511 stays none: a 2M hole per GiB
                b.set_entry(pmd, k, b.make_table_entry(pte))
            one_pmd = pmd
        b.set_entry(pud, p, b.make_table_entry(one_pmd))
    return b


def _expected_shared_text() -> list[str]:
    """The dump of `_build_shared`, written from the structure and the kernel's note_page() rules."""

    def line(s, e, size, text):  # "0x%016lx-0x%016lx   %9lu%c " + printk_prot()
        return f"0x{s:016x}-0x{e:016x}   {size[:-1]:>9}{size[-1]} {text}"

    hole = " " * 30
    lines = [
        "---[ User Space ]---",
        line(0, 0xFFFF880000000000, "16777096T", hole + "pgd"),
        "---[ Kernel Space ]---",
        line(0xFFFF880000000000, 0xFFFF888000000000, "512G", hole + "pgd"),
        "---[ LDT remap ]---",
        line(0xFFFF888000000000, 0xFFFF890000000000, "512G", hole + "pgd"),
        "---[ Low Kernel Mapping ]---",
        line(0xFFFF890000000000, VMALLOC_4L, "64T", hole + "pgd"),
        "---[ vmalloc() Area ]---",
    ]
    present = "    RW                 GLB NX pte"
    for p in range(N_PUD):
        va = VMALLOC_4L + p * GB1
        lines.append(line(va, va + GB1 - MB2, "1022M", present))
        lines.append(line(va + GB1 - MB2, va + GB1, "2M", hole + "pmd"))
    end = VMALLOC_4L + N_PUD * GB1
    lines += [
        line(end, VMALLOC_4L + (1 << 39), "312G", hole + "pud"),
        line(VMALLOC_4L + (1 << 39), 0xFFFFEA0000000000, "33280G", hole + "pgd"),
        "---[ Vmemmap ]---",
        line(0xFFFFEA0000000000, 0xFFFFFE0000000000, "20T", hole + "pgd"),
        "---[ CPU entry Area ]---",
        line(0xFFFFFE0000000000, 0xFFFFFF0000000000, "1T", hole + "pgd"),
        "---[ ESPfix Area ]---",
        # the last PGD slot starts below the EFI marker (0xffffffef00000000): no further header,
        # and the flush closes the run at address 0
        line(0xFFFFFF0000000000, 0, "1T", hole + "pgd"),
    ]
    return lines


@pytest.mark.parametrize("distinct", [True, False], ids=["200-pmd-tables", "1-pmd-table-200-puds"])
def test_table_shared_100000_times(tmp_path, distinct):
    """A PTE table referenced by 102 200 PMD entries dumps as its structure says, and root_runs stays small."""
    b = _build_shared(distinct)
    mem = b.memory(tmp_path)
    mode = X86_64_4LEVEL
    tables = discover(mem, mode, b.root)
    assert [len(t.pas) for t in tables] == [1, 1, N_PUD if distinct else 1, 1]
    t0 = time.perf_counter()
    text, st, runs = fast_ptdump(mem, mode, b.root, Layout(l5=False))
    elapsed = time.perf_counter() - t0
    assert text.splitlines() == _expected_shared_text()
    assert len(runs) <= 2 * N_PUD + 10  # runs follow distinct content, not the 102 200 references
    assert st.wx_pages == 0
    drv_text, _ = drive_ptdump(mode, runs, Layout(l5=False))
    assert drv_text == text
    assert elapsed < 5


# -- loops -----------------------------------------------------------------------------------------


def _loop_builder(mode, what: str) -> tuple[PageTableBuilder, int]:
    b = PageTableBuilder(mode)
    nlev = len(mode.levels)
    base = 0xFFFFFFFF80000000
    b.map(base, 0x1000000, MB2, X86_P | X86_G)
    b.map(base + 3 * MB2, 0x2000, KB4, X86_P | X86_RW | X86_NX)
    b.map(0x400000, 0x3000, KB4, X86_P | X86_US)  # a user page, so the root has a lower-half entry too
    va = base + MB2
    if what == "pud->root":
        t, i = b.slot(base + GB1, nlev - 3, create=True)
        b.set_entry(t, i, b.make_table_entry(b.root))
        return b, base + GB1
    if what == "top->root":  # a self-map (as Windows has): the root serves as every level's table
        b.set_entry(b.root, 300, b.make_table_entry(b.root))
        return b, mode.canonical_va(300 << mode.levels[0].shift)
    t, i = b.slot(va, nlev - 2)
    target = {"pmd->pud": b.slot(va, nlev - 3)[0], "pmd->self": t, "pmd->root": b.root}[what]
    b.set_entry(t, i, b.make_table_entry(target))
    return b, va


@pytest.mark.parametrize("mode", [X86_64_4LEVEL, X86_64_5LEVEL], ids=lambda m: m.name)
@pytest.mark.parametrize("what", ["pmd->pud", "pmd->self", "pmd->root", "pud->root", "top->root"])
def test_loop_terminates_and_matches_reference(tmp_path, mode, what):
    """An entry pointing back at an upper table is read as a lower-level table: the dump ends and equals the reference."""
    b, va = _loop_builder(mode, what)
    text, _ = assert_all_agree(b.memory(tmp_path), mode, b.root, Layout(l5=mode is X86_64_5LEVEL))
    if what.startswith("pmd"):
        # every table entry (P RW US A D) of the upper table reads as a 4K user PTE at `va`
        t, i = b.slot(va, len(mode.levels) - 2)
        target = b.entry(t, i) & ~0xFFF
        used = [k for k in range(512) if b.entry(target, k) & X86_PSE == 0 and b.entry(target, k)]
        assert used
        for k in used:
            assert f"0x{va + k * KB4:016x}-0x{va + (k + 1) * KB4:016x}           4K USR RW" in text


# -- entries without an event (found by the reference above; fixed in 6d64316) --------------------
#
# A PUD/PMD entry that is not none, not present and not a leaf (Kind.SKIP: e.g. a THP migration
# entry, or any P=0 entry without PSE) gets p?d_entry() but no note_page(): the kernel's current
# run simply goes on to the next event. Before 6d64316 runs.py gave such entries no run, so their
# VA fell into the run before them, and:
#  bug A: drive() and vector.breaks() placed the event "the kernel would deliver" at a range start
#         or at the first entry at/after an address marker inside such a VA, where the kernel
#         delivers none;
#  bug B: format_fast() started the first line at the first event; the kernel (and X86State)
#         leave start_address at 0 on the first note_page(), so the first line starts at 0.
# These were strict xfails until the fix landed; they now guard against regressions.

SKIP_PMD = 0x5000 | X86_RW  # P=0, PSE=0, not none: pmd_present() is false, pmd_leaf() too


def _skip_at(va: int, leaf_after: bool = False) -> PageTableBuilder:
    b = PageTableBuilder(X86_64_4LEVEL)
    t, i = b.slot(va, 2, create=True)
    b.set_entry(t, i, SKIP_PMD)
    if leaf_after:
        b.map(va + MB2, 0x200000, MB2, X86_P | X86_RW)  # W+X
    return b


@pytest.mark.parametrize("impl", ["drive", "format_fast"])
@pytest.mark.parametrize(
    "va", [0xFFFF880000000000, 0xFFFFC90000000000], ids=["range-start-GUARD_HOLE_END", "marker-VMALLOC_START"]
)
def test_skip_entry_makes_no_event(tmp_path, impl, va):
    """A non-present non-leaf PMD makes no event, even at a range start or a marker: the run before it goes on."""
    b = _skip_at(va)
    mem = b.memory(tmp_path)
    layout = Layout(l5=False)
    ref_text, _, ref = reference_ptdump(mem, X86_64_4LEVEL, b.root, layout)
    assert va not in ref.addrs and va + MB2 in ref.addrs
    if va == 0xFFFF880000000000:
        assert ref.first_event[1] == va + MB2
        assert ref_text.splitlines()[:4] == [
            "---[ User Space ]---",
            "0x0000000000000000-0xffff880000200000   17592060215298M                               pgd",
            "---[ Kernel Space ]---",
            "0xffff880000200000-0xffff880000400000           2M                               pmd",
        ]
    else:
        assert (
            "0xffff890000000000-0xffffc90000200000    67108866M                               pgd\n"
            "---[ vmalloc() Area ]---\n"
            "0xffffc90000200000-0xffffc90040000000        1022M                               pmd\n" in ref_text
        )
    fast_text, _, runs = fast_ptdump(mem, X86_64_4LEVEL, b.root, layout)
    text = drive_ptdump(X86_64_4LEVEL, runs, layout)[0] if impl == "drive" else fast_text
    # bug A cut the run before the PMD at `va` with an invented event carrying that run's state
    # (an extra "0x{va}-0x{va + 2M} 2M pgd" line), and the marker headers moved with it
    assert text == ref_text


def test_skip_entry_at_va_zero_format_fast(tmp_path):
    """With no event at VA 0 the first line still starts at 0 (and so does its W+X range), as in the kernel."""
    b = _skip_at(0, leaf_after=True)
    mem = b.memory(tmp_path)
    layout = Layout(l5=False)
    ref_text, ref_st, _ = reference_ptdump(mem, X86_64_4LEVEL, b.root, layout)
    assert ref_text.splitlines()[1] == "0x0000000000000000-0x0000000000400000           4M     RW         PSE         x  pmd"
    assert (ref_st.wx_pages, ref_st.wx_ranges) == (1024, [(0, 0x400000)])
    fast_text, fast_st, _ = fast_ptdump(mem, X86_64_4LEVEL, b.root, layout)
    # bug B: "0x0000000000200000-0x0000000000400000 2M ...", 512 W+X pages from 0x200000
    assert (fast_st.wx_pages, fast_st.wx_ranges) == (1024, [(0, 0x400000)])
    assert fast_text == ref_text


def test_skip_entry_at_va_zero_drive(tmp_path):
    """drive() over the same runs gets the VA-0 case right: X86State leaves the first start at 0, like the kernel."""
    b = _skip_at(0, leaf_after=True)
    mem = b.memory(tmp_path)
    layout = Layout(l5=False)
    ref_text, ref_st, _ = reference_ptdump(mem, X86_64_4LEVEL, b.root, layout)
    drv_text, drv_st = drive_ptdump(X86_64_4LEVEL, root_runs(mem, X86_64_4LEVEL, b.root), layout)
    assert drv_text == ref_text and drv_st.wx_pages == ref_st.wx_pages == 1024


@pytest.mark.parametrize(
    "l5,vmemmap,shadow",
    [(False, 0xFFFFEA0000000000, 0xFFFFEC0000000000), (True, 0xFFD4000000000000, 0xFFDFFC0000000000)],
    ids=["4level", "5level"],
)
def test_kasan_layout_has_shadow_markers(l5, vmemmap, shadow):
    """With CONFIG_KASAN address_markers[] has "KASAN shadow" and "KASAN shadow end" between Vmemmap and the CPU entry area."""
    # (Layout.kasan was ignored before 6d64316.) KASAN_SHADOW_START = KASAN_SHADOW_OFFSET
    # (0xdffffc0000000000) + ((-1UL << __VIRTUAL_MASK_SHIFT) >> 3), END = START + (1 << (shift - 3)):
    # Documentation/arch/x86/x86_64/mm.rst, "KASAN shadow memory" (ffffec0000000000 / ffdf...)
    names = [(a, n) for a, n, _ in Layout(l5=l5, kasan=True).markers()]
    i = names.index((vmemmap, "Vmemmap"))
    assert names[i + 1 : i + 4] == [
        (shadow, "KASAN shadow"),
        (0xFFFFFC0000000000, "KASAN shadow end"),
        (0xFFFFFE0000000000, "CPU entry Area"),
    ]
    assert [n for _, n, _ in Layout(l5=l5).markers()].count("KASAN shadow") == 0
