"""translate() and translate_many(): real captures, faults, flag decoding, reserved bits."""

from __future__ import annotations

import functools
import re
import tempfile

import numpy as np
import pytest
from builders import X86_A, X86_D, X86_G, X86_NX, X86_P, X86_PCD, X86_PSE, X86_PWT, X86_RW, X86_US, PageTableBuilder
from conftest import FIXTURES, X86_64_CASES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagewalk import open_image
from pagewalk.arch.x86 import X86_64_4LEVEL, X86_64_5LEVEL, _make_mode, describe
from pagewalk.target import read_kallsyms, resolve
from pagewalk.translate import translate, translate_many

TOP = 1 << 64
KB4, MB2, GB1 = 4096, 2 << 20, 1 << 30
START_KERNEL_MAP = 0xFFFFFFFF80000000  # __START_KERNEL_map
PAGE_SIZE_OF = {"pte": KB4, "pmd": MB2, "pud": GB1}
X86_PAT_LARGE = 1 << 12
LINE = re.compile(r"^0x([0-9a-f]{16})-0x([0-9a-f]{16})\s+\d+[BKMGTPE] (.{30})(pgd|p4d|pud|pmd|pte)$")
NOT_PRESENT = "not present (P=0)"


@functools.lru_cache(maxsize=None)
def _target(case: str):
    path = FIXTURES / "x86_64" / case
    return resolve(open_image(str(path / "core.elf")), kallsyms=read_kallsyms(str(path / "kallsyms.txt")))


def _kernel_lines(case: str) -> list[tuple[str, int, int, str, str]]:
    """(section, start, end, flag columns, level) of every range line of the kernel's own dump."""
    section = None
    out = []
    for ln in (FIXTURES / "x86_64" / case / "ptdump_kernel.txt").read_text().splitlines():
        if ln.startswith("---["):
            section = ln[5:-5]
            continue
        m = LINE.match(ln)
        if m:
            out.append((section, int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4)))
    return out


# -- real captures -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", X86_64_CASES)
def test_present_kernel_ranges_translate_with_their_level_size(case):
    """The first VA of every present range of the kernel's dump translates, with the page size of the line's level."""
    t = _target(case)
    root = t.root("kernel")
    lines = [x for x in _kernel_lines(case) if x[3].strip()]
    text = [x for x in lines if x[0] == "High Kernel Mapping"]
    assert len(text) >= 5 and {x[4] for x in text} >= {"pmd", "pte"}
    vas = []
    for section, start, end, cols, level in lines:
        tr = translate(t.mem, t.mode, root, start)
        assert tr.ok, (section, hex(start), tr.fault)
        assert tr.page_size == PAGE_SIZE_OF[level], (hex(start), level)
        leaf = tr.steps[-1]
        assert leaf.kind == "leaf" and leaf.level == level
        assert [s.kind for s in tr.steps[:-1]] == ["table"] * (len(tr.steps) - 1)
        # the dump's columns are the leaf's own bits, and describe() names the same ones
        words = leaf.flags.split()
        assert ("RW" in cols.split()) == (leaf.entry & X86_RW != 0) == ("RW" in words)
        assert ("NX" in cols.split()) == (leaf.entry & X86_NX != 0) == ("XD" in words)
        assert ("GLB" in cols.split()) == (leaf.entry & X86_G != 0) == ("G" in words)
        assert ("USR" in cols.split()) == ("US" in words)
        assert ("PSE" in cols.split()) == ("PS" in words) == (level != "pte")
        # the last page of the range is mapped at the same level too
        last = (end - KB4) % TOP
        tr_last = translate(t.mem, t.mode, root, last)
        assert tr_last.ok and tr_last.page_size == PAGE_SIZE_OF[level]
        vas += [start, last]
    pa, size, ok = translate_many(t.mem, t.mode, root, np.array(vas, np.uint64))
    assert ok.all()
    assert pa.tolist() == [translate(t.mem, t.mode, root, v).pa for v in vas]
    assert size.tolist() == [translate(t.mem, t.mode, root, v).page_size for v in vas]


