"""The analyses' batched (chunked) sweeps give exactly the one-shot answers, whatever the batch size."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pagewalk.analysis.aliases import find_aliases, sweep, wx_segments
from pagewalk.analysis.mappings import FAULT, MAPPED, Mappings
from pagewalk.arch.x86 import X86_64_4LEVEL
from pagewalk.errors import UsageError

diff_mod = importlib.import_module("pagewalk.analysis.diff")  # the module (the package exports the function)
U64 = np.uint64
PAGE = 4096
TOP = 1 << 64
# x86 bits the analyses read (arch_bits): present, RW, US, PWT, PCD, global, NX
BITS = [1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 8, 1 << 63]


@st.composite
def interval_sets(draw, max_n: int = 40, pa_pages: int = 24, top: bool = True) -> Mappings:
    """Random VA-sorted disjoint intervals of 4K pages over a few physical pages (many aliases),
    some of them repeat intervals (every entry maps one page), some not mapped."""
    n = draw(st.integers(0, max_n))
    va = 0xFFFF888000000000
    cols: dict[str, list] = {k: [] for k in ("va_start", "size", "pa_start", "entry", "perm", "repeat", "status")}
    for _ in range(n):
        va += draw(st.integers(0, 3)) * PAGE
        pages = draw(st.integers(1, 6))
        rep = draw(st.integers(0, 5)) == 0
        cols["va_start"].append(va)
        cols["size"].append(pages * PAGE)
        cols["pa_start"].append(draw(st.integers(0, pa_pages)) * PAGE)
        bits = sum(b for b in BITS if draw(st.booleans()))
        cols["entry"].append(1 | bits)
        cols["perm"].append(bits)
        cols["repeat"].append(rep)
        cols["status"].append(FAULT if draw(st.integers(0, 9)) == 0 else MAPPED)
        va += pages * PAGE
    if top and n and draw(st.booleans()):  # the last interval ends at the top of the address space
        cols["va_start"][-1] = TOP - cols["size"][-1]
    return Mappings(
        X86_64_4LEVEL, 0x1000, "kernel",
        np.array(cols["va_start"], U64), np.array(cols["size"], U64), np.array(cols["pa_start"], U64),
        np.full(n, 3, np.int8), np.array(cols["entry"], U64), np.array(cols["perm"], U64),
        np.array(cols["repeat"], bool), np.array(cols["status"], np.int8))


def _reference_sweep(m: Mappings):
    """The one-shot sweep (before batching): segments, weights, flags and pairs as sets."""
    n = len(m)
    if n == 0:
        return [], {}
    w = np.where(m.repeat, m.size // m.span, U64(1)).astype(np.int64)
    pa_end = m.pa_start + m.pa_size
    b = np.unique(np.concatenate([m.pa_start, pa_end]))
    lo, hi = np.searchsorted(b, m.pa_start), np.searchsorted(b, pa_end)
    diff = np.bincount(lo, weights=w, minlength=len(b) + 1) - np.bincount(hi, weights=w, minlength=len(b) + 1)
    cov = np.cumsum(diff.astype(np.int64))[: len(b) - 1]
    p = m.perms
    segs, members = [], {}
    for j in np.flatnonzero(cov >= 2).tolist():
        ivs = [i for i in range(n) if lo[i] <= j < hi[i]]
        ws = {i: int(w[i]) for i in ivs}

        def cnt(flag, ivs=ivs, ws=ws):
            return sum(ws[i] for i in ivs if flag[i])

        uw = p.write & p.user
        kwx = cnt(p.write) * cnt(p.kexec) - cnt(p.write & p.kexec) > 0
        uwx = cnt(uw) * cnt(p.uexec) - cnt(uw & p.uexec) > 0
        segs.append((int(b[j]), int(b[j + 1]), int(cov[j]), bool(kwx or uwx), bool(kwx), bool(uwx)))
        members[int(b[j])] = ivs
    return segs, members


def _as_lists(a):
    segs = list(zip(a.seg_start.tolist(), a.seg_end.tolist(), a.weight.tolist(), a.wx.tolist(),
                    a.kernel_wx.tolist(), a.user_wx.tolist()))
    members: dict[int, list[int]] = {}
    for s, iv in zip(a.pair_seg.tolist(), a.pair_iv.tolist()):
        members.setdefault(int(a.seg_start[s]), []).append(iv)
    return segs, members


@settings(max_examples=60, deadline=None)
@given(interval_sets(), st.integers(1, 9))
def test_batched_alias_sweep_equals_the_one_shot_sweep(m, chunk):
    """Sweeping a few intervals at a time gives the one-shot sweep's segments, weights, W/X flags and members (in VA order)."""
    mm = m.mapped()
    ref_segs, ref_members = _reference_sweep(mm)
    segs, members = _as_lists(sweep(mm, chunk=chunk))
    assert segs == ref_segs
    assert members == ref_members
    wx = wx_segments(mm, chunk=chunk)  # only the W/X ones, each with its place among all
    assert _as_lists(wx)[0] == [s for s in ref_segs if s[3]]
    assert wx.index.tolist() == [k for k, s in enumerate(ref_segs) if s[3]]


