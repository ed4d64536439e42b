"""Inputs the fuzzer (fuzz/fuzz_images.py) once crashed on: each now ends in a result or one error line."""

from __future__ import annotations

import io
import pathlib

import pytest

from pagewalk.api import checkwx, dump
from pagewalk.errors import PagewalkError
from pagewalk.memory import open_image
from pagewalk.target import resolve

CASES = sorted((pathlib.Path(__file__).parent / "fixtures" / "fuzz-regressions").glob("*.img"))


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


def test_corrupt_vmcoreinfo_number_is_a_format_error(tmp_path):
    """A VMCOREINFO SYMBOL() value that is not hex is reported as a corrupt image (exit code 3)."""
    from pagewalk.cli import main

    path = next(p for p in CASES if p.name.startswith("vmcoreinfo-bad-hex"))
    assert main(["dump", str(path)]) == 3
