"""Streaming: `iter_runs()` chunks through `format_fast()` and `drive()` equal the whole-list paths.

The chunk size is forced small (down to one run a chunk), so runs that continue across chunk
boundaries, markers that fall on a boundary and ESPfix's line limit counted across chunks are all
exercised; bombs and loops stream in memory bounded by their distinct tables.
"""

from __future__ import annotations

import io
import itertools
import json
import tempfile
import time
import tracemalloc

import numpy as np
import pytest
from builders import X86_NX, X86_P, X86_RW, X86_TABLE_FLAGS, PageTableBuilder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ptdump_properties import (
    KB4,
    MB2,
    build_random,
    drive_ptdump,
    layout_st,
    make_layout,
    op_st,
    reference_ptdump,
    shared_st,
)

from pagewalk.arch.x86 import X86_64_4LEVEL, X86_64_5LEVEL
from pagewalk.errors import PagewalkError
from pagewalk.ptdump.core import drive
from pagewalk.ptdump.x86 import Layout, format_fast
from pagewalk.runs import Runs, iter_runs, root_runs

COLS = ("start", "klevel", "hw", "val", "key", "eff", "zero")


def merged(chunks: list[Runs]) -> dict[str, np.ndarray]:
    """The chunks concatenated, adjacent equal runs merged as `compress()` merges them."""
    d = {c: np.concatenate([getattr(r, c) for r in chunks]) for c in COLS}
    keep = np.ones(len(d["start"]), dtype=bool)
    keep[1:] = ~(
        (d["klevel"][1:] == d["klevel"][:-1])
        & (d["key"][1:] == d["key"][:-1])
        & (d["eff"][1:] == d["eff"][:-1])
        & (d["zero"][1:] == d["zero"][:-1])
    )
    return {c: v[keep] for c, v in d.items()}


def fast_text(mode, runs, layout, json_records=False):
    out = io.StringIO()
    st_ = format_fast(mode, runs, layout, out, check_wx=True, json_records=json_records)
    return out.getvalue(), st_


def _bomb(tmp_path, mode, leaf_values, fanout=512):
    """One table per level; `fanout` entries of every table point at the next; PTE slot i holds leaf_values[i % len]."""
    b = PageTableBuilder(mode)
    tables = [b.root] + [b.alloc_table() for _ in mode.levels[1:]]
    for upper, lower in itertools.pairwise(tables):
        for i in range(fanout):
            b.set_entry(upper, i, lower | X86_TABLE_FLAGS)
    for i in range(512):
        b.set_entry(tables[-1], i, leaf_values[i % len(leaf_values)])
    return b.memory(tmp_path), b.root


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    mode=st.sampled_from([X86_64_4LEVEL, X86_64_5LEVEL]),
    opts=layout_st,
    ops=st.lists(op_st, min_size=1, max_size=12),
    shared_spec=shared_st,
    chunk=st.sampled_from([2, 3, 7, 64, 600, 1 << 16]),
)
def test_random_tables_streamed_equal_whole(mode, opts, ops, shared_spec, chunk):
    """For random tables, any chunk size: merged chunks equal root_runs(), and text, JSON and W+X equal the whole-list paths."""
    layout = make_layout(mode, opts)
    b = build_random(mode, layout, ops, shared_spec)
    with tempfile.TemporaryDirectory() as d:
        mem = b.memory(d)
        whole = root_runs(mem, mode, b.root)
        chunks = list(iter_runs(mem, mode, b.root, chunk_runs=chunk))
        assert all(len(r) <= max(chunk, 1) for r in chunks)
        m = merged(chunks)
        for c in COLS:
            assert np.array_equal(m[c], getattr(whole, c)), c
        w_text, w_st = fast_text(mode, whole, layout)
        s_text, s_st = fast_text(mode, iter(chunks), layout)
        assert s_text == w_text
        assert (s_st.wx_pages, s_st.wx_ranges, s_st.ranges_written) == (w_st.wx_pages, w_st.wx_ranges, w_st.ranges_written)
        wj, _ = fast_text(mode, whole, layout, json_records=True)
        sj, _ = fast_text(mode, iter(chunks), layout, json_records=True)
        assert sj == wj
        json.loads("[" + sj + "]")
        # drive() over the chunks: the same events as over the whole list (which test_ptdump_properties
        # checks against the per-entry reference), so the same text and W+X ranges
        d_text, d_st = drive_ptdump(mode, iter(chunks), layout)
        dw_text, dw_st = drive_ptdump(mode, whole, layout)
        assert d_text == dw_text
        assert d_st.wx_ranges == dw_st.wx_ranges and d_st.wx_pages == dw_st.wx_pages
        mem.close()


