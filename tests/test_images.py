"""Memory images: ELF cores, raw dumps, extract, and what happens with bad input."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import FIXTURES

from pagewalk import open_image
from pagewalk.api import dump, table_pages
from pagewalk.cli import main
from pagewalk.target import resolve

CASE = FIXTURES / "x86_64" / "6.12-nokaslr-5level"
CORE = str(CASE / "core.elf")


def _raw_copy(tmp_path, base: int = 0) -> tuple[str, int, int]:
    """A sparse raw dump holding the same memory as the fixture core, starting at PA `base`."""
    mem = open_image(CORE)
    path = tmp_path / "mem.raw"
    with open(path, "wb") as f:
        for pa, end in mem.runs():
            f.seek(pa - base)
            f.write(mem.read(pa, end - pa))
        f.truncate((max(e for _, e in mem.runs()) - base + 4095) & ~4095)
    t = resolve(mem)
    return str(path), t.root("kernel"), mem.cpu.regs["cr4"]


def test_elf_core_notes_give_cr3_cr4_and_vmcoreinfo():
    """The QEMU CPU-state note and VMCOREINFO survive `extract` and give the roots."""
    mem = open_image(CORE)
    assert mem.cpu.arch == "x86_64"
    assert mem.cpu.regs["cr4"] & (1 << 12)  # LA57
    assert "SYMBOL(init_top_pgt)" in mem.cpu.vmcoreinfo
    t = resolve(mem)
    assert t.mode.name == "x86_64-5level"
    assert t.root("kernel") != t.root("current_kernel")


def test_raw_dump_with_registers_equals_elf_dump(tmp_path, capsys):
    """A raw dump of the same memory, with the root given as --reg, dumps exactly like the core."""
    raw, root, cr4 = _raw_copy(tmp_path)
    args = ["dump", raw, "--image-format", "raw", "--arch", "x86_64", "--reg", f"cr3={root:#x}", "--reg", f"cr4={cr4:#x}"]
    assert main([*args, "-q"]) == 0
    assert capsys.readouterr().out.splitlines() == (CASE / "ptdump_kernel.txt").read_text().splitlines()


def test_raw_dump_with_base(tmp_path, capsys):
    """--base moves a raw dump's first byte to a physical address other than 0."""
    mem = open_image(CORE)
    lo = min(a for a, _ in mem.runs()) & ~0xFFFFF
    raw, root, cr4 = _raw_copy(tmp_path, base=lo)
    args = ["dump", raw, "--base", hex(lo), "--arch", "x86_64", "--reg", f"cr3={root:#x}", "--reg", f"cr4={cr4:#x}", "-q"]
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines() == (CASE / "ptdump_kernel.txt").read_text().splitlines()


def test_extract_keeps_every_table_page(tmp_path):
    """`extract` of an extracted core keeps the same table pages and gives the same dump."""
    out = tmp_path / "again.elf"
    assert main(["extract", CORE, "-o", str(out), "-q"]) == 0
    t1 = resolve(open_image(CORE))
    t2 = resolve(open_image(str(out)))
    assert table_pages(t1) == table_pages(t2)
    a, b = io.StringIO(), io.StringIO()
    dump(t1, "kernel", a)
    dump(t2, "kernel", b)
    assert a.getvalue() == b.getvalue()


