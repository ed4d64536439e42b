"""Inputs the fuzzer (fuzz/run.sh) once crashed on: each now ends in a result or one error line.

`*.img` files are whole images from the first, x86-64-only fuzz target (`.raw` in the name: a raw
dump, `-l5`: walked 5-level). `*.fuzz` files are inputs of fuzz/harness.py (any kind, any
architecture; the header names the architecture, so they keep their meaning as architectures are
added). A `NAME.fuzz.xfail` file next to one holds the reason it still fails (a fix described for
code this suite does not own): the test is a strict xfail until the fix lands, then it must pass.
"""

from __future__ import annotations

import io
import pathlib
import sys

import pytest

from pagewalk.api import checkwx, dump
from pagewalk.errors import PagewalkError
from pagewalk.memory import open_image
from pagewalk.target import resolve

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "fuzz"))

import harness

REG = HERE / "fixtures" / "fuzz-regressions"
CASES = sorted(REG.glob("*.img"))
FUZZ_CASES = sorted(REG.glob("*.fuzz"))


def _fuzz_param(path: pathlib.Path):
    why = path.with_name(path.name + ".xfail")
    if why.exists():
        return pytest.param(path, marks=pytest.mark.xfail(strict=True, reason=why.read_text().strip()), id=path.name)
    return pytest.param(path, id=path.name)


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_fuzz_regression(path):
    """The image opens, resolves and dumps, or raises a PagewalkError: never another exception."""
    raw = ".raw" in path.name
    l5 = "-l5" in path.name
    try:
        with open_image(str(path), "raw" if raw else "auto") as mem:
            regs = {"cr3": 0, "cr4": (1 << 12) if l5 else 0x20} if raw else None
            target = resolve(mem, arch="x86_64", regs=regs)
            dump(target, "kernel", io.StringIO())
            checkwx(target)
    except PagewalkError as e:
        assert str(e)


@pytest.mark.parametrize("path", [_fuzz_param(p) for p in FUZZ_CASES])
def test_fuzz_harness_regression(path):
    """The input ends in a result or a PagewalkError when run as the fuzzer ran it: never another exception."""
    assert harness.run_one(path.read_bytes()) in {"ok", "error", "output-limit", "empty"}


def test_regression_inputs_name_their_architecture():
    """Every *.fuzz regression input whose kind needs an architecture or mode names it in its header."""
    for path in FUZZ_CASES:
        kind, header, _ = harness.decode(path.read_bytes())
        if kind in ("raw", "notes"):
            assert header.get("arch"), path.name
        if kind == "tables":
            assert header.get("mode"), path.name


def test_corrupt_vmcoreinfo_number_is_a_format_error(tmp_path):
    """A VMCOREINFO SYMBOL() value that is not hex is reported as a corrupt image (exit code 3)."""
    from pagewalk.cli import main

    path = next(p for p in CASES if p.name.startswith("vmcoreinfo-bad-hex"))
    assert main(["dump", str(path)]) == 3


def test_a_table_larger_than_the_image_is_a_read_error(tmp_path):
    """Gathering tables bigger than any memory of the image (a size from corrupt registers) raises a
    MemoryReadError naming the table, instead of allocating gigabytes of zero rows."""
    import numpy as np

    from pagewalk.errors import MemoryReadError

    path = tmp_path / "small.raw"
    path.write_bytes(bytes(8192))
    with open_image(str(path), "raw") as mem:
        t, ok = mem.gather_tables(np.array([0, 4096], np.uint64), 512, np.dtype("<u8"))
        assert ok.all() and t.shape == (2, 512)
        with pytest.raises(MemoryReadError, match="larger than any memory"):
            mem.gather_tables(np.arange(12, dtype=np.uint64) << np.uint64(32), 1 << 28, np.dtype(">u8"))
