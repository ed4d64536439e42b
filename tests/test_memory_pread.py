"""MappedMemory reads tables with pread(), not through the mapping: same results, bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
from builders import X86_P, X86_RW, PageTableBuilder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagewalk.arch import x86
from pagewalk.errors import MemoryReadError
from pagewalk.memory import base
from pagewalk.memory.base import MappedMemory


def reference_gather(mem: MappedMemory, data: bytes, pas: np.ndarray, count: int, dtype: np.dtype):
    """The mmap-indexing gather_tables() this replaced: typed views of the file at each phase."""
    dtype = np.dtype(dtype)
    isz = dtype.itemsize
    off, ok = mem.file_offsets(pas, count * isz)
    out = np.zeros((len(off), count), dtype)
    phase = off % isz
    for ph in sorted(set(phase[ok].tolist())):
        sel = ok & (phase == ph)
        view = np.frombuffer(data, dtype=dtype, count=(len(data) - ph) // isz, offset=ph)
        idx = (off[sel] - ph) // isz
        out[sel] = view[idx[:, None] + np.arange(count)]
    return out, ok


@contextmanager
def pread_limits(small: int, gap: int, span: int):
    """Temporarily other grouping limits, so that few bytes exercise group and buffer splits."""
    old = base._PREAD_SMALL, base._PREAD_GAP, base._PREAD_SPAN
    base._PREAD_SMALL, base._PREAD_GAP, base._PREAD_SPAN = small, gap, span
    try:
        yield
    finally:
        base._PREAD_SMALL, base._PREAD_GAP, base._PREAD_SPAN = old


@st.composite
def layouts(draw):
    """A file of random bytes, segments (sorted PAs with gaps, any file offsets, even odd ones and
    overlapping in the file), a dtype and table size, and PAs inside, across and outside them."""
    dtype = np.dtype(draw(st.sampled_from(["<u8", ">u8", "<u4", ">u4"])))
    count = draw(st.sampled_from([1, 2, 5, 16, 64]))
    nbytes = count * dtype.itemsize
    size = draw(st.integers(nbytes, 6000))
    data = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, 256, size, np.uint8).tobytes()
    segments = []
    pa = draw(st.integers(0, 1 << 20))
    for _ in range(draw(st.integers(1, 5))):
        n = draw(st.integers(1, size))
        off = draw(st.integers(0, size - n))
        segments.append((pa, n, off))
        pa += n + draw(st.sampled_from([0, 0, 1, 3, 8, 4096]))  # 0: adjacent segments (tables straddle)
    pas = []
    for _ in range(draw(st.integers(0, 40))):
        s_pa, s_n, _ = draw(st.sampled_from(segments))
        where = draw(st.sampled_from(["inside", "end", "before", "outside"]))
        if where == "inside":
            pas.append(s_pa + draw(st.integers(0, s_n - 1)))
        elif where == "end":  # tables ending at, or running past, the end of the segment
            pas.append(max(0, s_pa + s_n - nbytes + draw(st.integers(-3, 3))))
        elif where == "before":
            pas.append(max(0, s_pa - draw(st.integers(1, nbytes))))
        else:
            pas.append(draw(st.integers(0, pa + 2 * nbytes)))
    if pas and draw(st.booleans()):
        pas += draw(st.lists(st.sampled_from(pas), max_size=5))  # duplicates
    if draw(st.booleans()):
        pas.sort()
    limits = (draw(st.sampled_from([1, 256, 1 << 30])), draw(st.sampled_from([0, 1, 16, 8192])),
              draw(st.sampled_from([1, 64, 4 << 20])))
    return data, segments, np.array(pas, dtype=np.uint64), count, dtype, limits


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layouts())
def test_gather_tables_equals_mmap_indexing(tmp_path, layout):
    """gather_tables() by pread() returns the same rows, dtype and mask as indexing the mapping did."""
    data, segments, pas, count, dtype, limits = layout
    path = tmp_path / "image.bin"
    path.write_bytes(data)
    with MappedMemory(str(path), segments) as mem, pread_limits(*limits):
        want, want_ok = reference_gather(mem, data, pas, count, dtype)
        got, got_ok = mem.gather_tables(pas, count, dtype)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got_ok, want_ok)
        assert np.array_equal(got, want)
        one, one_ok = mem.gather(pas, dtype)
        assert np.array_equal(one_ok, mem.file_offsets(pas, dtype.itemsize)[1])
        assert np.array_equal(one, reference_gather(mem, data, pas, 1, dtype)[0][:, 0])


def test_scalar_reads_match_the_file(tmp_path):
    """read(), table_bytes() and table() (now pread()) give the file's bytes, across adjacent segments."""
    data = bytes(range(256)) * 40
    path = tmp_path / "image.bin"
    path.write_bytes(data)
    segments = [(0x1000, 0x800, 3), (0x1800, 0x800, 0x1001)]  # adjacent in PA, apart in the file
    with MappedMemory(str(path), segments) as mem:
        assert mem.read(0x17F0, 0x20) == data[3 + 0x7F0 : 3 + 0x800] + data[0x1001 : 0x1001 + 0x10]
        assert mem.table_bytes(0x1800, 0x100) == data[0x1001 : 0x1101]
        assert mem.read_u64(0x1001, ">") == int.from_bytes(data[4:12], "big")
        t = mem.table(0x1004, 6, np.dtype(">u4"))
        assert t.tolist() == np.frombuffer(data[7:31], ">u4").tolist() and not t.flags.writeable


