"""s390x DAT as data: ASCE decoding, geometry, the kernel's and the CPU's view of every level,
TF/TL partial tables, translate() against the PageTableBuilder, translate_many() == translate()."""

from __future__ import annotations

import tempfile

import builders_s390  # noqa: F401  (registers the s390x entry formats)
import numpy as np
import pytest
from builders_s390 import (
    S390_FC,
    S390_I_REGION,
    S390_IEP,
    S390_P,
    S390_PAGE_I,
    S390_PTE_BIT52,
    S390_SEG_SW_RW,
    S390_SW_RW,
    S390Builder,
    empty_entry,
    table_entry,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagewalk.arch.s390 import (
    REGION1,
    REGION2,
    REGION3,
    SEGMENT,
    decode_asce,
    describe,
    make_mode,
    perm_text,
)
from pagewalk.mode import HwKind, Kind
from pagewalk.runs import root_runs
from pagewalk.translate import translate, translate_many

KB4, MB1, GB2 = 4096, 1 << 20, 1 << 31
ALL = [REGION1, REGION2, REGION3, SEGMENT]


def _one(mode, level, entry, hw=False):
    f = mode.hw_classify if hw else mode.classify
    kind, out = f(level, np.array([entry], np.uint64))
    return int(kind[0]), int(out[0])


def test_asce_decoding_of_the_oracle_values():
    """The oracle's kernel ASCE 0x1290007 is a full region-third table at 0x1290000; its user ASCE too."""
    m, origin = decode_asce(0x1290007)
    assert (m.name, origin, m.extra["asce_tl"], m.va_bits) == ("s390x-region3", 0x1290000, 3, 42)
    m, origin = decode_asce(0x28941C7)  # user_asce: + S (0x80) and X (0x40) bits
    assert (m.name, origin) == ("s390x-region3", 0x2894000)
    assert decode_asce(0x1290000 | 0x20)[0] is None  # real-space ASCE: no tables
    assert decode_asce(0x100E)[0].name == "s390x-region1" and decode_asce(0x100E)[0].extra["asce_tl"] == 2


def test_geometry_is_computed_per_designation_type():
    """Levels, shifts, table sizes, VA widths and big-endian 8-byte entries per ASCE type."""
    assert [lvl.name for lvl in REGION1.levels] == ["pgd", "p4d", "pud", "pmd", "pte"]
    assert [lvl.shift for lvl in REGION1.levels] == [53, 42, 31, 20, 12]
    assert [lvl.entries for lvl in REGION1.levels] == [2048, 2048, 2048, 2048, 256]
    assert [m.va_bits for m in ALL] == [64, 53, 42, 31]
    assert [lvl.klevel for lvl in REGION3.levels] == [2, 3, 4]
    assert all(m.dtype == np.dtype(">u8") for m in ALL)
    assert REGION3.top_span == 1 << 42 and not REGION3.canonical


def test_kernel_view_of_every_level():
    """pgtable.h's none/leaf/present per level: empty values are holes, FC makes leaves, PTE slots are all leaves."""
    # region-first (pgd): I bit or bits outside _REGION_ENTRY_BITS: none/bad; else a table
    assert _one(REGION1, 0, 0x5000 | 0xC | 3) == (Kind.TABLE, 0x5000)
    assert _one(REGION1, 0, 0xC | S390_I_REGION)[0] == Kind.HOLE
    assert _one(REGION1, 0, 0x5000 | 0xC | 3 | 0x400)[0] == Kind.HOLE  # pgd_bad()
    # region-second (p4d): only exactly _REGION2_ENTRY_EMPTY is none; a higher type is bad
    assert _one(REGION2, 0, 0x28)[0] == Kind.HOLE
    assert _one(REGION2, 0, 0x5000 | 0xC)[0] == Kind.HOLE
    assert _one(REGION2, 0, 0x5000 | 0x8 | S390_I_REGION)[0] == Kind.TABLE  # not exactly EMPTY
    # region-third (pud): EMPTY none, FC leaf (2 GiB frame), origin 0 not present
    assert _one(REGION3, 0, 0x24)[0] == Kind.HOLE
    assert _one(REGION3, 0, 0x80000000 | 0x4 | S390_FC) == (Kind.LEAF, 0x80000000)
    assert _one(REGION3, 0, 0x4 | 3)[0] == Kind.SKIP
    assert _one(REGION3, 0, 0x7000 | 0x4 | 3) == (Kind.TABLE, 0x7000)
    assert _one(REGION3, 0, 0)[0] == Kind.SKIP  # a folded (lower-type) entry: not modelled
    # segment (pmd): EMPTY none, FC leaf (1 MiB frame), else a page table at bits 0-52 (2 KiB aligned)
    assert _one(REGION3, 1, 0x20)[0] == Kind.HOLE
    assert _one(REGION3, 1, 0x300000 | S390_FC | S390_P) == (Kind.LEAF, 0x300000)
    assert _one(REGION3, 1, 0x7800) == (Kind.TABLE, 0x7800)
    # pte: every slot
    assert _one(REGION3, 2, S390_PAGE_I)[0] == Kind.LEAF
    assert _one(REGION3, 2, 0x1234000 | S390_P) == (Kind.LEAF, 0x1234000)


def test_cpu_view_of_every_level():
    """The CPU: I bits raise the level's translation exception, a wrong table type or PTE bit 52 a specification exception."""
    codes = REGION1.fault_reason
    for level, tt, word in ((0, 0xC, "region-first"), (1, 0x8, "region-second"), (2, 0x4, "region-third")):
        k, why = _one(REGION1, level, 0x5000 | tt | S390_I_REGION, hw=True)
        assert k == HwKind.FAULT and codes(why).startswith(word)
        k, why = _one(REGION1, level, 0x5000 | ((tt - 4) & 0xC), hw=True)
        assert k == HwKind.FAULT and "specification" in codes(why)
        assert _one(REGION1, level, 0x5000 | tt | 3, hw=True) == (HwKind.TABLE, 0x5000)
    k, why = _one(REGION1, 3, 0x5000 | S390_I_REGION, hw=True)
    assert k == HwKind.FAULT and codes(why).startswith("segment")
    k, why = _one(REGION1, 4, 0x5000 | S390_PAGE_I, hw=True)
    assert k == HwKind.FAULT and codes(why).startswith("page")
    k, why = _one(REGION1, 4, 0x5000 | S390_PTE_BIT52, hw=True)
    assert k == HwKind.FAULT and "specification" in codes(why)
    assert _one(REGION1, 3, 0x300000 | S390_FC, hw=True) == (HwKind.LEAF, 0x300000)
    assert _one(REGION1, 2, 0x80000000 | 0x4 | S390_FC, hw=True) == (HwKind.LEAF, 0x80000000)
    # without EDAT-1/EDAT-2 the FC bit is not looked at: the entry is a table
    no_edat = make_mode(3, edat1=False, edat2=False)
    assert _one(no_edat, 3, 0x300000 | S390_FC, hw=True) == (HwKind.TABLE, 0x300000)
    assert _one(no_edat, 2, 0x80000000 | 0x4 | S390_FC, hw=True)[0] == HwKind.TABLE


@pytest.mark.parametrize(
    ("mode", "size"),
    # a segment-table ASCE has no region-third level, so no 2G leaf
    [(m, s) for m in ALL for s in (KB4, MB1, GB2) if not (s == GB2 and m is SEGMENT)],
    ids=lambda v: {KB4: "4K", MB1: "1M", GB2: "2G"}.get(v) if isinstance(v, int) else v.name,
)
def test_map_translates_and_walks(tmp_path, mode, size):
    """Each leaf size translates to its PA in every mode, and the walk reports it at the kernel's level."""
    b = S390Builder(mode, base=0x100000)
    va = (0x7FFFFFFF & ~(size - 1)) if mode is SEGMENT else 0x3FF_8000_0000 & ~(size - 1)
    pa = 0x1_0000_0000 if size == GB2 else 0x4200000
    b.map(va, pa, size, S390_P)
    b.finish()
    mem = b.memory(tmp_path)
    t = translate(mem, mode, b.root, va + 0x567)
    assert t.ok and t.pa == pa + 0x567 and t.page_size == size
    assert [s.kind for s in t.steps] == ["table"] * (len(t.steps) - 1) + ["leaf"]
    assert perm_text(t.perm) == "r-x"
    pas, sizes, ok = translate_many(mem, mode, b.root, np.array([va + 0x567, va + size - 8, va + size, 0], np.uint64))
    assert ok.tolist() == [True, True, False, False]
    assert pas[:2].tolist() == [pa + 0x567, pa + size - 8] and int(sizes[0]) == size
    runs = root_runs(mem, mode, b.root)
    valid = [k for k in range(len(runs)) if int(runs.klevel[k]) >= 0 and not (size == KB4 and runs.val[k] & S390_PAGE_I)
             and int(runs.val[k]) and not (int(runs.klevel[k]) < 4 and int(runs.val[k]) & 0x20)]
    leaves = [k for k in valid if int(runs.key[k]) & S390_P]
    assert len(leaves) == 1
    assert int(runs.start[leaves[0]]) == mode.table_offset(va)
    assert int(runs.klevel[leaves[0]]) == {KB4: 4, MB1: 3, GB2: 2}[size]
    mem.close()


def test_entries_are_big_endian_in_memory(tmp_path):
    """The builder writes, and the walk reads, entries most significant byte first."""
    b = S390Builder(REGION3, base=0x100000)
    b.map(0x1000, 0x7654000, KB4, 0)
    b.finish()
    tbl, idx = b.slot(0x1000, 2)
    off = tbl - b.base + idx * 8
    assert bytes(b.image[off : off + 8]) == (0x7654000).to_bytes(8, "big")
    mem = b.memory(tmp_path)
    assert translate(mem, REGION3, b.root, 0x1008).pa == 0x7654008
    mem.close()


def test_protection_is_inherited_and_iep_is_the_leafs(tmp_path):
    """P in a segment entry write-protects its pages; IEP only counts in the leaf; the trace says so."""
    b = S390Builder(REGION3, base=0x100000)
    b.map(0x200000, 0x500000, KB4, S390_IEP)
    b.map(0x300000, 0x600000, KB4, 0)
    b.finish()
    tbl, idx = b.slot(0x300000, 1)
    b.set_entry(tbl, idx, b.entry(tbl, idx) | S390_P | S390_IEP)  # IEP in a table entry: no meaning
    mem = b.memory(tmp_path)
    assert perm_text(translate(mem, REGION3, b.root, 0x200000).perm) == "rw-"
    t = translate(mem, REGION3, b.root, 0x300000)
    assert perm_text(t.perm) == "r-x"
    assert "P" in t.steps[1].flags.split() and t.steps[-1].kind == "leaf"
    mem.close()


def test_describe_decodes_the_fields():
    """describe() names origins, TF/TL, TT and the I/P/IEP/FC bits as the PoP does."""
    assert describe("pud", 0x7FFF0007) == "RTO/STO=0x7fff0000 TF=0 TL=3 TT=1"
    assert describe("pud", 0x80000000 | 0x4 | S390_FC | S390_P | S390_IEP) == "RFAA=0x80000000 FC TT=1 P IEP"
    assert describe("pmd", 0x7FFFE800) == "PTO=0x7fffe800 TT=0"
    assert describe("pmd", 0x20) == "PTO=0x0 TT=0 I"
    assert describe("pte", 0x10021D) == "PFRA=0x100000 P sw=0x1d"
    assert describe("pte", 0x400 | 0x800) == "PFRA=0x0 bit52 I"


# -- TF / TL: partial tables ---------------------------------------------------------------------


def test_asce_table_length_limits_the_root(tmp_path):
    """With ASCE TL=0 only the first 512 region-third entries exist: higher VAs fault and are holes in the walk."""
    full = S390Builder(REGION3, base=0x100000)
    for va in (0x1000, 600 << 31):
        full.map(va, 0x500000, KB4, 0)
    full.finish()
    short = make_mode(1, asce_tl=0)
    mem = full.memory(tmp_path)
    assert translate(mem, short, full.root, 0x1000).ok
    t = translate(mem, short, full.root, 600 << 31)
    assert not t.ok and "region-third-translation" in t.fault and t.steps[-1].kind == "fault"
    _, _, ok = translate_many(mem, short, full.root, np.array([0x1000, 600 << 31], np.uint64))
    assert ok.tolist() == [True, False]
    assert translate(mem, REGION3, full.root, 600 << 31).ok  # the full-length ASCE reaches it
    runs = root_runs(mem, short, full.root)
    at = int(np.searchsorted(runs.start, np.uint64(600 << 31), side="right")) - 1
    assert int(runs.klevel[at]) == 2 and int(runs.val[at]) == 0  # a pud hole
    mem.close()


def test_region_entry_tf_and_tl_window_the_next_table(tmp_path):
    """TF/TL of a region-third entry make its segment table partial; both translate paths and the walk agree."""
    b = S390Builder(REGION3, base=0x100000)
    lo_va, hi_va, mid_va = 5 * MB1, 1800 * MB1, 700 * MB1  # segment indexes 5, 1800, 700: quarters 0, 3, 1
    for va in (lo_va, hi_va, mid_va):
        b.map(va, 0x500000, KB4, 0)
    b.finish()
    b.set_entry(b.root, 0, table_entry("pud", b.entry(b.root, 0) & ~0xFFF, tf=1, tl=2))
    mem = b.memory(tmp_path)
    assert translate(mem, REGION3, b.root, mid_va).ok
    for va in (lo_va, hi_va):
        t = translate(mem, REGION3, b.root, va)
        assert not t.ok and "segment-translation" in t.fault and "outside the table" in t.steps[-1].flags
    _, _, ok = translate_many(mem, REGION3, b.root, np.array([lo_va, mid_va, hi_va], np.uint64))
    assert ok.tolist() == [False, True, False]
    runs = root_runs(mem, REGION3, b.root)
    present = {int(runs.start[k]) for k in range(len(runs)) if int(runs.klevel[k]) == 4 and not runs.val[k] & S390_PAGE_I}
    assert present == {mid_va}
    mem.close()


# -- translate_many == translate on random tables --------------------------------------------------

entry_st = st.tuples(
    st.sampled_from(["map4k", "map1m", "map2g", "inv", "tt", "window", "bit52"]),
    st.integers(0, (1 << 42) - 1),
    st.integers(0, 3),
    st.integers(0, 3),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dt=st.sampled_from([1, 2, 0]),
    asce_tl=st.integers(0, 3),
    ops=st.lists(entry_st, min_size=1, max_size=10),
    probes=st.lists(st.integers(0, (1 << 42) - 1), max_size=16),
)
def test_translate_many_equals_translate_on_random_tables(dt, asce_tl, ops, probes):
    """For random tables with partial windows and bad entries, translate_many() equals translate() everywhere."""
    mode = make_mode(dt)
    top = 1 << mode.va_bits
    b = S390Builder(mode, base=0x100000)
    done = []
    for what, va, a, c in ops:
        va %= top
        try:
            if what.startswith("map"):
                size = {"map4k": KB4, "map1m": MB1, "map2g": GB2}[what]
                va &= ~(size - 1)
                b.map(va, (a + 1) * GB2 if size == GB2 else 0x4000000 + a * MB1, size, S390_SW_RW if size == KB4 else S390_SEG_SW_RW)
                done.append(va + (c * 8) % size)
            elif what == "window" and len(mode.levels) > 2:
                tbl, idx = b.slot(va, len(mode.levels) - 3)
                e = b.entry(tbl, idx)
                if e and not e & S390_I_REGION:
                    b.set_entry(tbl, idx, (e & ~0xC3) | (min(a, c) << 6) | max(a, c))
            elif what in ("inv", "tt", "bit52"):
                level = (a % len(mode.levels)) if what != "bit52" else len(mode.levels) - 1
                tbl, idx = b.slot(va, level)
                e = b.entry(tbl, idx)
                if e:
                    b.set_entry(tbl, idx, e | (S390_PTE_BIT52 if what == "bit52" else
                                               (S390_PAGE_I if level == len(mode.levels) - 1 else S390_I_REGION)
                                               if what == "inv" else 0xC))
        except (ValueError, KeyError):
            pass
    b.finish()
    short = make_mode(dt, asce_tl)
    with tempfile.TemporaryDirectory() as d:
        mem = b.memory(d)
        vas = done + [p % top for p in probes]
        pas, sizes, ok = translate_many(mem, short, b.root, np.array(vas, np.uint64))
        for i, va in enumerate(vas):
            t = translate(mem, short, b.root, va)
            assert bool(ok[i]) == t.ok, (hex(va), t.fault)
            if t.ok:
                assert int(pas[i]) == t.pa and int(sizes[i]) == t.page_size
        mem.close()


def test_empty_entries_of_every_level_are_linux_values():
    """The builder's empty entries are the kernel's *_EMPTY values, holes to the kernel's walker."""
    assert [empty_entry(r) for r in ("pgd", "p4d", "pud", "pmd", "pte")] == [0x2C, 0x28, 0x24, 0x20, 0x400]
    assert _one(REGION1, 0, 0x2C)[0] == Kind.HOLE
    assert _one(REGION1, 1, 0x28)[0] == Kind.HOLE
    assert _one(REGION1, 2, 0x24)[0] == Kind.HOLE
    assert _one(REGION1, 3, 0x20)[0] == Kind.HOLE
