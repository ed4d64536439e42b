"""Golden tests for 32-bit ARM: our kernel_page_tables text and W+X verdict against what the Debian
6.1 armmp-lpae (LPAE) and armmp (short descriptors) kernels printed themselves
(tests/fixtures/arm/, made by tools/make_arm_fixtures.sh with ../shared/oracle, qemu-system-arm
-M virt -cpu cortex-a15).

Captures: LPAE and short descriptors at 512 MiB and 1 GiB, and rodata=off with the oracle module
calling the kernel's ptdump_check_wx() (FAILED). Each minimised core carries the TTBR0/TTBR1/TTBCR/
SCTLR/DACR/PRRR-NMRR (MAIR0/1) values read over QEMU's gdbstub, as `pagewalk extract --reg` stores
them; the QEMU cores themselves are ELF32 EM_ARM without registers or VMCOREINFO.
"""

from __future__ import annotations

import io
import json
import pathlib
import re
import struct

import pytest
from conftest import FIXTURES

from pagewalk import open_image
from pagewalk.api import checkwx, dump
from pagewalk.cli import main
from pagewalk.memory.notes import PAGEWALK_NOTE
from pagewalk.target import read_kallsyms, resolve
from pagewalk.translate import translate

ARM = FIXTURES / "arm"
CASES = sorted(p.name for p in ARM.iterdir() if (p / "core.elf").exists())
_LINE = re.compile(r"^0x([0-9a-f]{8})-0x([0-9a-f]{8}) +\d+[KMG] (PGD|PMD|PTE) (.*)$")


@pytest.fixture(params=CASES)
def case(request) -> pathlib.Path:
    return ARM / request.param


def _target(case: pathlib.Path, kallsyms: bool = True):
    mem = open_image(str(case / "core.elf"))
    return resolve(mem, kallsyms=read_kallsyms(str(case / "kallsyms.txt")) if kallsyms else None)


def _dump(t, view: str = "kernel", fmt: str = "text") -> str:
    out = io.StringIO()
    dump(t, view, out, fmt)
    return out.getvalue()


def _noise(case: pathlib.Path) -> list[str]:
    """Lines of the kernel's text whose mapping was gone by dump time (tools/make_arm_fixtures.sh)."""
    p = case / "noise.txt"
    return p.read_text().splitlines() if p.exists() else []


def _expected(case: pathlib.Path) -> list[str]:
    """The kernel's text without its noise lines: what the memory dump of the same guest holds."""
    noise = set(_noise(case))
    return [line for line in (case / "ptdump_kernel.txt").read_text().splitlines() if line not in noise]


def _kernel_ranges(case: pathlib.Path) -> list[tuple[int, int, str, str]]:
    out = []
    for line in _expected(case):
        m = _LINE.match(line)
        if m:
            out.append((int(m[1], 16), int(m[2], 16) or 1 << 32, m[3], m[4]))
    return out


def _wx_pages_of_text(case: pathlib.Path) -> int:
    """W+X pages as note_prot_wx() counts them, read off the kernel's own text (ro/NX columns)."""
    n = 0
    for start, end, level, attrs in _kernel_ranges(case):
        words = attrs.split()
        ro = "ro" in words
        if level == "PGD":  # short-descriptor sections: only the row "    ro" is pg_level[].ro_bit
            ro = "    ro" in attrs and "USR ro" not in attrs
        if not ro and "NX" not in words:
            n += (end - start) // 4096
    return n


def test_captures_are_all_there():
    """LPAE and short-descriptor captures, at 512 MiB and 1 GiB, and the rodata=off W+X runs are committed."""
    assert {"lpae-nokaslr", "nolpae-nokaslr", "nolpae-rodata-off"} <= set(CASES)
    assert any("mem1g" in c for c in CASES)