@pytest.mark.parametrize("case", X86_64_CASES)
def test_kernel_symbols_translate_to_their_physical_addresses(case):
    """_text maps to _text - __START_KERNEL_map + phys_base and init_top_pgt to the root the target found."""
    t = _target(case)
    path = FIXTURES / "x86_64" / case
    syms = read_kallsyms(str(path / "kallsyms.txt"))
    phys_base = int(t.mem.cpu.vmcoreinfo["NUMBER(phys_base)"]) % TOP
    root = t.root("kernel")
    for name in ("_text", "_stext", "init_top_pgt", "init_mm", "_sdata"):
        tr = translate(t.mem, t.mode, root, syms[name])
        assert tr.ok, (name, tr.fault)
        assert tr.pa == (syms[name] - START_KERNEL_MAP + phys_base) % TOP, name
    assert translate(t.mem, t.mode, root, syms["init_top_pgt"]).pa == root
    assert translate(t.mem, t.mode, root, syms["_text"]).page_size == MB2


@pytest.mark.parametrize("case", X86_64_CASES)
def test_non_present_kernel_ranges_fault_at_their_level(case):
    """The first VA of every non-present range of the kernel's dump faults "not present" at the line's level."""
    t = _target(case)
    root = t.root("kernel")
    n = 0
    for section, start, end, cols, level in _kernel_lines(case):
        if cols.strip():
            continue
        tr = translate(t.mem, t.mode, root, start)
        assert not tr.ok and tr.fault.endswith(NOT_PRESENT), (section, hex(start), tr.fault)
        assert tr.steps[-1].kind == "fault" and tr.steps[-1].level == level, (hex(start), level)
        assert tr.steps[-1].flags == "not present"
        assert tr.fault == f"{level} entry {tr.steps[-1].entry:#018x}: {NOT_PRESENT}"
        n += 1
    assert n > 10


@pytest.mark.parametrize("mode", [X86_64_4LEVEL, X86_64_5LEVEL], ids=lambda m: m.name)
def test_non_canonical_addresses_fault(tmp_path, mode):
    """A VA outside both canonical halves faults before any table is read, naming the mode and its width."""
    b = PageTableBuilder(mode)
    b.map(0, GB1, GB1, X86_P | X86_RW)
    mem = b.memory(tmp_path)
    bits = mode.va_bits
    bad = [1 << (bits - 1), TOP - (1 << (bits - 1)) - 1, 1 << 62, 0x00FF_0000_0000_0000 | (1 << (bits - 1))]
    if bits == 48:
        bad.append(0x0000_8000_0000_0000)
    for va in bad:
        tr = translate(mem, mode, b.root, va)
        assert not tr.ok and tr.steps == []
        assert tr.fault == f"{va:#x} is not a canonical address for {mode.name} ({bits}-bit)"
    pa, size, ok = translate_many(mem, mode, b.root, np.array(bad, np.uint64))
    assert not ok.any() and not pa.any() and not size.any()
    # the highest canonical low address and the lowest high one are walked (and here fault or map)
    assert translate(mem, mode, b.root, (1 << (bits - 1)) - 1).steps
    assert translate(mem, mode, b.root, TOP - (1 << (bits - 1))).steps


def test_fixture_hole_and_gap_faults():
    """On a capture: an unmapped user VA faults not-present at the top level, the guard-hole gap is non-canonical."""
    t = _target("6.1-kaslr-4level")
    root = t.root("kernel")
    tr = translate(t.mem, t.mode, root, 0x400000)
    assert tr.fault.startswith("pgd entry 0x0000000000000000: ") and tr.fault.endswith(NOT_PRESENT)
    tr = translate(t.mem, t.mode, root, 0x0000_8000_0000_0000)
    assert tr.fault == "0x800000000000 is not a canonical address for x86_64-4level (48-bit)"


# -- translate_many == translate -----------------------------------------------------------------


def _compare_many(mem, mode, root, vas):
    pa, size, ok = translate_many(mem, mode, root, np.array(vas, dtype=np.uint64))
    for k, va in enumerate(vas):
        tr = translate(mem, mode, root, va)
        assert bool(ok[k]) == tr.ok, hex(va)
        if tr.ok:
            assert int(pa[k]) == tr.pa and int(size[k]) == tr.page_size, hex(va)
        else:
            assert int(pa[k]) == 0 and int(size[k]) == 0


