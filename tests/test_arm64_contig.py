"""arm64 contiguous runs (Arm ARM D8.6.1): inconsistent runs are found over whole tables and
reported by translate's trace and by dump/checkwx notes."""

from __future__ import annotations

import io
import shutil

import builders_arm64  # noqa: F401  (registers the arm64 entry formats)
import numpy as np
import pytest
from builders import PageTableBuilder
from builders_arm64 import (
    KERNEL_RO_X,
    KERNEL_RW,
    PTE_AF,
    PTE_CONT,
    PTE_RDONLY,
    PTE_SHARED,
    PTE_UXN,
)
from conftest import FIXTURES
from hypothesis import given, settings
from hypothesis import strategies as st

from pagewalk import open_image
from pagewalk.api import dump
from pagewalk.arch import arm64
from pagewalk.arch.arm64 import (
    CONT_ALIGN,
    CONT_ATTRS,
    CONT_MISSING,
    CONT_OA,
    PTE_DBM,
    contiguous_entries,
    encode_oa,
)
from pagewalk.cli import main
from pagewalk.kernel.arm64 import contiguous_report
from pagewalk.target import resolve
from pagewalk.translate import translate

K, M = 1 << 10, 1 << 20
# (granule, input size, hardware level, entries per run): every level that has contiguous runs
RUN_LEVELS = [
    (4 * K, 48, 3, 16), (4 * K, 48, 2, 16), (4 * K, 48, 1, 16),
    (16 * K, 47, 2, 128), (16 * K, 47, 1, 32),
    (64 * K, 42, 1, 32), (64 * K, 42, 0, 32),
]
PA0 = 1 << 40  # aligned to every run size


def test_run_lengths_per_granule_and_level():
    """16 entries at every 4K level, 128 (PTE) / 32 (PMD) with 16K, 32 at both 64K levels; none elsewhere."""
    assert [contiguous_entries(4 * K, lvl) for lvl in (0, 1, 2, 3)] == [0, 16, 16, 16]
    assert [contiguous_entries(16 * K, lvl) for lvl in (1, 2, 3)] == [0, 32, 128]
    assert [contiguous_entries(64 * K, lvl) for lvl in (1, 2, 3)] == [0, 32, 32]


def _leaf_type(mode, level: int) -> int:
    return 3 if level == len(mode.levels) - 1 else 1


def _run(mode, level: int, count: int, flags: int, pa: int = PA0) -> np.ndarray:
    """A consistent run of `count` leaves at `level` mapping `pa` onwards, in one table row."""
    size = mode.levels[level].entry_span
    row = np.zeros(mode.levels[level].entries, np.uint64)
    for k in range(count):
        row[count + k] = encode_oa(pa + k * size) | flags | PTE_CONT | _leaf_type(mode, level)
    return row


def _mode(granule: int, va_bits: int):
    return arm64.make_mode(granule, va_bits, upper=True)


@pytest.mark.parametrize("granule,va_bits,level,count", RUN_LEVELS)
def test_consistent_runs_have_no_problem(granule, va_bits, level, count):
    """A run of aligned leaves with one attribute set and consecutive aligned output addresses is
    fine, also when AF differs per entry or AP[2] differs where DBM is set (hardware-managed state)."""
    m = _mode(granule, va_bits)
    check = m.extra["contiguous_check"]
    row = _run(m, level, count, KERNEL_RW)
    assert not check(level, row[None, :]).any()
    row[count + 1] &= np.uint64(~PTE_AF & ((1 << 64) - 1))  # not accessed yet
    row[count:2 * count] |= np.uint64(PTE_DBM)
    row[count + 2] |= np.uint64(PTE_RDONLY)  # clean, where the others are dirty
    assert not check(level, row[None, :]).any()


