"""The compiled x86-64 ptdump (pagewalk._x86dump) against the numpy path it stands in for.

`kernel/x86.py` dump() and checkwx() use the compiled path whenever it is built, so the golden
tests (tests/test_golden_x86_64.py) hold it to the kernel's own text; here it is held equal to
format_fast() over iter_runs() on every capture and view, on kdump files (its table-reader
path), on the bench's synthetic shapes, and on hostile tables. Random tables are compared in
tests/test_ptdump_properties.py (assert_all_agree()).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from builders import X86_NX, X86_P, X86_RW, PageTableBuilder
from conftest import FIXTURES, X86_64_CASES

from pagewalk import open_image
from pagewalk.arch import x86
from pagewalk.errors import PagewalkError
from pagewalk.ptdump import x86_compiled
from pagewalk.ptdump.x86 import Layout, format_fast
from pagewalk.runs import MAX_STREAM_RUNS, iter_runs
from pagewalk.target import read_kallsyms, resolve


def both(mem, mode, root, layout, check_wx=False, max_runs=-1):
    """(numpy text, numpy state, compiled text, compiled result) of one table."""
    a, b = io.StringIO(), io.StringIO()
    sa = format_fast(mode, iter_runs(mem, mode, root, max_runs=max_runs), layout, None if check_wx else a, check_wx=check_wx)
    sb = x86_compiled.run(mem, mode, root, layout, None if check_wx else b, check_wx=check_wx, max_runs=max_runs)
    return a.getvalue(), sa, b.getvalue(), sb


def test_engine_is_built():
    """The C extension is built by the package's own install (setup.py), so the fast path is in use."""
    assert x86_compiled._x86dump is not None
    assert x86_compiled.available(x86.X86_64_4LEVEL, Layout(l5=False))
    assert x86_compiled.available(x86.X86_64_5LEVEL, Layout(l5=True))


def test_not_used_for_i386():
    """i386 (Layout32, 4-byte or PAE entries) stays on the numpy path."""
    from pagewalk.ptdump.x86 import Layout32

    assert not x86_compiled.available(x86.I386_PAE, Layout32(pae=True))
    assert not x86_compiled.available(x86.X86_64_4LEVEL, Layout32(pae=True))


def test_default_run_limit_matches_runs():
    """Without runs.py loaded the compiled path uses runs.MAX_STREAM_RUNS's default."""
    assert x86_compiled.DEFAULT_MAX_STREAM_RUNS == MAX_STREAM_RUNS


@pytest.mark.parametrize("case", X86_64_CASES)
def test_captures_every_view_equal(case):
    """On every x86-64 capture and view, the compiled text and W+X accounting equal the numpy path's."""
    d = FIXTURES / "x86_64" / case
    mem = open_image(str(d / "core.elf"))
    ks = d / "kallsyms.txt"
    t = resolve(mem, None, {}, read_kallsyms(str(ks)) if ks.exists() else {}, {}, "auto")
    mode = x86.ptdump_view(t.mode)
    for view in t.roots:
        text_a, sa, text_b, sb = both(mem, mode, t.root(view), t.layout)
        assert text_b == text_a and text_b.startswith("---[ User Space ]---\n")
        assert sb.ranges_written == sa.ranges_written == text_a.count("\n0x") + text_a.startswith("0x")
        _, sa, _, sb = both(mem, mode, t.root(view), t.layout, check_wx=True)
        assert (sb.wx_pages, sb.wx_ranges, sb.wx_ranges_dropped) == (sa.wx_pages, sa.wx_ranges, sa.wx_ranges_dropped)
    mem.close()


def test_rodata_off_wx_counts_equal():
    """The rodata=off capture's W+X ranges (thousands of pages) come out identical from both paths."""
    d = FIXTURES / "x86_64" / "6.1-nokaslr-5level-rodata-off"
    mem = open_image(str(d / "core.elf"))
    t = resolve(mem, None, {}, {}, {}, "auto")
    _, sa, _, sb = both(mem, x86.ptdump_view(t.mode), t.root("kernel"), t.layout, check_wx=True)
    assert sb.wx_pages == sa.wx_pages > 10000
    assert sb.wx_ranges == sa.wx_ranges
    mem.close()


@pytest.mark.parametrize("name", ["zlib.kdump", "flat-zlib.kdump"])
def test_kdump_reader_path_equal(name):
    """A kdump file (tables served by a Python reader, not the mapping) gives the numpy path's text."""
    mem = open_image(str(FIXTURES / "kdump" / name))
    if mem.cpu.arch not in (None, "x86_64"):
        pytest.fail(f"{name} is not an x86-64 kdump: {mem.cpu.arch}")
    assert not isinstance(x86_compiled._memory(mem), tuple)  # the reader, not the direct mapping
    t = resolve(mem, None, {}, {}, {}, "auto")
    text_a, _, text_b, _ = both(mem, x86.ptdump_view(t.mode), t.root("kernel"), t.layout)
    assert text_b == text_a and text_a.count("\n") > 50
    mem.close()