_LEAF_FLAGS = st.lists(
    st.sampled_from([X86_RW, X86_US, X86_PWT, X86_PCD, X86_A, X86_D, X86_G, X86_NX, 1 << 59, 1 << 62]), max_size=5
).map(lambda bits: X86_P | sum(set(bits)))
_MAPPING = st.tuples(
    st.sampled_from([KB4, MB2, GB1]),
    st.integers(0, 63),  # slot among a few VA regions
    st.sampled_from([0, 0x7FFF_C000_0000, 0xFFFF_8880_0000_0000, 0xFFFF_FFFF_8000_0000]),
    st.integers(0, (1 << 40) - 1),
    _LEAF_FLAGS,
)
_RAW = st.tuples(st.integers(0, 2), st.integers(0, 63), st.integers(0, (1 << 64) - 1))


def _build(mode, mappings, raws) -> tuple[PageTableBuilder, list[int]]:
    """Random leaves in a few regions, then random raw entries (reserved bits, non-present, PS) on their paths."""
    b = PageTableBuilder(mode)
    vas = []
    for size, slot, region, pa, flags in mappings:
        va = (region & ~(size - 1)) + slot * size
        if not mode.is_canonical(va):
            continue
        try:
            b.map(va, pa & ~(size - 1), size, flags)
            vas.append(va)
        except ValueError:
            pass
    nlev = len(mode.levels)
    for level, k, value in raws:
        if not vas:
            break
        va = vas[k % len(vas)]
        try:
            t, i = b.slot(va, min(level, nlev - 1))
            b.set_entry(t, i, value)
        except (KeyError, ValueError):  # an earlier edit cut the path or sent it out of the image
            continue
    return b, vas


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from([X86_64_4LEVEL, X86_64_5LEVEL, _make_mode(4, pa_bits=40)]),
    mappings=st.lists(_MAPPING, min_size=1, max_size=10),
    raws=st.lists(_RAW, max_size=3),
    offsets=st.lists(st.integers(0, (1 << 31) - 1), min_size=1, max_size=20),
    wild=st.lists(st.integers(0, TOP - 1), max_size=10),
)
def test_translate_many_equals_translate_builder(mode, mappings, raws, offsets, wild):
    """translate_many() gives translate()'s PA, page size and verdict for random VAs over random tables."""
    b, vas = _build(mode, mappings, raws)
    probes = [(v + o) % TOP for v in vas for o in offsets[:3]] + wild + [o << 12 for o in offsets]
    with tempfile.TemporaryDirectory() as d:
        mem = b.memory(d)
        _compare_many(mem, mode, b.root, probes)
        mem.close()


@settings(max_examples=30, deadline=None)
@given(
    case=st.sampled_from(X86_64_CASES),
    picks=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, (1 << 32) - 1)), min_size=1, max_size=30),
    wild=st.lists(st.integers(0, TOP - 1), max_size=10),
)
def test_translate_many_equals_translate_fixture(case, picks, wild):
    """On a real capture translate_many() agrees with translate() near every dumped range and at random VAs."""
    t = _target(case)
    lines = _kernel_lines(case)
    probes = [(lines[i % len(lines)][1] + off) % TOP for i, off in picks] + wild
    _compare_many(t.mem, t.mode, t.root("kernel"), probes)


# -- describe() ----------------------------------------------------------------------------------


def test_describe_pte_bits():
    """In a PTE bit 7 is PAT, bit 12 is an address bit, and bits 62:59 are the protection key."""
    e = 0x12345000 | X86_P | X86_RW | X86_PWT | X86_PCD | X86_A | X86_D | X86_PSE | X86_G | (5 << 59) | X86_NX
    assert describe("pte", e) == "P RW S PWT PCD A D PAT G XD PKEY=5"
    assert describe("pte", 0x1000 | X86_P | X86_US) == "P RO US X"
    assert describe("pte", (1 << 12) | X86_P) == "P RO S X"  # bit 12 is the PFN here
    assert describe("pte", 0xFFFF_FFFF_FFFF_FFFE) == "not present"


