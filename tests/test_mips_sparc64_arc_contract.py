"""The contract every mode meets, for the software-defined tables of mips64, sparc64 and arc:
PageTableBuilder round trip, translate() vs the kernel's walk vs translate_many(), and the generic
dump covering exactly the present pages. No oracle reaches sparc64 and arc and no emulated MMU
exists for them (their TLBs are refilled by software): the tables come from the kernel headers.
"""

from __future__ import annotations

import tempfile

import builders_arc
import builders_mips
import builders_sparc64
import numpy as np
import pytest
from builders import PageTableBuilder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagewalk.arch import arc, mips, sparc64
from pagewalk.mode import HwKind, Kind
from pagewalk.ptdump import generic
from pagewalk.runs import root_runs
from pagewalk.translate import translate, translate_many

MODES = ([mips.make_mode(c) for c in mips.CONFIGS] + [sparc64.make_mode(c) for c in sparc64.CONFIGS]
         + [arc.make_mode(c) for c in arc.CONFIGS])
IDS = [m.name for m in MODES]
FLAGS = {
    "mips64": builders_mips.M_KERNEL,
    "sparc64": builders_sparc64.SUN4V_KERNEL,
    "arc": arc.PAGE_KERNEL | arc._PAGE_ACCESSED | arc._PAGE_DIRTY,
}
# a kernel VA window of each architecture where test mappings go (start, length)
WINDOW = {"mips64": (mips.MAP_BASE, 1 << 39), "sparc64": (0x100000000, 1 << 45), "arc": (0x0, 1 << 32)}


def flags_for(mode) -> int:
    if mode.arch == "sparc64" and mode.name.endswith("sun4u"):
        return builders_sparc64.SUN4U_KERNEL
    return FLAGS[mode.arch]


def leaf_levels(mode) -> list[int]:
    """Hardware levels where both the kernel (p?d_leaf()) and the refill handler take a leaf."""
    fmt = builders_mips._mips_formats if mode.arch == "mips64" else (
        builders_sparc64._sparc64_formats if mode.arch == "sparc64" else builders_arc._arc_formats)
    _, make_leaf = fmt(mode)
    out = []
    for i in range(len(mode.levels)):
        e = np.array([make_leaf(i, 0, flags_for(mode))], dtype=np.uint64)
        if mode.classify(i, e)[0][0] == Kind.LEAF and mode.hw_classify(i, e)[0][0] == HwKind.LEAF:
            out.append(i)
    return out


def dump_pages(mode, mem, root) -> dict[int, int]:
    """VA of every page the generic dump covers -> its line's level name index."""
    out = {}
    page = mode.levels[-1].entry_span
    for ln in generic.lines_of(mode, root_runs(mem, mode, root)):
        assert not ln.missing
        for va in range(ln.start, ln.end, page):
            assert va not in out
            out[va] = ln.level
    return out


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_every_leaf_size_round_trips(tmp_path, mode):
    """A mapping of every leaf size translates to its PA, walks as a leaf at its level and is one dump line."""
    levels = leaf_levels(mode)
    assert levels[-1] == len(mode.levels) - 1 and (mode.arch == "mips64" and "4k" not in mode.name
                                                    or len(levels) >= 2 or mode.name.endswith("arcompact-8k"))
    base, _ = WINDOW[mode.arch]
    b = PageTableBuilder(mode, base=0x10000)
    expect = []
    for k, i in enumerate(levels):
        size = mode.levels[i].entry_span
        va = base + (k + 1) * max(size, 1 << 30 if mode.arch != "arc" else size * 4)
        va -= va % size
        pa = size * (k + 3)
        b.map(va, pa, size, flags_for(mode))
        expect.append((va, pa, size, i))
    expect.sort()
    mem = b.memory(tmp_path)
    runs = root_runs(mem, mode, b.root)
    lines = generic.lines_of(mode, runs)
    assert [(ln.start, ln.end, ln.level) for ln in lines] == [(va, va + size, mode.levels[i].name)
                                                              for va, _, size, i in expect]
    for (va, pa, size, i), ln in zip(expect, lines):
        t = translate(mem, mode, b.root, va + size - 8)
        assert t.ok and t.pa == pa + size - 8 and t.page_size == size
        assert [s.kind for s in t.steps] == ["table"] * i + ["leaf"]
        assert ln.pa == pa and "PRESENT" in ln.flags
        k = int(np.flatnonzero(runs.val == np.uint64(b.entry(*b.slot(va, i))))[0])
        assert int(runs.klevel[k]) == mode.levels[i].klevel
    mem.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    idx=st.integers(0, len(MODES) - 1),
    maps=st.lists(st.tuples(st.integers(0, 1 << 20), st.booleans(), st.integers(1, 1 << 12), st.booleans()),
                  min_size=1, max_size=8),
    probes=st.lists(st.integers(0, (1 << 32) - 1), max_size=12),
)
def test_translate_walk_and_dump_agree(idx, maps, probes):
    """For random mappings: translate_many() == translate(), each mapping's PA, and the dump's pages are the present ones."""
    mode = MODES[idx]
    levels = leaf_levels(mode)
    base, length = WINDOW[mode.arch]
    b = PageTableBuilder(mode, base=0x10000)
    done = []
    for slot, big, pa_unit, present in maps:
        i = levels[0] if big else levels[-1]
        size = mode.levels[i].entry_span
        va = base + (slot * size * 7) % length
        va -= va % size
        flags = flags_for(mode)
        if not present:
            flags &= ~(arc._PAGE_PRESENT if mode.arch == "arc" else mode.extra["generic_flags"][0][1]
                       if mode.arch == "mips64" else dict(mode.extra["config"].flags)["PRESENT"])
        pa = (pa_unit * size) % (1 << min(mode.pa_bits, 38))
        pa -= pa % size
        try:
            b.map(va, pa, size, flags)
        except ValueError:
            continue
        done.append((va, pa, size, present, i))
    with tempfile.TemporaryDirectory() as d:
        mem = b.memory(d)
        vas = [va + (size >> 1) for va, _, size, _, _ in done] + [base + p % length for p in probes]
        pas, sizes, ok = translate_many(mem, mode, b.root, np.array(vas, np.uint64))
        for k, va in enumerate(vas):
            t = translate(mem, mode, b.root, va)
            assert bool(ok[k]) == t.ok
            if t.ok:
                assert int(pas[k]) == t.pa and int(sizes[k]) == t.page_size
        for k, (va, pa, size, present, i) in enumerate(done):
            t = translate(mem, mode, b.root, vas[k])
            assert t.steps[-1].level == mode.levels[i].name
            if present:  # the kernel's PAGE_KERNEL is valid in the TLB too
                assert t.ok and t.pa == pa + (size >> 1)
        want = {}
        page = mode.levels[-1].entry_span
        for va, _, size, present, i in done:
            if present:
                want.update({v: mode.levels[i].name for v in range(va, va + size, page)})
        assert dump_pages(mode, mem, b.root) == want
        mem.close()