@settings(max_examples=40, deadline=None)
@given(interval_sets(), st.integers(1, 9))
def test_alias_result_does_not_depend_on_the_batch_size(m, chunk):
    """Counts, bytes, classes, groups and the W/X list are the same with batches of a few intervals as in one batch."""
    one = find_aliases(m, max_members=3)
    few = find_aliases(m, max_members=3, chunk=chunk)
    assert (len(few), few.aliased_bytes, few.wx_count) == (len(one), one.aliased_bytes, one.wx_count)
    assert few.classes() == one.classes()
    assert sum(c["count"] for c in few.classes()) == len(few)
    assert [g.as_dict() for g in few.wx] == [g.as_dict() for g in one.wx]
    assert [g.as_dict() for g in few.groups] == [g.as_dict() for g in one.groups]
    assert few.arrays.wx.tolist() == one.arrays.wx.tolist()
    odd = np.arange(1, len(few), 2)  # segments outside the kept (W/X and example) ones: swept again
    again = find_aliases(m, max_members=3, chunk=chunk)
    assert [g.as_dict() for g in again.build(odd)] == [g.as_dict() for g in one.build(odd)]


def _change_rows(r) -> list[tuple]:
    c = r.arrays
    return list(zip(*(getattr(c, f).astype(np.int64 if f in ("ia", "ib") else getattr(c, f).dtype).tolist()
                      for f in c.__dataclass_fields__)))


@settings(max_examples=60, deadline=None)
@given(interval_sets(max_n=30), interval_sets(max_n=30), st.integers(1, 5), st.booleans(), st.booleans())
def test_windowed_diff_equals_one_window(a, b, chunk, shift, ignore_pa):
    """Comparing in VA windows of a few intervals gives the one-window diff: rows coalesce across windows."""
    shifts = [diff_mod.Shift(0x3000, 0x1000, 0xFFFF888000000000, 0xFFFF888000040000)] if shift else []
    pa = "ignore" if ignore_pa else "exact"
    try:
        one = diff_mod.compare(a, b, shifts=shifts, pa=pa, chunk=1 << 30)
    except UsageError:  # the shift made A's intervals overlap: so in windows too
        with pytest.raises(UsageError):
            diff_mod.compare(a, b, shifts=shifts, pa=pa, chunk=chunk)
        return
    few = diff_mod.compare(a, b, shifts=shifts, pa=pa, chunk=chunk)
    assert _change_rows(few) == _change_rows(one)
    assert (few.same_bytes, few.moves, few.verdict) == (one.same_bytes, one.moves, one.verdict)
    assert [c.as_dict() for c in few.changes] == [c.as_dict() for c in one.changes]


def test_diff_coalesces_a_range_that_spans_windows():
    """One removed range of many intervals contiguous in VA and PA is one change, however many windows it spans."""
    n = 64
    va = 0xFFFF888000000000 + np.arange(n, dtype=U64) * U64(PAGE)
    a = Mappings(X86_64_4LEVEL, 0x1000, "kernel", va, np.full(n, PAGE, U64), np.arange(n, dtype=U64) * U64(PAGE),
                 np.full(n, 3, np.int8), np.full(n, 3, U64), np.full(n, 2, U64), np.zeros(n, bool),
                 np.full(n, MAPPED, np.int8))
    empty = a.select(np.zeros(n, bool))
    for chunk in (1, 3, 64):
        res = diff_mod.compare(a, empty, chunk=chunk)
        assert [(c.kind, c.va_start, c.size) for c in res.changes] == [("removed", int(va[0]), n * PAGE)]


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 2)), min_size=1, max_size=60))
def test_group_ids_are_exact_even_when_the_hash_collides(rows):
    """Rows get one group number per distinct key tuple, also when every hash collides (the keys decide)."""
    keys = [np.array(col, U64) for col in zip(*rows)]
    real = diff_mod._mix
    for mix in (real, lambda x: np.zeros_like(x)):
        diff_mod._mix = mix
        try:
            gid, ng = diff_mod._group_ids(keys)
        finally:
            diff_mod._mix = real
        by_key: dict[tuple, set[int]] = {}
        for r, g in zip(rows, gid.tolist()):
            by_key.setdefault(r, set()).add(g)
        assert all(len(v) == 1 for v in by_key.values())
        assert len({next(iter(v)) for v in by_key.values()}) == len(by_key)
        assert gid.max() < ng