def test_dump_equals_the_kernels_text(case):
    """Line for line, our kernel_page_tables equals the text arch/arm/mm/dump.c printed in the same guest."""
    assert _dump(_target(case)).splitlines() == _expected(case)


def test_dump_without_kallsyms_equals_too(case):
    """From the registers alone (swapper_pg_dir from TTBR1, high_memory from the direct map) the text is the same."""
    t = _target(case, kallsyms=False)
    assert _dump(t).splitlines() == _expected(case)
    assert any("swapper_pg_dir taken" in n for n in t.notes)


def test_noise_lines_are_unmapped_in_the_dump(case):
    """A line left out as noise is a vmalloc stack the memory dump no longer maps: every page of it faults."""
    t = _target(case)
    for line in _noise(case):
        m = _LINE.match(line)
        assert m and m[3] == "PTE" and 0xE0000000 <= int(m[1], 16) < 0xFF800000
        for va in range(int(m[1], 16), int(m[2], 16), 4096):
            assert not translate(t.mem, t.mode, t.root("kernel"), va).ok


def test_mode_follows_ttbcr(case):
    """TTBCR.EAE picks LPAE (3 levels of 8-byte entries) or short descriptors (4096 + 256 words)."""
    t = _target(case)
    if case.name.startswith("lpae"):
        assert (t.mode.name, t.mode.entry_bytes, len(t.mode.levels)) == ("arm-lpae-32bit-3level-ttbr0", 8, 3)
        assert t.mode_for("current_kernel").extra["format"] == "lpae"
    else:
        assert (t.mode.name, t.mode.entry_bytes) == ("arm-short-ttbr0-n0", 4)
        assert t.roots["kernel_hw"] == t.roots["kernel"]


def test_checkwx_matches_the_kernel(case):
    """Our verdict is the kernel's; the W+X page count is the one the kernel's own text implies."""
    wx = (case / "wx.txt").read_text()
    res = checkwx(_target(case))
    kernel_failed = "FAILED" in wx
    assert (not res.passed) == kernel_failed
    assert res.wx_pages == _wx_pages_of_text(case)
    if kernel_failed:
        m = re.search(r"FAILED, (\d+) W\+X pages found", wx)
        # the kernel checked from the module's init function, whose .init.text page (RWX with
        # rodata=off) was freed before the dump: at most that page more
        assert 0 <= int(m[1]) - res.wx_pages <= 1
        assert res.lines[-1].startswith("Checked W+X mappings: FAILED")
    else:
        assert res.lines == ["Checked W+X mappings: passed, no W+X pages found"]


def test_every_printed_range_translates_through_the_hardware_tables(case):
    """The first and last page of every range the kernel printed translate through the MMU's tables of the minimised core."""
    t = _target(case)
    mode = t.mode_for("kernel")
    for start, end, level, _ in _kernel_ranges(case):
        for va in (start, end - 4096):
            tr = translate(t.mem, mode, t.root("kernel"), va)
            assert tr.ok, f"{va:#x}: {tr.fault}"
            assert tr.steps[-1].level == ("pte" if level == "PTE" else mode.levels[-2].name)


def test_json_has_the_same_ranges(case):
    """--format json lists the printed ranges with their level, flags and domain."""
    doc = json.loads(_dump(_target(case), fmt="json"))
    assert doc["schema"] == "pagewalk.dump" and doc["arch"] == "arm"
    got = [(r["start"], r["end"] or 1 << 32, r["level"]) for r in doc["ranges"]]
    assert got == [(s, e, lv) for s, e, lv, _ in _kernel_ranges(case)]
    if case.name.startswith("nolpae"):
        assert {r["domain"] for r in doc["ranges"]} >= {"KERNEL", "VECTORS"}