@pytest.mark.parametrize("chunk", [1, 2, 5, 1 << 16])
def test_espfix_line_limit_and_markers_across_chunks(tmp_path, chunk):
    """ESPfix's 16-line limit, its "... N entries skipped ..." and every marker header come out the same when chunks are one run long."""
    mode = X86_64_4LEVEL
    layout = Layout(l5=False)
    b = PageTableBuilder(mode)
    espfix = 0xFFFFFF0000000000
    for k in range(40):
        b.map(espfix + k * KB4, 0x100000 + k * KB4, KB4, X86_P | (X86_RW if k % 2 else X86_NX))
    b.map(0xFFFFFFFF80000000, 0x1000000, MB2, X86_P)
    # a run crossing the Low Kernel Mapping marker: the marker splits it inside one run
    for k in range(8):
        b.map(layout.page_offset - 4 * KB4 + k * KB4, 0x2000000 + k * KB4, KB4, X86_P | X86_RW | X86_NX)
    mem = b.memory(tmp_path)
    ref_text, ref_st, _ = reference_ptdump(mem, mode, b.root, layout)
    s_text, s_st = fast_text(mode, iter_runs(mem, mode, b.root, chunk_runs=chunk), layout)
    d_text, _ = drive_ptdump(mode, iter_runs(mem, mode, b.root, chunk_runs=chunk), layout)
    assert s_text == ref_text == d_text
    assert "... 27 entries skipped ... \n---[ EFI Runtime Services ]---\n" in s_text
    assert "---[ Low Kernel Mapping ]---\n0xffff888000000000-0xffff888000004000" in s_text
    assert s_st.wx_pages == ref_st.wx_pages


def test_uniform_five_level_bomb_streams_few_runs_fast(tmp_path):
    """A 512^5-leaf bomb of identical PTEs streams as one run, from its five tables, in well under a second."""
    mem, root = _bomb(tmp_path, X86_64_5LEVEL, [0x1000 | 0x63 | (1 << 63)])
    t0 = time.perf_counter()
    chunks = list(iter_runs(mem, X86_64_5LEVEL, root, chunk_runs=4096))
    text, st_ = fast_text(X86_64_5LEVEL, iter(chunks), Layout(l5=True))
    assert time.perf_counter() - t0 < 2
    assert sum(len(r) for r in chunks) == 1
    assert st_.wx_pages == 0 and "RW" in text and text.count("\n") < 100


def test_varied_bomb_streams_in_bounded_memory_and_stops_with_a_message(tmp_path):
    """A 5-level bomb of alternating PTEs streams its runs in memory bounded by its tables, then stops at max_runs with a clear error."""
    mem, root = _bomb(tmp_path, X86_64_5LEVEL, [0x5000 | 0x63, 0x6000 | 0x61 | (1 << 63)])
    tracemalloc.start()
    n = 0
    try:
        with pytest.raises(PagewalkError, match="more than 3000000 runs.*bomb"):
            for r in iter_runs(mem, X86_64_5LEVEL, root, chunk_runs=1 << 14, max_runs=3_000_000):
                n += len(r)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 3_000_000 - (1 << 14) <= n <= 3_000_000
    assert peak < 40 << 20  # the cached PMD list (2^18 runs) and one chunk, not 3M runs
    # the whole-list path refuses the same bomb up front
    with pytest.raises(PagewalkError, match="bomb"):
        root_runs(mem, X86_64_5LEVEL, root)


def test_small_varied_bomb_streamed_output_equals_whole(tmp_path):
    """A bomb of small fan-out with varied PTEs: the streamed dump equals the whole-list dump, line for line."""
    mem, root = _bomb(tmp_path, X86_64_4LEVEL, [0x5000 | 0x63, 0x6000 | 0x61, 0], fanout=4)
    layout = Layout(l5=False)
    whole = root_runs(mem, X86_64_4LEVEL, root)
    for chunk in (7, 100, 3000):
        chunks = list(iter_runs(mem, X86_64_4LEVEL, root, chunk_runs=chunk))
        m = merged(chunks)
        assert all(np.array_equal(m[c], getattr(whole, c)) for c in COLS)
        assert fast_text(X86_64_4LEVEL, iter(chunks), layout)[0] == fast_text(X86_64_4LEVEL, whole, layout)[0]


def test_loop_back_to_the_root_streams(tmp_path):
    """Every root entry pointing at the root itself streams to the same text as the whole list."""
    b = PageTableBuilder(X86_64_4LEVEL)
    for i in range(512):
        b.set_entry(b.root, i, b.root | X86_TABLE_FLAGS)
    mem = b.memory(tmp_path)
    layout = Layout(l5=False)
    whole, _ = fast_text(X86_64_4LEVEL, root_runs(mem, X86_64_4LEVEL, b.root), layout)
    streamed, _ = fast_text(X86_64_4LEVEL, iter_runs(mem, X86_64_4LEVEL, b.root, chunk_runs=7), layout)
    assert streamed == whole and streamed.startswith("---[ User Space ]---")


