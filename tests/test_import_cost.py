"""What `pagewalk dump` of an x86-64 image loads before its walk: no numpy.

`import numpy` alone (~90 ms) takes longer than the compiled walk of a million pages (README
"Speed"); an ELF core still loads pyelftools (~50 ms), the project's ELF reader. Everything from the command line to `kernel.dump()`
(cli._target(): open_image(), resolve(), kernel/x86.resolve() with its PTI probe and, with
--kallsyms, three translations) therefore runs on plain Python. These tests run that preamble in
a fresh interpreter and look at sys.modules, and hold each numpy-free stand-in (the lazy numpy
proxy, the bisect lookups of MappedMemory, x86's scalar hooks behind translate()) equal to the
numpy code it spares.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from builders import X86_NX, X86_P, X86_RW, PageTableBuilder
from conftest import FIXTURES, X86_64_CASES
from hypothesis import given, settings
from hypothesis import strategies as st

import pagewalk
from pagewalk import cli
from pagewalk.arch import x86
from pagewalk.memory import open_image
from pagewalk.translate import translate

HEAVY = ("numpy", "elftools", "rich", "pagewalk.runs", "pagewalk.walk", "pagewalk.ptdump.x86")

# Runs cli._target() as `pagewalk dump ARGS` does, stops before the walk, and reports what it
# resolved and which heavy modules it loaded.
_PREAMBLE = """
import json, sys
from pagewalk import cli
args = cli.build_parser().parse_args(sys.argv[1:])
target, _ = cli._target(args)
lay = target.layout
print(json.dumps({
    "heavy": [m for m in %r if m in sys.modules],
    "mode": target.mode.name, "roots": target.roots, "pti": target.pti, "notes": target.notes,
    "markers": lay.markers(), "unavailable": target.unavailable,
}))
""" % (HEAVY,)


def _preamble(argv: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PAGEWALK_NO_COMPILED"}
    out = subprocess.run([sys.executable, "-c", _PREAMBLE, *argv], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _in_process(argv: list[str]) -> dict:
    """The same facts from this (numpy-loaded) interpreter: the reference."""
    args = cli.build_parser().parse_args(argv)
    target, _ = cli._target(args)
    doc = {"mode": target.mode.name, "roots": target.roots, "pti": target.pti, "notes": target.notes,
           "markers": target.layout.markers(), "unavailable": target.unavailable}
    return json.loads(json.dumps(doc))


def _raw_image(tmp_path, pti_copy: bool) -> tuple[str, int]:
    """A small 4-level x86-64 raw image (kernel text, direct map, a CPU entry area mapping); with
    `pti_copy` the page after the PGD is a PTI user copy that maps only the entry area."""
    b = PageTableBuilder(x86.X86_64_4LEVEL, base=0x2000)  # PTI: the kernel PGD is 8 KiB aligned
    user_pgd = b.alloc_table()
    assert user_pgd == b.root + 4096
    b.map(0xFFFFFFFF81000000, 0x1000000, 2 << 20, X86_P | X86_RW)
    b.map(0xFFFF888000000000, 0x0, 4096, X86_P | X86_RW | X86_NX)
    b.map(0xFFFFFE0000000000, 0x2000, 4096, X86_P | X86_NX)  # CPU_ENTRY_AREA_BASE (-4 << 39)
    if pti_copy:
        cea = (0xFFFFFE0000000000 >> 39) & 511
        b.set_entry(user_pgd, cea, b.entry(b.root, cea))
    path = tmp_path / f"x86_64-pti{int(pti_copy)}.raw"
    b.write(path)
    return str(path), b.root


@pytest.mark.parametrize("pti", ["auto", "on", "off"])
@pytest.mark.parametrize("pti_copy", [False, True])
def test_raw_image_preamble_imports_no_numpy(tmp_path, pti, pti_copy):
    """`dump RAW --image-format raw --arch x86_64 --reg cr3 --reg cr4 --pti X` resolves its target without numpy, to the same result."""
    path, root = _raw_image(tmp_path, pti_copy)
    argv = ["dump", path, "--image-format", "raw", "--base", "0x2000", "--arch", "x86_64",
            "--reg", f"cr3={root:#x}", "--reg", "cr4=0x20", "--pti", pti, "-q"]
    got = _preamble(argv)
    assert got.pop("heavy") == []
    assert got == _in_process(argv)
    if pti == "auto":
        assert got["pti"] is pti_copy  # _looks_like_pti(), numpy-free, still tells them apart


@pytest.mark.parametrize("kallsyms", [False, True], ids=["vmcoreinfo", "kallsyms"])
def test_elf_core_preamble_imports_no_numpy(kallsyms):
    """`dump core.elf [--kallsyms]` (VMCOREINFO, CPU notes, KASLR bases translated) resolves without numpy, to the same result."""
    for case in X86_64_CASES:
        d = FIXTURES / "x86_64" / case
        argv = ["dump", str(d / "core.elf")] + (["--kallsyms", str(d / "kallsyms.txt")] if kallsyms else [])
        got = _preamble(argv)
        assert got.pop("heavy") == ["elftools"], case
        assert got == _in_process(argv), case


def test_lazy_numpy_proxy_is_numpy():
    """The proxy hands out numpy's own objects and keeps them after the first lookup."""
    from pagewalk._lazynp import np as lazy

    assert lazy.uint64 is np.uint64
    assert "uint64" in vars(lazy)
    assert lazy.frombuffer(b"\x01\0\0\0\0\0\0\0", dtype=lazy.uint64)[0] == 1
    with pytest.raises(AttributeError):
        lazy.no_such_numpy_name