@pytest.mark.parametrize("granule,va_bits,level,count", RUN_LEVELS)
@pytest.mark.parametrize(
    "damage,want",
    [("no_cont", CONT_MISSING), ("invalid", CONT_MISSING), ("attrs", CONT_ATTRS), ("oa", CONT_OA), ("align", CONT_ALIGN)],
)
def test_each_inconsistency_is_found(granule, va_bits, level, count, damage, want):
    """One entry without the bit, invalid, with other permissions, a non-consecutive or a misaligned
    output address: the run (only that run) gets the matching problem bit."""
    m = _mode(granule, va_bits)
    size = m.levels[level].entry_span
    pa = PA0 + (size if damage == "align" else 0)
    row = _run(m, level, count, KERNEL_RW, pa=pa)
    j = count + count // 2
    e = int(row[j])
    if damage == "no_cont":
        e &= ~PTE_CONT
    elif damage == "invalid":
        e &= ~1
    elif damage == "attrs":
        e |= PTE_RDONLY
    elif damage == "oa":
        e = (e & ~arm64.mask(47, 12)) | encode_oa(pa + 7 * count * size)
    row[j] = np.uint64(e)
    prob = m.extra["contiguous_check"](level, row[None, :])
    assert prob.shape == (1, m.levels[level].entries // count)
    assert prob[0, 1] & want
    assert not np.delete(prob[0], 1).any()


def test_bit_52_of_table_descriptors_is_not_a_run():
    """Bit 52 of a table descriptor is ignored by the MMU (D8.3.1): a PMD table of such entries has no run to check."""
    m = _mode(4 * K, 48)
    row = np.array([encode_oa(PA0 + k * 4 * K) | 3 | PTE_CONT for k in range(512)], np.uint64)
    assert not m.extra["contiguous_check"](2, row[None, :]).any()


def _reference(mode, level: int, row: list[int]) -> list[int]:
    """D8.6.1 entry by entry: the problem bits of every run slot of one table."""
    run = contiguous_entries(mode.extra["granule"], mode.extra["start_level"] + level)
    size = mode.levels[level].entry_span
    last = len(mode.levels) - 1
    keep = (arm64.mask(11, 2) & ~PTE_AF) | arm64.mask(54, 50)
    out = []
    for g in range(0, len(row), run):
        es = row[g : g + run]
        leaf = [e & 3 == (3 if level == last else 1) for e in es]
        if not any(lf and e & PTE_CONT for lf, e in zip(leaf, es)):
            out.append(0)
            continue
        bits = 0
        if not all(lf and e & PTE_CONT for lf, e in zip(leaf, es)):
            bits |= CONT_MISSING
        attrs = [(e & keep) & ~(PTE_RDONLY if e & PTE_DBM else 0) for e in es]
        if len(set(attrs)) > 1:
            bits |= CONT_ATTRS
        if not bits & CONT_MISSING:
            oas = [e & arm64.mask(47, mode.levels[level].shift) for e in es]
            if any(oa != oas[0] + k * size for k, oa in enumerate(oas)):
                bits |= CONT_OA
            if oas[0] % (run * size):
                bits |= CONT_ALIGN
        out.append(bits)
    return out


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_vectorised_check_equals_the_entry_by_entry_rule(data):
    """For random tables of random runs with random damage, the numpy check equals a per-entry reading of D8.6.1."""
    granule, va_bits, level, count = data.draw(st.sampled_from(RUN_LEVELS))
    m = _mode(granule, va_bits)
    size = m.levels[level].entry_span
    n = m.levels[level].entries
    rows = []
    for _ in range(data.draw(st.integers(1, 3))):
        row = [0] * n
        for g in data.draw(st.lists(st.integers(0, n // count - 1), max_size=4, unique=True)):
            flags = data.draw(st.sampled_from([KERNEL_RW, KERNEL_RO_X, KERNEL_RW | PTE_DBM]))
            pa = (g + 1) * count * size + data.draw(st.sampled_from([0, 0, size]))
            for k in range(count):
                row[g * count + k] = encode_oa(pa + k * size) | flags | PTE_CONT | _leaf_type(m, level)
            for _ in range(data.draw(st.integers(0, 2))):
                k = g * count + data.draw(st.integers(0, count - 1))
                row[k] ^= data.draw(st.sampled_from([PTE_CONT, 1, 2, PTE_AF, PTE_RDONLY, PTE_UXN, PTE_SHARED, 1 << 20, size]))
        rows.append(row)
    got = m.extra["contiguous_check"](level, np.array(rows, np.uint64))
    assert got.tolist() == [_reference(m, level, row) for row in rows]


def _table_with_runs(tmp_path, damage: bool):
    """4K/48-bit TTBR1 tables: a consistent 64K run of PTEs and, with `damage`, one PTE of a second
    run made read-only."""
    m = arm64.make_mode(4 * K, 48)
    b = PageTableBuilder(m)
    base = 0xFFFF_0000_0000_0000
    for run in range(2):
        for i in range(16):
            b.map(base + run * 64 * K + i * 4 * K, 0x4000_0000 + run * 64 * K + i * 4 * K, 4 * K, KERNEL_RW | PTE_CONT)
    if damage:
        t, i = b.slot(base + 64 * K + 5 * 4 * K, 3)
        b.set_entry(t, i, b.entry(t, i) | PTE_RDONLY)
    return m, b, b.memory(tmp_path), base


def test_translate_trace_warns_on_the_entry_of_an_inconsistent_run(tmp_path):
    """translate() adds a warning to the leaf of any entry of the damaged run, none to the consistent one."""
    m, b, mem, base = _table_with_runs(tmp_path, damage=True)
    good = translate(mem, m, b.root, base + 0x1234)
    assert good.ok and "warning" not in good.steps[-1].flags
    for va in (base + 64 * K, base + 64 * K + 5 * 4 * K + 8, base + 128 * K - 8):
        t = translate(mem, m, b.root, va)
        assert t.ok and t.pa == 0x4000_0000 + (va - base)
        assert "warning: contiguous run of 16 entries [16..31] is inconsistent" in t.steps[-1].flags
        assert "attributes or permissions differ" in t.steps[-1].flags


def test_contiguous_report_names_each_bad_run_with_its_va(tmp_path):
    """The whole-table scan finds the damaged PTE run at its VA, and a damaged PMD run, and nothing else."""
    m, b, _mem, base = _table_with_runs(tmp_path, damage=True)
    for i in range(16):  # a 32M PMD run with a misaligned output address
        b.map(base + 64 * M + i * 2 * M, 0x8000_0000 + (i + 1) * 2 * M, 2 * M, KERNEL_RW | PTE_CONT)
    total, found = contiguous_report(b.memory(tmp_path), m, b.root)
    assert total == 2
    assert sorted(found) == [(base + 64 * K, 64 * K, "pte", CONT_ATTRS), (base + 64 * M, 32 * M, "pmd", CONT_ALIGN)]
    assert contiguous_report(b.memory(tmp_path), m, b.root, limit=1)[0] == 2
    assert len(contiguous_report(b.memory(tmp_path), m, b.root, limit=1)[1]) == 1
    _m, b2, mem2, _ = _table_with_runs(tmp_path, damage=False)
    assert contiguous_report(mem2, m, b2.root) == (0, [])


# -- a real capture with one PTE changed ------------------------------------------------------------

CASE = FIXTURES / "arm64" / "6.1-nokaslr-48bit"
CON_VA = 0xFFFF_8000_0A00_0000  # "64K PTE RW NX SHD AF CON UXN MEM/NORMAL" in the kernel's ptdump


@pytest.fixture
def damaged_core(tmp_path):
    """A copy of the 6.1 capture whose PTE for CON_VA + 3 pages lost its contiguous bit."""
    core = tmp_path / "core.elf"
    shutil.copy(CASE / "core.elf", core)
    t = resolve(open_image(str(core)))
    tr = translate(t.mem, t.mode, t.root("kernel"), CON_VA + 3 * 4 * K)
    assert tr.ok and tr.steps[-1].entry & PTE_CONT
    step = tr.steps[-1]
    off, ok = t.mem.file_offsets(np.array([step.table_pa + step.index * 8], np.uint64), 8)
    assert ok[0]
    t.mem.close()
    with open(core, "r+b") as f:
        f.seek(int(off[0]))
        f.write((step.entry & ~PTE_CONT).to_bytes(8, "little"))
    return core


def test_real_capture_has_no_inconsistent_run():
    """The kernel's own tables (CON ranges in its ptdump) give no contiguous-run note."""
    t = resolve(open_image(str(CASE / "core.elf")))
    dump(t, "kernel", io.StringIO())
    assert not any("contiguous" in n for n in t.notes)


def test_dump_and_checkwx_note_the_damaged_run_on_stderr(damaged_core, capsys):
    """dump and checkwx print the kernel's text unchanged on stdout and a note naming the run on stderr."""
    assert main(["dump", str(damaged_core)]) == 0
    out, err = capsys.readouterr()
    assert "0xffff80000a000000-0xffff80000a010000" in err and "not every entry of the run is a valid leaf" in err
    assert "D8.6.1" in err and "contiguous" not in out
    main(["checkwx", str(damaged_core)])
    out, err = capsys.readouterr()
    assert "1 inconsistent contiguous run (PTE_CONT) in the kernel tables" in err
    assert out.splitlines()[-1].startswith("Checked W+X mappings")
    assert main(["translate", str(damaged_core), hex(CON_VA + 0x10)]) == 0
    out, _ = capsys.readouterr()
    assert "warning: contiguous run of 16 entries" in out