def test_empty_and_missing_root_stream_like_whole(tmp_path):
    """A root outside the image and an empty root give the same (empty or hole-only) output streamed as whole."""
    b = PageTableBuilder(X86_64_4LEVEL)
    mem = b.memory(tmp_path)
    layout = Layout(l5=False)
    for root in (b.root, 1 << 40):
        whole, _ = fast_text(X86_64_4LEVEL, root_runs(mem, X86_64_4LEVEL, root), layout)
        streamed, _ = fast_text(X86_64_4LEVEL, iter_runs(mem, X86_64_4LEVEL, root, chunk_runs=1), layout)
        assert streamed == whole


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 2**64 - 1),
            st.integers(0, 2**64 - 1),
            st.one_of(st.integers(0, 10**9 - 1), st.sampled_from([0, 1, 999, 1000, 1001, 999_999, 10**6, 10**8])),
            st.integers(0, 6),
            st.integers(0, 2**64 - 1),
            st.integers(0, 4),
        ),
        min_size=1,
        max_size=40,
    ),
    bits=st.sampled_from([32, 64]),
)
def test_vectorised_lines_equal_printf(rows, bits):
    """The byte-table formatter of range lines prints what the kernel's "0x%0*lx-0x%0*lx   %9lu%c %s" does."""
    from pagewalk.arch.x86 import PTE_FLAGS_MASK
    from pagewalk.ptdump.x86 import _UNITS, _lines, printk_prot

    mod = (1 << bits) - 1
    s_, e_, v_, u_, k_, l_ = (list(c) for c in zip(*rows))
    s_ = [x & mod for x in s_]
    e_ = [x & mod for x in e_]
    k_ = [x & PTE_FLAGS_MASK for x in k_]
    w = bits // 4
    got = _lines(
        np.array(s_, np.uint64), np.array(e_, np.uint64), np.array(v_, np.uint64), np.array(u_, np.uint64),
        np.array(k_, np.uint64), np.array(l_, np.int8), bits,
    )
    want = "".join(
        "0x%0*x-0x%0*x   %9d%s %s" % (w, s, w, e, v, _UNITS[u], printk_prot(k, lv))  # noqa: UP031 (the kernel's printf)
        for s, e, v, u, k, lv in zip(s_, e_, v_, u_, k_, l_)
    )
    assert got == want


def test_wx_ranges_listed_up_to_a_cap_and_counted_beyond(tmp_path, monkeypatch):
    """Beyond MAX_WX_RANGES the W+X ranges are counted, not listed: the page count stays exact and memory flat."""
    import pagewalk.ptdump.x86 as px86

    mem, root = _bomb(tmp_path, X86_64_4LEVEL, [0x5000 | 0x63, 0x6000 | 0x61 | (1 << 63)], fanout=4)
    layout = Layout(l5=False)
    _, whole = fast_text(X86_64_4LEVEL, root_runs(mem, X86_64_4LEVEL, root), layout)
    monkeypatch.setattr(px86, "MAX_WX_RANGES", 100)
    _, capped = fast_text(X86_64_4LEVEL, iter_runs(mem, X86_64_4LEVEL, root, chunk_runs=1000), layout)
    assert len(whole.wx_ranges) == 4 * 4 * 4 * 256  # every other PTE of every reference: W+X
    assert capped.wx_ranges == whole.wx_ranges[:100]
    assert capped.wx_ranges_dropped == len(whole.wx_ranges) - 100
    assert capped.wx_pages == whole.wx_pages == 4 * 4 * 4 * 256


def test_drive_walks_unordered_ranges_in_array_order_over_chunks(tmp_path):
    """Ranges not in address order are walked in array order, as the kernel does, from chunks as from the whole list."""
    from test_ptdump_properties import RecordingState

    mem, root = _bomb(tmp_path, X86_64_4LEVEL, [0x5000 | 0x63, 0x6000 | 0x61, 0], fanout=3)
    layout = Layout(l5=False)
    ranges = list(reversed(layout.ranges())) + [(0x1000, 0x40_0000)]
    got = []
    for runs in (root_runs(mem, X86_64_4LEVEL, root), iter_runs(mem, X86_64_4LEVEL, root, chunk_runs=5)):
        out = io.StringIO()
        st_ = RecordingState(layout, out, check_wx=True)
        drive(st_, X86_64_4LEVEL, runs, ranges)
        got.append((out.getvalue(), st_.wx_ranges, st_.addrs))
    (w_text, w_wx, w_addrs), (c_text, c_wx, c_addrs) = got
    assert c_text == w_text and c_wx == w_wx
    # chunks add events equal to the state (ignored, as the kernel's note_page() ignores them)
    assert set(w_addrs) <= set(c_addrs)
    assert c_addrs[0] >= 0xFFFF800000000000  # the kernel half first, as the array says