def test_describe_large_leaf_bits():
    """Above the PTE bit 7 is PS, PAT moves to bit 12, and the key is shown for leaves only."""
    leaf = 0x4000_0000 | X86_P | X86_RW | X86_PSE | X86_PAT_LARGE | (15 << 59)
    assert describe("pmd", leaf) == "P RW S PS PAT X PKEY=15"
    assert describe("pud", leaf) == "P RW S PS PAT X PKEY=15"
    assert describe("pmd", leaf & ~X86_PAT_LARGE) == "P RW S PS X PKEY=15"
    table = 0x5000 | X86_P | X86_RW | X86_US | (15 << 59)  # bits 62:59 of a table entry are ignored
    assert describe("pmd", table) == "P RW US X"
    assert describe("pmd", table | X86_PAT_LARGE) == "P RW US X"  # bit 12 is an address bit of a table entry


@pytest.mark.parametrize("mode", [X86_64_4LEVEL, X86_64_5LEVEL], ids=lambda m: m.name)
def test_translate_trace_decodes_each_level(tmp_path, mode):
    """translate()'s per-level trace carries describe() of each entry: tables, then the PS/PAT/PKEY leaf."""
    b = PageTableBuilder(mode)
    va2m, va1g, va4k = 0xFFFF_FFFF_8020_0000, 0x4000_0000, 0x7000
    b.map(va2m, 0x60_0000, MB2, X86_P | X86_G | X86_PAT_LARGE | (3 << 59) | X86_NX)
    b.map(va1g, 0x8000_0000, GB1, X86_P | X86_RW | X86_US)
    b.map(va4k, 0x9000, KB4, X86_P | X86_PSE | X86_PCD | (9 << 59))
    mem = b.memory(tmp_path)
    tr = translate(mem, mode, b.root, va2m + 0x1234)
    assert tr.ok and tr.pa == 0x60_1234 and tr.page_size == MB2
    assert [s.level for s in tr.steps] == [lvl.name for lvl in mode.levels[:-1]]
    assert [s.kind for s in tr.steps] == ["table"] * (len(mode.levels) - 2) + ["leaf"]
    assert all(s.flags == "P RW US A D X" for s in tr.steps[:-1])
    assert tr.steps[-1].flags == "P RO S PS PAT G XD PKEY=3"
    tr = translate(mem, mode, b.root, va1g + 0x3FFF_FFFF)
    assert tr.pa == 0xBFFF_FFFF and tr.page_size == GB1 and tr.steps[-1].flags == "P RW US PS X"
    tr = translate(mem, mode, b.root, va4k + 8)
    assert tr.pa == 0x9008 and tr.page_size == KB4 and tr.steps[-1].flags == "P RO S PCD PAT X PKEY=9"
    assert tr.steps[-1].level == "pte" and tr.steps[-1].index == 7


# -- reserved bits -------------------------------------------------------------------------------

RSVD_PS = "reserved bit set (PS must be 0 at this level)"
RSVD_PA = "reserved bit set (address bits above MAXPHYADDR)"
RSVD_LARGE = "reserved bit set (bits below the large page's alignment)"


def _fault(mem, mode, root, va):
    tr = translate(mem, mode, root, va)
    _, _, ok = translate_many(mem, mode, root, np.array([va], np.uint64))
    assert not tr.ok and not ok[0]
    return tr


@pytest.mark.parametrize("mode", [X86_64_4LEVEL, X86_64_5LEVEL], ids=lambda m: m.name)
def test_ps_in_top_levels_is_reserved(tmp_path, mode):
    """PS is reserved in the PML4 (and PML5) entries: the walk faults there instead of mapping a 512G/256T page."""
    b = PageTableBuilder(mode)
    va = 0xFFFF_FFFF_8000_0000
    b.map(va, 0x20_0000, MB2, X86_P | X86_RW)
    levels_ps = [0] if mode is X86_64_4LEVEL else [0, 1]
    for lvl in levels_ps:
        t, i = b.slot(va, lvl)
        good = b.entry(t, i)
        b.set_entry(t, i, good | X86_PSE)
        mem = b.memory(tmp_path)
        tr = _fault(mem, mode, b.root, va)
        assert tr.fault == f"{mode.levels[lvl].name} entry {good | X86_PSE:#018x}: {RSVD_PS}"
        assert tr.steps[-1].kind == "fault" and "PS" in tr.steps[-1].flags
        b.set_entry(t, i, good)
    assert translate(b.memory(tmp_path), mode, b.root, va).pa == 0x20_0000


