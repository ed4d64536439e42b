"""Golden tests: our ppc64 dumps against the Debian 6.1 ppc64el kernel's own kernel_page_tables text
(qemu-system-ppc64 -M pseries -cpu power9, 64K pages): radix at 512 MiB and 2 GiB, and the hash
MMU's Linux tables (`disable_radix`)."""

from __future__ import annotations

import io
import pathlib
import re
import struct

import numpy as np
import pytest

from pagewalk import open_image
from pagewalk.api import checkwx, dump
from pagewalk.arch.ppc64 import decode_prtb0, perm_text
from pagewalk.cli import main
from pagewalk.memory.elfcore import ElfCoreMemory
from pagewalk.target import read_kallsyms, resolve
from pagewalk.translate import translate, translate_many

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "ppc64"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "core.elf").exists()) if FIXTURES.exists() else []
LINE = re.compile(r"^0x([0-9a-f]{16})-0x([0-9a-f]{16})  0x([0-9a-f]{16}) +\d+[ KMGTPE] (.*)$")


@pytest.fixture(params=CASES)
def case(request) -> pathlib.Path:
    return FIXTURES / request.param


def _oracle(case) -> dict[str, str]:
    """The module's `ptdump_oracle: radix=… pgd_pa=… prtb0=… flag_mask=…` line as a dict."""
    text = (case / "oracle_line.txt").read_text().split(":", 1)[1]
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


def _ranges(case) -> list[tuple[int, int, int, str]]:
    out = []
    for line in (case / "ptdump_kernel.txt").read_text().splitlines():
        m = LINE.match(line)
        if m:
            out.append((int(m[1], 16), int(m[2], 16) + 1, int(m[3], 16), m[4]))
    return out


def test_both_memory_sizes_and_both_mmus_are_committed():
    """The fixtures cover radix at the default 512 MiB and at 2 GiB, and a hash-MMU boot."""
    assert CASES == ["hash-512M", "radix-2G", "radix-512M"]


def test_dump_equals_kernel_text(case):
    """`dump` of the minimised core is the kernel's kernel_page_tables text, line for line."""
    out = io.StringIO()
    n = dump(resolve(open_image(str(case / "core.elf"))), "kernel", out)
    expected = (case / "ptdump_kernel.txt").read_text()
    assert out.getvalue().splitlines() == expected.splitlines()
    assert n == len(_ranges(case))


def test_cli_dump_equals_kernel_text(case, capsys):
    """`pagewalk dump CORE` (prtb0 travels in the core) prints the same text."""
    assert main(["dump", str(case / "core.elf"), "-q"]) == 0
    assert capsys.readouterr().out == (case / "ptdump_kernel.txt").read_text()


def test_root_and_geometry_are_the_kernels(case):
    """The core's register (radix: prtb0; hash: pgd) gives init_mm.pgd's PA and the kernel's index
    sizes: radix 13/9/9/5 from the entries' NLS, hash 8/10/10/8 recognised from entries without NLS."""
    o = _oracle(case)
    t = resolve(open_image(str(case / "core.elf")))
    assert t.roots["kernel"] == int(o["pgd_pa"], 16)
    assert [lvl.bits for lvl in t.mode.levels] == [int(o[f"{n}_index_size"]) for n in ("pgd", "pud", "pmd", "pte")]
    assert t.mode.levels[-1].entry_span == 1 << int(o["page_shift"])
    assert int(o["flag_mask"], 16) == t.mode.ptdump_key_mask
    assert t.layout.ranges() == [tuple(int(x, 16) for x in o["range"].split("-"))]
    if o["radix"] == "1":
        assert decode_prtb0(int(o["prtb0"], 16))[1] == t.roots["kernel"]
        assert t.mode.extra["mmu"] == "radix" and t.notes == []
    else:
        assert int(o["prtb0"], 16) == 0 and t.mode.extra["mmu"] == "hash"
        assert any("no NLS" in n for n in t.notes)


def test_kallsyms_alone_finds_the_same_root(case):
    """Without registers, System.map gives the same tree and text: radix through process_tb (read out of
    the image), hash through swapper_pg_dir (process_tb is NULL there)."""
    mem = open_image(str(case / "core.elf"))
    mem.cpu.regs.clear()
    t = resolve(mem, "ppc64el", kallsyms=read_kallsyms(str(case / "kallsyms.txt")))
    assert t.roots["kernel"] == int(_oracle(case)["pgd_pa"], 16)
    out = io.StringIO()
    dump(t, "kernel", out)
    assert out.getvalue() == (case / "ptdump_kernel.txt").read_text()