@pytest.mark.parametrize(
    "content, code, words",
    [
        (None, 1, "no such file"),
        (b"", 3, "empty"),
        (b"hello, this is not a memory image\n", 3, "not a known image format"),
        (b"\x7fELF\x02\x01\x01" + b"\0" * 9, 3, "ELF"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(tmp_path, capsys, content, code, words):
    """Missing, empty, unknown and broken files give one line on stderr and a distinct code."""
    path = tmp_path / "img"
    if content is not None:
        path.write_bytes(content)
    assert main(["dump", str(path)]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "Traceback" not in err[0]


def test_truncated_core_warns_and_reports_missing_tables(tmp_path, capsys):
    """A core cut short still dumps: a warning, and missing tables are reported in the output."""
    data = open(CORE, "rb").read()
    cut = tmp_path / "cut.elf"
    for frac in range(95, 5, -5):  # the first cut that keeps the root but loses some tables
        cut.write_bytes(data[: len(data) * frac // 100])
        rc = main(["dump", str(cut)])
        captured = capsys.readouterr()
        if rc == 0:
            break
    assert rc == 0
    assert "truncated" in captured.err
    assert "not in image" in captured.out


@pytest.mark.parametrize("cut_at", [10, 40, 64, 100, 200, 1000])
def test_core_cut_in_the_headers(tmp_path, capsys, cut_at):
    """A core cut inside its headers is a format error, not a traceback."""
    data = open(CORE, "rb").read()
    cut = tmp_path / "cut.elf"
    cut.write_bytes(data[:cut_at])
    rc = main(["dump", str(cut)])
    err = capsys.readouterr().err
    assert rc in (3, 5) and "Traceback" not in err and err.count("\n") == 1


def test_root_outside_the_image(tmp_path, capsys):
    """A CR3 that points outside the image is refused with exit code 5."""
    rc = main(["dump", CORE, "--reg", "cr3=0x7fff0000000", "--view", "current_kernel"])
    assert rc == 5
    assert "not in the image" in capsys.readouterr().err


def test_unaligned_root(capsys):
    """A root that is not page aligned is refused, not walked."""
    raw = CORE
    rc = main(["dump", raw, "--image-format", "elf", "--reg", "cr3=0x1234", "--view", "current_kernel"])
    # CR3's low 12 bits are PCID bits and are masked off, so this is the table at PA 0x1000
    assert rc in (0, 5)


def test_unknown_arch_and_view(capsys):
    """An architecture or view that is not there is a usage error (exit 2)."""
    assert main(["dump", CORE, "--arch", "vax"]) == 2
    assert "not supported" in capsys.readouterr().err


def test_no_traceback_from_the_console_script(tmp_path):
    """The installed `pagewalk` command prints one line for a bad file, never a traceback."""
    exe = os.path.join(os.path.dirname(sys.executable), "pagewalk")
    p = subprocess.run([exe, "dump", str(tmp_path / "nothing")], capture_output=True, text=True)
    assert p.returncode == 1 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1


def test_gather_tables_marks_missing():
    """gather_tables returns zero rows and False for tables the image does not hold."""
    mem = open_image(CORE)
    root = resolve(mem).root("kernel")
    t, ok = mem.gather_tables(np.array([root, 0x7FFF0000000], np.uint64), 512, np.dtype("<u8"))
    assert ok.tolist() == [True, False]
    assert t[1].sum() == 0 and t[0].any()


def test_cr3_bit_12_is_kept_without_pti(tmp_path, capsys):
    """With --pti off, a root whose bit 12 is set is walked as given (bit 12 is only PTI's user bit)."""
    from builders import PageTableBuilder

    from pagewalk.arch.x86 import X86_64_4LEVEL

    b = PageTableBuilder(X86_64_4LEVEL, base=0x3000)  # the root lands on a page with bit 12 set
    b.map(0xFFFFFFFF81000000, 0x200000, 0x200000, 0x1 | 0x2 | 0x100)  # RW, executable: W+X
    path = b.write(tmp_path / "odd.raw")
    assert b.root & 0x1000
    args = [str(path), "--base", "0x3000", "--arch", "x86_64", "--reg", f"cr3={b.root:#x}", "--reg", "cr4=0x20"]
    assert main(["checkwx", *args, "--pti", "off", "-q"]) == 1
    assert "512 W+X pages" in capsys.readouterr().out


def test_extract_stores_command_line_registers(tmp_path):
    """Registers given to `extract` with --reg are stored in the small core and read back."""
    raw, root, cr4 = _raw_copy(tmp_path)
    out = tmp_path / "small.elf"
    regs = ["--reg", f"cr3={root:#x}", "--reg", f"cr4={cr4:#x}"]
    assert main(["extract", raw, "--image-format", "raw", "--arch", "x86_64", *regs, "-o", str(out), "-q"]) == 0
    mem = open_image(str(out))
    assert mem.cpu.regs["cr3"] == root and mem.cpu.regs["cr4"] == cr4
    t = resolve(mem, arch="x86_64")
    a = io.StringIO()
    dump(t, "kernel", a)
    assert a.getvalue().splitlines() == (CASE / "ptdump_kernel.txt").read_text().splitlines()