def _builder_with_shared(tmp_path, refs: int, distinct: bool):
    """A 4-level table where `refs` PMD entries share one PTE table (KASAN's early shadow shape)."""
    mode = x86.X86_64_4LEVEL
    b = PageTableBuilder(mode)
    shared = b.alloc_table()
    for k in range(512):
        flags = X86_P | (X86_RW if distinct and k % 2 else 0) | X86_NX
        b.set_entry(shared, k, (0x200000 + k * 4096) | flags)
    base = 0xFFFFEC0000000000  # KASAN's shadow region on 4-level
    for k in range(refs):
        t, i = b.slot(base + k * (2 << 20), 2, create=True)
        b.set_entry(t, i, b.make_table_entry(shared))
    return mode, b, b.memory(str(tmp_path))


@pytest.mark.parametrize("distinct", [False, True])
def test_shared_table_equal(tmp_path, distinct):
    """A PTE table shared by 2 000 PMD entries gives the same text (cached run list replayed)."""
    mode, b, mem = _builder_with_shared(tmp_path, 2000, distinct)
    layout = Layout(l5=False)
    text_a, sa, text_b, sb = both(mem, mode, b.root, layout, max_runs=0)
    assert text_b == text_a
    _, sa, _, sb = both(mem, mode, b.root, layout, check_wx=True, max_runs=0)
    assert (sb.wx_pages, sb.wx_ranges_dropped) == (sa.wx_pages, sa.wx_ranges_dropped)
    mem.close()


def test_run_limit_stops_with_the_same_error(tmp_path):
    """Past max_runs runs both paths stop with the same error, the compiled one after writing what it had."""
    mode, b, mem = _builder_with_shared(tmp_path, 2000, True)
    layout = Layout(l5=False)
    errors = []
    outs = []
    for impl in ("numpy", "compiled"):
        out = io.StringIO()
        with pytest.raises(PagewalkError) as e:
            if impl == "numpy":
                format_fast(mode, iter_runs(mem, mode, b.root, max_runs=5000), layout, out)
            else:
                x86_compiled.run(mem, mode, b.root, layout, out, max_runs=5000)
        errors.append(str(e.value))
        outs.append(out.getvalue())
    assert errors[0] == errors[1] and "more than 5000 runs" in errors[0]
    assert outs[1].startswith("---[ User Space ]---\n") and outs[1].count("\n") > 1000
    full = io.StringIO()
    x86_compiled.run(mem, mode, b.root, layout, full, max_runs=0)
    assert full.getvalue().startswith(outs[1])
    mem.close()


def test_missing_tables_and_loops_equal(tmp_path):
    """Entries naming tables outside the image, and entries pointing back up the tree, read alike."""
    mode = x86.X86_64_4LEVEL
    b = PageTableBuilder(mode)
    b.map(0xFFFF888000000000, 0x100000, 4096, X86_P | X86_RW | X86_NX)
    t, i = b.slot(0xFFFF888000200000, 2, create=True)
    b.set_entry(t, i, (1 << 45) | X86_P | X86_RW)  # a PTE table far outside the image
    t, i = b.slot(0xFFFFC90000000000, 1, create=True)
    b.set_entry(t, i, b.make_table_entry(b.root))  # a PUD entry naming the root as its PMD table
    mem = b.memory(str(tmp_path))
    text_a, _, text_b, _ = both(mem, mode, b.root, Layout(l5=False))
    assert text_b == text_a and "not in image] pmd" in text_b
    mem.close()


def test_text_to_a_real_file_equal(tmp_path):
    """Written through a file's byte buffer (the CLI's case), the text is the same as through write()."""
    d = FIXTURES / "x86_64" / X86_64_CASES[0]
    mem = open_image(str(d / "core.elf"))
    t = resolve(mem, None, {}, {}, {}, "auto")
    mode = x86.ptdump_view(t.mode)
    path = tmp_path / "dump.txt"
    with open(path, "w") as f:
        f.write("before\n")
        x86_compiled.run(mem, mode, t.root("kernel"), t.layout, f)
        f.write("after\n")
    a = io.StringIO()
    format_fast(mode, iter_runs(mem, mode, t.root("kernel")), t.layout, a)
    assert path.read_text() == "before\n" + a.getvalue() + "after\n"
    mem.close()


def test_env_switch_turns_it_off():
    """PAGEWALK_NO_COMPILED=1 sends x86-64 back to the numpy path (for comparisons and bisecting)."""
    code = (
        "from pagewalk.ptdump import x86_compiled; from pagewalk.arch import x86; "
        "from pagewalk.ptdump.x86 import Layout; print(x86_compiled.available(x86.X86_64_4LEVEL, Layout(l5=False)))"
    )
    env = dict(os.environ, PAGEWALK_NO_COMPILED="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_uniform_bomb_is_fast(tmp_path):
    """A table tree where every entry of every level names the same next table (512^4 entries) dumps at once."""
    mode = x86.X86_64_4LEVEL
    b = PageTableBuilder(mode)
    tables = [b.root] + [b.alloc_table() for _ in range(3)]
    for lvl in range(3):
        for k in range(512):
            b.set_entry(tables[lvl], k, b.make_table_entry(tables[lvl + 1]))
    for k in range(512):
        b.set_entry(tables[3], k, (k * 4096) | X86_P | X86_RW)
    mem = b.memory(str(tmp_path))
    out = io.StringIO()
    r = x86_compiled.run(mem, mode, b.root, Layout(l5=False), out)
    text_a, _, _, _ = both(mem, mode, b.root, Layout(l5=False))
    assert out.getvalue() == text_a and r.ranges_written == text_a.count("\n0x")
    assert "USR" not in text_a and " RW " in text_a  # the kernel half: every entry is the same page run
    mem.close()