def test_segment_past_end_of_file_is_absent(tmp_path):
    """A table in a segment the file does not back comes back as a zero row marked absent."""
    data = bytes(range(1, 256)) * 16 + b"\x01" * 16  # 4096 bytes, none zero
    path = tmp_path / "image.bin"
    path.write_bytes(data)
    with MappedMemory(str(path), [(0, 0x3000, 0)]) as mem:
        pas = np.array([0x0, 0x800, 0xF00, 0x1000, 0x2000], np.uint64)
        rows, ok = mem.gather_tables(pas, 32, np.dtype("<u8"))
        assert ok.tolist() == [True, True, True, False, False]
        assert np.array_equal(rows[0], np.frombuffer(data[:256], "<u8"))
        assert not rows[3:].any()
        rows, ok = mem.gather_tables(np.array([0xF00, 0x1F00], np.uint64), 64, np.dtype("<u8"))
        assert ok.tolist() == [False, False] and not rows.any()  # 0xF00: 0x200 bytes, 0x100 beyond EOF
        vals, ok = mem.gather(np.array([0xFF8, 0x1000, 0xFF0, 0x1FF8], np.uint64), np.dtype(">u8"))
        assert ok.tolist() == [True, False, True, False]  # small entries: read as one span
        assert vals.tolist() == [int.from_bytes(data[0xFF8:], "big"), 0, int.from_bytes(data[0xFF0:0xFF8], "big"), 0]
        with pytest.raises(MemoryReadError):
            mem.table(0xF80, 32, np.dtype("<u8"))  # in the segment, not in the file


_CHILD = r"""
import json, os, sys
from pagewalk.cli import main
a = json.loads(sys.argv[1])

def hwm():  # this process's peak RSS in KiB (ru_maxrss would carry the parent's over exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

if not a["release"]:  # nothing dropped from the mapping: what gather_tables() maps would stay
    from pagewalk.memory.base import MappedMemory
    MappedMemory.release = lambda self: None
import numpy, pagewalk.runs, pagewalk.ptdump.x86, pagewalk.ptdump.vector  # imports are not the walk
before = hwm()
rc = main(["dump", a["path"], "--image-format", "raw", "--base", hex(a["base"]), "--arch", "x86_64",
           "--reg", "cr3=" + hex(a["cr3"]), "--reg", "cr4=0x20", "--pti", "off", "-q", "-o", a["out"]])
after = hwm()
print(json.dumps({"rc": rc, "before_kib": before, "after_kib": after}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc (Linux)")
@pytest.mark.parametrize("release", [True, False], ids=["release", "no-release"])
def test_numpy_dump_memory_does_not_follow_table_bytes(tmp_path, release):
    """Dumping 64 MiB of PTE tables through the numpy path raises peak RSS by far less than 64 MiB,
    even with release() doing nothing (the tables are not read through the mapping)."""
    mode = x86.make_mode("4level")
    b = PageTableBuilder(mode)
    n_tables = 16384
    va0 = 0xFFFF_C900_0000_0000  # vmalloc: 16k consecutive PMD entries, each a PTE table
    for t in range(n_tables):
        b.map(va0 + (t << 21), 0x1_0000_0000, 4096, X86_P | X86_RW)
    img = np.frombuffer(b.image, np.uint64).copy()
    # fill every PTE table: a few runs per table, so that every table is read and decoded
    pte_pas = sorted({b.slot(va0 + (t << 21), 3)[0] for t in range(n_tables)})
    assert len(pte_pas) == n_tables
    rows = (np.array(pte_pas, np.int64) - b.base) // 8
    frame = (np.arange(n_tables * 512, dtype=np.uint64) + (1 << 20)) << np.uint64(12)
    flags = np.where(np.arange(512) % 64 < 32, X86_P | X86_RW, X86_P).astype(np.uint64)
    img.reshape(-1, 512)[rows // 512] = frame.reshape(n_tables, 512) | flags | np.uint64(1 << 63)
    path = tmp_path / "ptes.raw"
    img.tofile(path)
    args = {"path": str(path), "base": b.base, "cr3": b.root, "out": str(tmp_path / "dump.txt"),
            "release": release}
    env = dict(os.environ, PAGEWALK_NO_COMPILED="1")
    res = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(args)], env=env, capture_output=True, check=False,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["rc"] == 0
    text = (tmp_path / "dump.txt").read_text()
    assert text.count(" pte\n") >= n_tables * 16  # every table's 16 runs of W/RO pages came out
    table_mib = n_tables * 4096 >> 20
    grown_mib = (r["after_kib"] - r["before_kib"]) >> 10
    assert grown_mib < table_mib // 2, f"peak RSS grew by {grown_mib} MiB for {table_mib} MiB of tables"
