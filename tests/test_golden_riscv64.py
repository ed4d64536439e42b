"""Golden tests: our riscv64 dumps against the Debian 6.12 kernel's own text and QEMU's `info mem`."""

from __future__ import annotations

import io
import json
import pathlib

import numpy as np
import pytest

from pagewalk import open_image
from pagewalk.api import checkwx, dump
from pagewalk.cli import main
from pagewalk.target import read_kallsyms, resolve
from pagewalk.translate import translate, translate_many

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "riscv64"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "core.elf").exists()) if FIXTURES.exists() else []
MODE_OF = {"sv57": "sv57", "sv48": "sv48", "sv39": "sv39"}
ATTR = {"r": 1 << 1, "w": 1 << 2, "x": 1 << 3, "u": 1 << 4, "g": 1 << 5, "a": 1 << 6, "d": 1 << 7}


@pytest.fixture(params=CASES)
def case(request) -> pathlib.Path:
    return FIXTURES / request.param


def _target(case, kallsyms=True):
    mem = open_image(str(case / "core.elf"))
    return resolve(mem, kallsyms=read_kallsyms(str(case / "kallsyms.txt")) if kallsyms else None)


def _info_mem(case) -> list[tuple[int, int, int, str]]:
    """(vaddr, paddr, size, attr) lines of QEMU's `info mem`."""
    out = []
    for line in (case / "hmp_info_mem.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 4 and all(c in "0123456789abcdef" for c in parts[0]):
            out.append((int(parts[0], 16), int(parts[1], 16), int(parts[2], 16), parts[3]))
    return out


def test_all_three_modes_are_committed():
    """The fixtures cover Sv57, Sv48 and Sv39 captures."""
    assert CASES == ["sv39", "sv48", "sv57"]


def test_dump_equals_kernel_text(case):
    """`dump` of the minimised core is the kernel's kernel_page_tables text, line for line."""
    out = io.StringIO()
    n = dump(_target(case), "kernel", out)
    expected = (case / "ptdump_kernel.txt").read_text()
    assert out.getvalue().splitlines() == expected.splitlines()
    assert n == sum(1 for ln in expected.splitlines() if ln.startswith("0x"))


def test_mode_and_kernel_root_come_from_satp_and_kallsyms(case):
    """satp in the core's notes selects the mode; kallsyms' swapper_pg_dir gives the kernel root."""
    t = _target(case)
    assert t.mode.name == MODE_OF[case.name]
    satp = int((case / "satp.txt").read_text(), 16)
    assert t.root("current_kernel") == (satp & ((1 << 44) - 1)) << 12
    assert t.root("kernel") != t.root("current_kernel")
    swapper = read_kallsyms(str(case / "kallsyms.txt"))["swapper_pg_dir"]
    # no KASLR on Debian riscv64: the kernel image is linked at 0xffffffff80000000, loaded at 0x80200000
    assert t.root("kernel") == swapper - 0xFFFFFFFF80000000 + 0x80200000


def test_without_kallsyms_the_satp_table_gives_the_same_text(case):
    """satp's table shares its kernel half with swapper_pg_dir, so the text is the same; a note says so."""
    t = _target(case, kallsyms=False)
    assert t.root("kernel") == t.root("current_kernel")
    assert any("swapper_pg_dir" in n for n in t.notes)
    out = io.StringIO()
    dump(t, "kernel", out)
    assert out.getvalue().splitlines() == (case / "ptdump_kernel.txt").read_text().splitlines()


def test_qemu_info_mem_ranges_translate_the_same(case):
    """Every page of QEMU's kernel-half `info mem` ranges translates to QEMU's PA, with its attributes."""
    t = _target(case)
    root = t.root("current_kernel")
    half = 1 << 63
    ranges = [r for r in _info_mem(case) if r[0] >= half]
    assert len(ranges) > 50
    for va, pa, size, attr in ranges:
        vas = np.arange(va, va + size, 4096, dtype=np.uint64)
        got, _, ok = translate_many(t.mem, t.mode, root, vas)
        assert ok.all(), f"{va:#x}: not mapped by us"
        assert (got == np.arange(pa, pa + size, 4096, dtype=np.uint64)).all(), f"{va:#x}: PA differs"
        leaf = translate(t.mem, t.mode, root, va).steps[-1].entry
        want = sum(bit for ch, bit in ATTR.items() if ch in attr)
        assert leaf & 0xFE == want, f"{va:#x}: {attr} vs {leaf:#x}"


def test_our_kernel_half_mappings_are_all_in_qemu_info_mem(case):
    """Every page our dump of satp's table shows as valid lies in a QEMU range at the same PA."""
    t = _target(case)
    ranges = sorted(r for r in _info_mem(case) if r[0] >= 1 << 63)
    starts = np.array([r[0] for r in ranges], dtype=np.uint64)
    out = io.StringIO()
    dump(t, "current_kernel", out)
    checked = 0
    for line in out.getvalue().splitlines():
        if not line.startswith("0x") or not line.endswith(" V"):
            continue
        a, b = (int(x, 16) for x in line.split()[0].split("-"))
        vas = np.arange(a, b, 4096, dtype=np.uint64)
        pa, _, ok = translate_many(t.mem, t.mode, t.root("current_kernel"), vas)
        assert ok.all()
        k = np.searchsorted(starts, vas, side="right") - 1
        assert (k >= 0).all()
        q_va = starts[k]
        q_pa = np.array([ranges[i][1] for i in k], dtype=np.uint64)
        q_size = np.array([ranges[i][2] for i in k], dtype=np.uint64)
        assert ((vas - q_va) < q_size).all(), f"{a:#x}: outside QEMU's ranges"
        assert (pa == q_pa + (vas - q_va)).all(), f"{a:#x}: QEMU has another PA"
        checked += len(vas)
    assert checked > 100_000


def test_checkwx_passes_on_the_debian_kernel(case):
    """No kernel mapping is both writable and executable (Debian's kernel has DEBUG_WX=n; we check)."""
    text = (case / "ptdump_kernel.txt").read_text()
    assert not any(" X W " in ln for ln in text.splitlines())
    res = checkwx(_target(case))
    assert res.passed and res.lines == ["Checked W+X mappings: passed, no W+X pages found"]


def test_json_records_match_the_text(case, capsys):
    """`--format json` has one record per printed line, with the bounds and the PA column."""
    args = [str(case / "core.elf"), "--kallsyms", str(case / "kallsyms.txt"), "-q"]
    assert main(["dump", *args, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    lines = [ln for ln in (case / "ptdump_kernel.txt").read_text().splitlines() if ln.startswith("0x")]
    assert doc["arch"] == "riscv64" and doc["mode"] == MODE_OF[case.name]
    assert len(doc["ranges"]) == len(lines)
    first = lines[0].split()
    assert doc["ranges"][0]["start"] == int(first[0].split("-")[0], 16)
    assert doc["ranges"][0]["pa"] == int(first[1], 16)
    assert doc["ranges"][0]["marker"] == "Fixmap start"


def test_cli_dump_needs_no_reg_for_the_fixture(case, capsys):
    """The minimised core carries satp in its notes, so `pagewalk dump core.elf` needs no --reg."""
    assert main(["dump", str(case / "core.elf"), "--kallsyms", str(case / "kallsyms.txt"), "-q"]) == 0
    assert capsys.readouterr().out == (case / "ptdump_kernel.txt").read_text()


def test_cli_checkwx_and_translate(case, capsys):
    """`checkwx` exits 0 with the kernel's passed line; `translate` of _stext gives its load address."""
    args = [str(case / "core.elf"), "--kallsyms", str(case / "kallsyms.txt"), "-q"]
    assert main(["checkwx", *args]) == 0
    assert capsys.readouterr().out == "Checked W+X mappings: passed, no W+X pages found\n"
    stext = read_kallsyms(str(case / "kallsyms.txt"))["_stext"]
    assert main(["translate", *args, hex(stext)]) == 0
    out = capsys.readouterr().out
    assert f"pa {stext - 0xFFFFFFFF80000000 + 0x80200000:#x}  (2M page" in out