@pytest.mark.parametrize("level_name", ["pgd", "pud", "pmd", "pte"])
def test_address_bits_above_maxphyaddr_are_reserved(tmp_path, level_name):
    """With a 40-bit MAXPHYADDR an entry with address bit 40..51 set faults at its level; with 52 bits it does not."""
    mode40 = _make_mode(4, pa_bits=40)
    b = PageTableBuilder(mode40)
    va = 0x7F00_0020_3000
    b.map(va, 0x5000, KB4, X86_P | X86_RW)
    level = [lvl.name for lvl in mode40.levels].index(level_name)
    t, i = b.slot(va, level)
    good = b.entry(t, i)
    mem = b.memory(tmp_path)
    assert translate(mem, mode40, b.root, va).pa == 0x5000
    for bit in (40, 45, 51):
        b.set_entry(t, i, good | (1 << bit))
        mem = b.memory(tmp_path)
        tr = _fault(mem, mode40, b.root, va)
        assert tr.fault == f"{level_name} entry {good | (1 << bit):#018x}: {RSVD_PA}"
        if level_name == "pte":  # the same entry is fine for a 52-bit CPU
            tr52 = translate(mem, X86_64_4LEVEL, b.root, va)
            assert tr52.ok and tr52.pa == 0x5000 | (1 << bit)
    # bits 52..62 are not address bits: ignored (PKEY in a leaf), never reserved
    b.set_entry(t, i, good | (1 << 52) | (0x7F << 55))
    assert translate(b.memory(tmp_path), mode40, b.root, va).pa == 0x5000
    # a non-present entry with such bits is just not present
    b.set_entry(t, i, (good | (1 << 45)) & ~X86_P)
    assert _fault(b.memory(tmp_path), mode40, b.root, va).fault.endswith(NOT_PRESENT)


@pytest.mark.parametrize("size,bits", [(MB2, (13, 20)), (GB1, (13, 20, 29))])
def test_large_page_low_address_bits_are_reserved(tmp_path, size, bits):
    """Bits 13..20 of a 2M leaf and 13..29 of a 1G leaf are reserved; bit 12 (PAT) is not."""
    b = PageTableBuilder(X86_64_4LEVEL)
    va = 0x40_0000_0000
    b.map(va, 4 * GB1, size, X86_P | X86_RW)
    t, i = b.slot(va, b.level_for(size))
    good = b.entry(t, i)
    b.set_entry(t, i, good | X86_PAT_LARGE)
    tr = translate(b.memory(tmp_path), X86_64_4LEVEL, b.root, va + 0x1008)
    assert tr.ok and tr.pa == 4 * GB1 + 0x1008
    for bit in bits:
        b.set_entry(t, i, good | (1 << bit))
        tr = _fault(b.memory(tmp_path), X86_64_4LEVEL, b.root, va)
        assert tr.fault.endswith(RSVD_LARGE)


def test_missing_table_faults(tmp_path):
    """A table entry pointing outside the image stops the walk with a "missing" step; translate_many says not ok."""
    b = PageTableBuilder(X86_64_4LEVEL)
    va = 0x1000
    b.map(va, 0x5000, KB4, X86_P)
    t, i = b.slot(va, 2)
    b.set_entry(t, i, 0x7700_0000 | X86_P | X86_RW)
    tr = _fault(b.memory(tmp_path), X86_64_4LEVEL, b.root, va)
    assert tr.steps[-1].kind == "missing" and tr.steps[-1].entry is None
    assert tr.fault == "the pte table at PA 0x77000000 is not in the image"