def test_package_reexports_load_on_first_use():
    """`pagewalk.open_image`, `pagewalk.Kind`, ... are the modules' own objects, loaded on first use."""
    from pagewalk.memory import open_image as real_open
    from pagewalk.mode import HwKind, Kind, Level, PagingMode

    assert pagewalk.open_image is real_open
    assert (pagewalk.Kind, pagewalk.HwKind, pagewalk.Level, pagewalk.PagingMode) == (Kind, HwKind, Level, PagingMode)
    assert set(pagewalk.__all__) <= set(dir(pagewalk))
    with pytest.raises(AttributeError):
        pagewalk.no_such_name
    assert x86.U64 is np.uint64  # arch.x86's numpy alias, now lazy too


def _x86_modes():
    return [
        x86.X86_64_4LEVEL, x86.X86_64_5LEVEL, x86.I386_PAE, x86.ptdump_view(x86.I386_PAE), x86.I386_2LEVEL,
        x86.make_mode("2level", pse=False), x86.make_mode("4level", pa_bits=39), x86.make_mode("5level", pa_bits=46),
        x86.make_mode("pae", pa_bits=36),
    ]


@settings(max_examples=300, deadline=None)
@given(
    mode_i=st.integers(0, len(_x86_modes()) - 1),
    level=st.integers(0, 4),
    bits=st.integers(0, (1 << 64) - 1),
    flags=st.integers(0, (1 << 13) - 1),
    high=st.sampled_from([0, 1 << 63, 0x7FF << 52, 1 << 40, 1 << 21, 1 << 13]),
    parent=st.integers(0, (1 << 64) - 1),
)
def test_x86_scalar_hooks_equal_array_hooks(mode_i, level, bits, flags, high, parent):
    """x86's hw_classify/perm/perm_combine for one int entry (translate()'s numpy-free path) agree with the array hooks."""
    mode = _x86_modes()[mode_i]
    level %= len(mode.levels)
    width = (1 << (8 * mode.entry_bytes)) - 1
    entry = ((bits & ~((1 << 13) - 1)) | flags | high) & width
    hw_one, perm_one, combine_one = mode.extra["scalar_hooks"]
    arr = np.array([entry], np.uint64)
    kind, out = mode.hw_classify(level, arr)
    assert hw_one(level, entry) == (int(kind[0]), int(out[0]))
    assert perm_one(level, entry) == int(mode.perm(level, arr)[0])
    child = perm_one(level, entry)
    assert combine_one(parent, child) == int(mode.perm_combine(np.array([parent], np.uint64), np.array([child], np.uint64))[0])


def test_translate_scalar_path_equals_numpy_path():
    """translate() through x86's scalar hooks gives the numpy path's trace, PA, permissions and faults, on every capture."""
    from pagewalk.target import read_kallsyms, resolve

    rng = np.random.default_rng(7)
    for case in X86_64_CASES:
        d = FIXTURES / "x86_64" / case
        mem = open_image(str(d / "core.elf"))
        target = resolve(mem)
        mode = target.mode
        numpy_mode = mode.replace(extra={k: v for k, v in mode.extra.items() if k != "scalar_hooks"})
        syms = read_kallsyms(str(d / "kallsyms.txt"))
        vas = [syms[s] for s in ("page_offset_base", "vmalloc_base", "_text", "init_top_pgt") if s in syms]
        vas += [0, 0x400000, 1 << 47, 0xFFFF800000000000, 0xFFFFFE0000000000, (1 << 64) - 4096]
        vas += [int(v) for v in rng.integers(0, 1 << 63, 40, dtype=np.uint64) | np.uint64(1 << 63)]
        for view in target.roots:
            for va in vas:
                a = translate(mem, mode, target.roots[view], va)
                b = translate(mem, numpy_mode, target.roots[view], va)
                assert (a.steps, a.pa, a.page_size, a.fault, a.perm) == (b.steps, b.pa, b.page_size, b.fault, b.perm)
        mem.close()


@settings(max_examples=200, deadline=None)
@given(pa=st.integers(0, (1 << 64) - 1), size=st.sampled_from([1, 8, 4096, 1 << 21]), case=st.sampled_from(X86_64_CASES),
       near=st.booleans())
def test_bisect_lookup_equals_searchsorted(pa, size, case, near):
    """MappedMemory's bisect lookup (contains, table_bytes, read) holds exactly the PAs its numpy searchsorted() lookup held."""
    mem = open_image(str(FIXTURES / "x86_64" / case / "core.elf"))
    try:
        if near:  # around the segment boundaries, where the answers change
            edges = [p for a, n, _ in mem._segs for p in (a, a + n)]
            pa = max(0, edges[pa % len(edges)] + (pa % 64) - 32 - (size if pa & 1 else 0))
        # the numpy lookup _locate() had: searchsorted on the segment starts, Python-int bounds
        i = int(np.searchsorted(mem.seg_pa, np.uint64(pa), side="right")) - 1
        held = i >= 0 and pa + size <= int(mem.seg_end[i])
        assert mem.contains(pa, size) == held
        if held:
            assert mem.table_bytes(pa, size) == mem.table(pa, size, np.uint8).tobytes()
            assert mem.read(pa, min(size, 64)) == mem.table_bytes(pa, min(size, 64))
    finally:
        mem.close()
