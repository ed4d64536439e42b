"""Hostile tables: bombs, loops and random bytes finish, bounded, without a traceback."""

from __future__ import annotations

import io
import time

import numpy as np
from builders import X86_TABLE_FLAGS, PageTableBuilder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagewalk.errors import PagewalkError
from pagewalk.arch.x86 import X86_64_4LEVEL, X86_64_5LEVEL
from pagewalk.memory.raw import RawMemory
from pagewalk.ptdump.x86 import Layout, format_fast
from pagewalk.runs import iter_runs, root_runs
from pagewalk.translate import translate, translate_many


def _bomb(tmp_path, mode, leaf_value: int):
    """One table per level; every entry of every table points at the next one (512^levels leaves)."""
    b = PageTableBuilder(mode)
    tables = [b.root] + [b.alloc_table() for _ in mode.levels[1:]]
    for upper, lower in zip(tables, tables[1:]):
        for i in range(512):
            b.set_entry(upper, i, lower | X86_TABLE_FLAGS)
    for i in range(512):
        b.set_entry(tables[-1], i, leaf_value + (i << 12) * 0)
    return b.memory(tmp_path), b.root


def test_five_level_bomb_is_as_cheap_as_five_tables(tmp_path):
    """A 512^5-leaf bomb dumps and checks from its five distinct tables, in well under a second."""
    mem, root = _bomb(tmp_path, X86_64_5LEVEL, 0x1000 | 0x63 | (1 << 63))
    t0 = time.perf_counter()
    runs = root_runs(mem, X86_64_5LEVEL, root)
    out = io.StringIO()
    st_ = format_fast(X86_64_5LEVEL, runs, Layout(l5=True), out, check_wx=True)
    assert time.perf_counter() - t0 < 5
    assert len(runs) < 64
    assert st_.wx_pages == 0  # RW but NX: not W+X
    text = out.getvalue()
    assert "RW" in text and text.count("\n") < 100


def test_bomb_with_alternating_leaves_is_refused_or_bounded(tmp_path):
    """A bomb whose shared PTE table alternates two values expands per reference; it stays bounded."""
    b = PageTableBuilder(X86_64_4LEVEL)
    tables = [b.root] + [b.alloc_table() for _ in range(3)]
    for upper, lower in zip(tables, tables[1:]):
        for i in range(4):  # a small fan-out keeps the expansion testable
            b.set_entry(upper, i, lower | X86_TABLE_FLAGS)
    for i in range(512):
        b.set_entry(tables[-1], i, (0x5000 | 0x63) if i % 2 else (0x6000 | 0x61))
    mem = b.memory(tmp_path)
    runs = root_runs(mem, X86_64_4LEVEL, b.root)
    # 4*4*4 references to the PTE table, 512 runs each, plus one hole run per table and level
    assert len(runs) == 4 * 4 * 4 * 512 + 4 * 4 + 4 + 1


def test_loop_back_to_the_root_terminates(tmp_path):
    """Every entry of the root pointing at the root itself is walked once per level, not forever."""
    b = PageTableBuilder(X86_64_4LEVEL)
    for i in range(512):
        b.set_entry(b.root, i, b.root | X86_TABLE_FLAGS)
    mem = b.memory(tmp_path)
    runs = root_runs(mem, X86_64_4LEVEL, b.root)
    out = io.StringIO()
    format_fast(X86_64_4LEVEL, runs, Layout(l5=False), out)
    assert out.getvalue().startswith("---[ User Space ]---")
    tr = translate(mem, X86_64_4LEVEL, b.root, 0xFFFF800000000000)
    assert len(tr.steps) == 4


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), l5=st.booleans(), structured=st.booleans())
def test_random_bytes_as_tables_never_crash(tmp_path, seed, l5, structured):
    """Random bytes read as page tables dump, check and translate without an exception."""
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2**64, size=4 * 512, dtype=np.uint64)
    if structured:  # entries that point inside the image, so the walk goes deep
        words = (words & np.uint64(0x8000_0000_0000_0FFF)) | (rng.integers(0, 4, size=len(words), dtype=np.uint64) << np.uint64(12))
    data = words.tobytes()
    path = tmp_path / "rand.raw"
    path.write_bytes(data)
    mode = X86_64_5LEVEL if l5 else X86_64_4LEVEL
    mem = RawMemory(str(path))
    try:
        runs = root_runs(mem, mode, 0)
    except PagewalkError as e:  # a bomb with varied contents: refused with a message (README "Limits")
        assert "bomb" in str(e)
        runs = None
    else:
        out = io.StringIO()
        format_fast(mode, runs, Layout(l5=l5), out, check_wx=True)
        assert out.getvalue().startswith("---[ User Space ]---")
    # the streamed dump (the CLI's): the same text, or it streams until its run limit and says why
    streamed = io.StringIO()
    try:
        format_fast(mode, iter_runs(mem, mode, 0, chunk_runs=4096, max_runs=200_000), Layout(l5=l5), streamed, check_wx=True)
    except PagewalkError as e:
        assert "bomb" in str(e) and "200000 runs" in str(e)
    else:
        assert runs is None or streamed.getvalue() == out.getvalue()
    vas = np.frombuffer(data[:800], dtype=np.uint64)
    pa, size, ok = translate_many(mem, mode, 0, vas)
    for va, p, good in list(zip(vas.tolist(), pa.tolist(), ok.tolist()))[:20]:
        tr = translate(mem, mode, 0, va)
        assert tr.ok == good and (not good or tr.pa == p)


def test_thousands_of_tables_outside_the_image_share_one_row(tmp_path, monkeypatch):
    """Entries naming thousands of distinct absent tables cost one row: the runs, the text and the
    missing-table count are those of a walk that keeps every absent table apart."""
    import pagewalk.runs as runs_mod
    from pagewalk.analysis.stats import stats
    from pagewalk.target import Target

    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0xFFFF888000000000, 0x200000, 4096, 1 | 2)  # one real 4K page: one PTE table in the image
    pmd = b.slot(0xFFFF888000000000, 2)[0]
    far = 1 << 40  # PTE tables far outside the image
    for k in range(1, 512):
        b.set_entry(pmd, k, (far + k * 4096) | X86_TABLE_FLAGS)
    pud = b.slot(0xFFFF888000000000, 1)[0]
    for k in range(1, 8):  # and PMD tables outside it: their entries are never read
        b.set_entry(pud, k, (far + (1 << 30) + k * 4096) | X86_TABLE_FLAGS)
    mem = b.memory(tmp_path)
    monkeypatch.setattr(runs_mod, "ABSENT_COLLAPSE", 4)
    collapsed = runs_mod.discover(mem, X86_64_4LEVEL, b.root)
    folded = root_runs(mem, X86_64_4LEVEL, b.root)
    monkeypatch.setattr(runs_mod, "ABSENT_COLLAPSE", 1 << 30)
    apart = runs_mod.discover(mem, X86_64_4LEVEL, b.root)
    whole = root_runs(mem, X86_64_4LEVEL, b.root)
    assert len(collapsed[3].pas) < len(apart[3].pas) == 512
    assert collapsed[3].absent_extra + int((~collapsed[3].ok).sum()) == int((~apart[3].ok).sum()) == 511
    for col in ("start", "klevel", "val", "key", "eff"):
        assert np.array_equal(getattr(folded, col), getattr(whole, col)), col
    monkeypatch.setattr(runs_mod, "ABSENT_COLLAPSE", 4)
    st_ = stats(Target(mem, X86_64_4LEVEL, {"kernel": b.root}), "kernel")
    assert st_.levels[3].tables_missing == 511 and st_.levels[2].tables_missing == 7