def test_every_kernel_range_translates_to_its_pa(case):
    """The first and last 64 KiB of every range the kernel printed translate to start_pa + offset with
    the permissions its flags name (translate is the MMU's view; the text is the kernel's)."""
    mem = open_image(str(case / "core.elf"))
    t = resolve(mem)
    root = t.roots["kernel"]
    for start, end, pa, flags in _ranges(case):
        words = flags.split()
        for va in (start, end - 0x10000):
            tr = translate(mem, t.mode, root, va)
            assert tr.ok, (hex(va), tr.fault)
            if va == start or start < 0xC008000000000000:
                # a range's PA is its first entry's; the linear map is contiguous, vmalloc is not
                assert tr.pa == pa + (va - start)
            text = perm_text(tr.perm)
            assert text.startswith("user" if "user" in words else "kernel")
            assert ("w" in text) == ("w" in words) and ("x" in text) == ("X" in words)


def test_translate_many_equals_translate(case):
    """translate_many() agrees with translate() on the kernel's range bounds and on holes between them."""
    mem = open_image(str(case / "core.elf"))
    t = resolve(mem)
    root = t.roots["kernel"]
    vas = [v for s, e, _, _ in _ranges(case) for v in (s, s + 0x1234, e - 8, e)]
    vas += [0xC000000000000000 + k * (1 << 40) for k in range(64)] + [0x10000, 0xC010000000000000]
    pa, size, ok = translate_many(mem, t.mode, root, np.array(vas, dtype=np.uint64))
    for i, va in enumerate(vas):
        tr = translate(mem, t.mode, root, va)
        assert bool(ok[i]) == tr.ok, hex(va)
        if tr.ok:
            assert (int(pa[i]), int(size[i])) == (tr.pa, tr.page_size)


def test_checkwx_passes(case):
    """Debian's kernel (STRICT_KERNEL_RWX) has no W+X mapping: ptdump_check_wx()'s verdict is "passed"."""
    wx = checkwx(resolve(open_image(str(case / "core.elf"))))
    assert wx.passed and wx.lines == ["Checked W+X mappings: passed, no W+X pages found"]


def test_extract_keeps_what_the_dump_needs(case, tmp_path):
    """`extract` of the core again is a core that dumps the same text (the tree's 64 KiB, 4 KiB and 256-byte tables)."""
    small = tmp_path / "again.elf"
    assert main(["extract", str(case / "core.elf"), "-o", str(small), "-q"]) == 0
    out = io.StringIO()
    o = _oracle(case)
    regs = {"prtb0": int(o["prtb0"], 16)} if o["radix"] == "1" else {"pgd": int(o["pgd_pa"], 16)}
    dump(resolve(open_image(str(small)), regs=regs), "kernel", out)
    assert out.getvalue() == (case / "ptdump_kernel.txt").read_text()


def test_qemu_big_endian_core_with_little_endian_section_headers(tmp_path):
    """A core shaped like QEMU 7.2's ppc64 one (big-endian ELF whose two section headers are written
    little-endian) opens as ppc64, with its memory at the right physical addresses."""
    # the first 0xc0 bytes of the oracle's mem.elf: ELF header (e_shoff 0x40, e_shnum 2,
    # e_shstrndx 1, e_phoff 0xc0) and the two little-endian section headers QEMU writes
    head = bytearray(0xC0)
    head[0:16] = b"\x7fELF\x02\x02\x01\x00" + bytes(8)
    struct.pack_into(">HHIQQQIHHHHHH", head, 16, 4, 21, 1, 0, 0xC0, 0x40, 0, 0x40, 0x38, 2, 0x40, 2, 1)
    struct.pack_into("<IIQ", head, 0x80, 1, 3, 0)  # QEMU's section header 1, little-endian
    head[0x98:0xA4] = bytes.fromhex("7808002100000000" "0b000000")
    data = bytes(range(256)) * 16
    note_off = 0xC0 + 2 * 0x38
    load_off = note_off
    phdrs = struct.pack(">IIQQQQQQ", 4, 0, note_off, 0, 0, 0, 0, 0)
    phdrs += struct.pack(">IIQQQQQQ", 1, 0, load_off, 0x2740000, 0x2740000, len(data), len(data), 0)
    path = tmp_path / "qemu-like.elf"
    path.write_bytes(bytes(head) + phdrs + data)
    mem = ElfCoreMemory(str(path))
    assert mem.cpu.arch == "ppc64" and not mem.little_endian
    assert mem.read(0x2740000 + 0x123, 4) == data[0x123:0x127]