def test_cli_takes_the_registers_from_the_core(case, capsys):
    """`pagewalk dump core.elf` needs no --reg: extract stored them in the core's PAGEWALK note."""
    mem = open_image(str(case / "core.elf"))
    assert {"ttbr0", "ttbr1", "ttbcr"} <= set(mem.cpu.regs)
    assert any(n[0] == PAGEWALK_NOTE for n in mem.cpu.notes)
    assert main(["dump", str(case / "core.elf"), "--kallsyms", str(case / "kallsyms.txt"), "-q"]) == 0
    assert capsys.readouterr().out.splitlines() == _expected(case)
    want = 1 if "FAILED" in (case / "wx.txt").read_text() else 0
    assert main(["checkwx", str(case / "core.elf"), "-q"]) == want


def test_translate_cli_names_the_descriptors(case, capsys):
    """`translate` of the vectors page shows each level's descriptor and the effective rights."""
    assert main(["translate", str(case / "core.elf"), "0xffff0000", "-q"]) == 0
    out = capsys.readouterr().out
    assert ("PAGE TABLE domain=3" in out and "SMALL PAGE" in out) if case.name.startswith("nolpae") else "PAGE PL0+PL1 ro" in out
    assert "PL0 ro" in out


def test_extract_of_the_extract_dumps_the_same(case, tmp_path):
    """Extracting the minimised core again keeps everything the dump and translate need (Linux and hardware tables)."""
    small = tmp_path / "again.elf"
    regs = [a for r in (case / "regs.txt").read_text().split() for a in ("--reg", r)]
    assert main(["extract", str(case / "core.elf"), *regs, "--kallsyms", str(case / "kallsyms.txt"), "-o", str(small), "-q"]) == 0
    t = resolve(open_image(str(small)), kallsyms=read_kallsyms(str(case / "kallsyms.txt")))
    assert _dump(t).splitlines() == _expected(case)
    assert translate(t.mem, t.mode, t.root("kernel"), 0xFFFF0000).ok


def _elf32_core(path: pathlib.Path, machine: int, notes: list[tuple[str, int, bytes]], chunks: list[tuple[int, bytes]]) -> None:
    """An ELF32 ET_CORE like QEMU's dump-guest-memory for 32-bit ARM guests (52-byte header, 32-byte phdrs)."""
    blob = b""
    for name, ntype, desc in notes:
        nb = name.encode() + b"\0"
        blob += struct.pack("<III", len(nb), len(desc), ntype) + nb + b"\0" * (-len(nb) % 4) + desc + b"\0" * (-len(desc) % 4)
    phnum = 1 + len(chunks)
    off = 52 + 32 * phnum
    ph = [struct.pack("<IIIIIIII", 4, off, 0, 0, len(blob), len(blob), 0, 0)]
    data = blob
    off += len(blob)
    for pa, b in chunks:
        ph.append(struct.pack("<IIIIIIII", 1, off, pa, pa, len(b), len(b), 0, 0))
        data += b
        off += len(b)
    ident = b"\x7fELF" + bytes([1, 1, 1, 0]) + b"\0" * 8
    hdr = ident + struct.pack("<HHIIIIIHHHHHH", 4, machine, 1, 0, 52, 0, 0, 52, 32, phnum, 40, 0, 0)
    path.write_bytes(hdr + b"".join(ph) + data)


def test_an_elf32_arm_core_opens_as_arm(tmp_path):
    """QEMU writes 32-bit ARM guests as ELF32 EM_ARM cores: they open, say "arm", and dump like the ELF64 extract."""
    case = ARM / "nolpae-nokaslr"
    mem = open_image(str(case / "core.elf"))
    chunks = [(a, mem.read(a, b - a)) for a, b in mem.runs()]
    path = tmp_path / "core32.elf"
    _elf32_core(path, 40, [n for n in mem.cpu.notes], chunks)
    m32 = open_image(str(path))
    assert m32.cpu.arch == "arm" and m32.runs() == mem.runs()
    t = resolve(m32, kallsyms=read_kallsyms(str(case / "kallsyms.txt")))
    assert _dump(t).splitlines() == _expected(case)