def kern(mode, level, entry):
    kind, out = mode.classify(level, np.array([entry], dtype=np.uint64))
    return Kind(int(kind[0])), int(out[0])


def hw(mode, level, entry):
    kind, out = mode.hw_classify(level, np.array([entry], dtype=np.uint64))
    return HwKind(int(kind[0])), int(out[0])


def test_generic_text_of_a_hand_built_table(tmp_path):
    """The generic text: one line per run, kernel size units, the level, and the arc bit names."""
    mode = arc.make_mode("8k")
    b = PageTableBuilder(mode, base=0x80000000)
    rw = arc.PAGE_KERNEL & ~arc._PAGE_EXECUTE
    for k in range(3):
        b.map(0x70000000 + k * 0x2000, 0x81000000 + k * 0x2000, 0x2000, rw)
    b.map(0x70006000, 0x82000000, 0x2000, arc.PAGE_KERNEL)
    b.map(0x70200000, 0x90000000, 0x200000, rw)
    b.map(0x10000, 0x83000000, 0x2000, arc._PAGE_CACHEABLE | arc._PAGE_READ)  # not present: not shown
    mem = b.memory(tmp_path)
    import io

    out = io.StringIO()
    n = generic.dump(mem, mode, b.root, out, va_bits=32,
                     sections=[(0, 0x60000000, "user"), (0x70000000, 0x80000000, "vmalloc")])
    assert out.getvalue().splitlines() == [
        "---[ vmalloc ]---",
        "0x70000000-0x70006000         24K pte  CACHEABLE WRITE READ GLOBAL PRESENT",
        "0x70006000-0x70008000          8K pte  CACHEABLE EXECUTE WRITE READ GLOBAL PRESENT",
        "0x70200000-0x70400000          2M pgd  CACHEABLE WRITE READ GLOBAL PRESENT HW_SZ",
    ]
    assert n == 3
    mem.close()


def test_a_table_outside_the_image_gets_its_own_line(tmp_path):
    """An upper entry whose table the image does not hold is one `[table at PA … not in image]` line."""
    mode = sparc64.make_mode("sun4v")
    b = PageTableBuilder(mode, base=0x400000)
    b.map(0x100000000, 0x8000000, 0x2000, builders_sparc64.SUN4V_KERNEL)
    table, idx = b.slot(0x100800000, 2, create=True)
    b.set_entry(table, idx, 0x7F000000)  # a PTE table far outside the image
    mem = b.memory(tmp_path)
    lines = generic.lines_of(mode, root_runs(mem, mode, b.root))
    assert [(ln.start, ln.end, ln.missing, ln.pa) for ln in lines] == [
        (0x100000000, 0x100002000, False, 0x8000000), (0x100800000, 0x101000000, True, 0x7F000000)]
    import io

    out = io.StringIO()
    generic.write_text(lines, out)
    assert out.getvalue().splitlines()[1] == (
        "0x0000000100800000-0x0000000101000000          8M [table at PA 0x7f000000 not in image] pmd")
    recs = generic.records(lines, mode)
    assert recs[1] == {"start": 0x100800000, "end": 0x101000000, "size": 0x800000, "marker": "", "level": "pmd",
                       "missing_table_pa": 0x7F000000}
    mem.close()
