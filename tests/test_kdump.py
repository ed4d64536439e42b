"""kdump-compressed images: makedumpfile's KDUMP format (zlib, lzo, snappy, zstd) and its flattened form.

Real files: tests/fixtures/kdump/ holds makedumpfile's output for the minimised core of
x86_64/6.12-nokaslr-5level (tools/make_kdump_fixtures.sh), and the oracle test reads the
full-size dumps of a real guest (QEMU's own flattened kdump-zlib and makedumpfile -d 31) when
they are present. The synthetic files below come from `write_kdump`, a small writer that follows
makedumpfile's layout, for what real files cannot show (big-endian and 32-bit headers, split and
incomplete dumps, overlapping flattened records, corruption).
"""

from __future__ import annotations

import io
import os
import pathlib
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import pytest
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagewalk import open_image
from pagewalk.api import dump
from pagewalk.errors import FormatError, MemoryReadError, PagewalkError
from pagewalk.memory import kdump as kd
from pagewalk.memory.elfcore import ElfCoreMemory
from pagewalk.memory.kdump import LZO, SNAPPY, ZLIB, ZSTD, KdumpMemory
from pagewalk.target import read_kallsyms, resolve

KDUMP = FIXTURES / "kdump"
CASE = FIXTURES / "x86_64" / "6.12-nokaslr-5level"
ORACLE_RUN = pathlib.Path(os.environ.get("ORACLE_DIR", "/tmp/oracle")) / "out" / "kdump-x86"

_NEEDS = {"lzo": "lzallright", "snappy": "cramjam", "zstd": "cramjam"}


def _need(algo: str) -> None:
    if algo in _NEEDS:
        pytest.importorskip(_NEEDS[algo])


def _fixture(name: str) -> pathlib.Path:
    _need(name.split(".")[0].removeprefix("flat-"))
    return KDUMP / name


FIXTURE_NAMES = ["zlib.kdump", "lzo.kdump", "snappy.kdump", "zstd.kdump", "flat-zlib.kdump"]


def _dump_text(path: pathlib.Path | str, kallsyms: pathlib.Path) -> str:
    mem = open_image(str(path))
    out = io.StringIO()
    dump(resolve(mem, kallsyms=read_kallsyms(str(kallsyms))), "kernel", out)
    return out.getvalue()


# -- a small kdump writer (makedumpfile's layout) ----------------------------------------------------


def _compress(algo: int, data: bytes) -> bytes:
    if algo == ZLIB:
        return zlib.compress(data)
    if algo == LZO:
        import lzallright

        return lzallright.LZOCompressor().compress(data)
    if algo == SNAPPY:
        import cramjam

        return bytes(cramjam.snappy.compress_raw(data))
    if algo == ZSTD:
        import cramjam

        return bytes(cramjam.zstd.compress(data))
    return data


def write_kdump(
    path,
    pages: dict[int, bytes | None],
    *,
    algo: int = ZLIB,
    page_size: int = 4096,
    endian: str = "<",
    bits: int = 64,
    max_mapnr: int | None = None,
    notes: list[tuple[str, int, bytes]] = (),
    vmcoreinfo: bytes = b"",
    machine: str = "x86_64",
    split: tuple[int, int] | None = None,
    status: int | None = None,
    header_version: int = 6,
    blank_descs: set[int] = frozenset(),
) -> bytes:
    """Write a kdump file: `pages` maps PFN -> page bytes (None: in memory but excluded).

    All-zero pages share one zero page as makedumpfile -d 1 does; pages whose compressed form
    is not smaller are stored raw (flags 0). PFNs in `blank_descs` get an all-zero descriptor
    (what an interrupted makedumpfile leaves). Returns the file's bytes.
    """
    e = endian
    bs = page_size
    if max_mapnr is None:
        max_mapnr = max(pages) + 1 if pages else 1
    # notes blob (ELF note format) and VMCOREINFO right after the sub-header, as makedumpfile does
    blob = bytearray()
    for name, ntype, desc in notes:
        nb = name.encode() + b"\0"
        blob += struct.pack(e + "III", len(nb), len(desc), ntype) + nb + b"\0" * (-len(nb) % 4)
        blob += desc + b"\0" * (-len(desc) % 4)
    sub_size = 104 if bits == 64 else 80
    off_note = bs + sub_size
    off_vmci = off_note + len(blob)
    sub_hdr_size = -(-(sub_size + len(blob) + len(vmcoreinfo)) // bs)
    half = -(-max_mapnr // (8 * bs)) * bs
    bitmap_blocks = 2 * half // bs
    bm1, bm2 = bytearray(half), bytearray(half)
    for pfn, data in pages.items():
        bm1[pfn >> 3] |= 1 << (pfn & 7)
        if data is not None and (split is None or split[0] <= pfn < split[1]):
            bm2[pfn >> 3] |= 1 << (pfn & 7)
    dumped = sorted(p for p, d in pages.items() if d is not None and (split is None or split[0] <= p < split[1]))
    desc_off = bs * (1 + sub_hdr_size + bitmap_blocks)
    data_off = desc_off + 24 * len(dumped)
    descs, data = bytearray(), bytearray()
    zero_at = None
    for pfn in dumped:
        page = pages[pfn]
        assert len(page) == bs
        if pfn in blank_descs:
            descs += bytes(24)
            continue
        if page == bytes(bs):
            if zero_at is None:
                zero_at = data_off + len(data)
                data += page
            descs += struct.pack(e + "QIIQ", zero_at, bs, 0, 0)
            continue
        c = _compress(algo, page)
        flags = algo
        if len(c) >= bs:
            c, flags = page, 0
        descs += struct.pack(e + "QIIQ", data_off + len(data), len(c), flags, 0)
        data += c
    if status is None:
        status = algo
    uts = b"".join(s.encode().ljust(65, b"\0") for s in ["Linux", "test", "6.12", "#1", machine, ""])
    if bits == 64:
        hdr = b"KDUMP   " + struct.pack(e + "I", header_version) + uts + bytes(22)
    else:
        hdr = b"KDUMP   " + struct.pack(e + "I", header_version) + uts + bytes(10)
    hdr += struct.pack(e + "IIIIIIIIIII", status, bs, sub_hdr_size, bitmap_blocks, max_mapnr & 0xFFFFFFFF,
                       len(dumped), 0, len(dumped), 0, 1, 0)[:40]
    lo, hi = split if split else (0, max_mapnr)
    if bits == 64:
        sub = struct.pack(e + "QiiQQQQQQQQQQQ", 0x1000, 1, 1 if split else 0, lo, hi, off_vmci, len(vmcoreinfo),
                          off_note, len(blob), 0, 0, lo, hi, max_mapnr)
    else:
        sub = struct.pack(e + "IiiIIQIQIQIQQQ", 0x1000, 1, 1 if split else 0, lo, hi, off_vmci, len(vmcoreinfo),
                          off_note, len(blob), 0, 0, lo, hi, max_mapnr)
    out = bytearray(hdr.ljust(bs, b"\0"))
    out += (sub + bytes(blob) + vmcoreinfo).ljust(bs * sub_hdr_size, b"\0")
    out += bm1 + bm2 + descs + data
    with open(path, "wb") as f:
        f.write(out)
    return bytes(out)


def flatten(plain: bytes, chunk: int = 1000, extra: list[tuple[int, bytes]] = (), end: bool = True,
            order: list[int] | None = None) -> bytes:
    """The flattened stream of `plain`: records of `chunk` bytes (in `order`), then `extra` records."""
    head = (b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1)).ljust(4096, b"\0")
    recs = [(o, plain[o : o + chunk]) for o in range(0, len(plain), chunk)]
    if order is not None:
        recs = [recs[i] for i in order]
    body = bytearray(head)
    for o, d in list(recs) + list(extra):
        body += struct.pack(">qq", o, len(d)) + d
    if end:
        body += struct.pack(">qq", -1, -1)
    return bytes(body)


def _pages(n: int = 8, seed: int = 1) -> dict[int, bytes]:
    rng = np.random.default_rng(seed)
    out: dict[int, bytes] = {}
    for pfn in range(n):
        # compressible but distinct: a few random 8-byte entries among zeros, like a page table
        a = np.zeros(512, np.uint64)
        idx = rng.choice(512, 16, replace=False)
        a[idx] = rng.integers(1, 2**52, 16, dtype=np.uint64)
        out[pfn] = a.tobytes()
    return out


# -- the committed real files ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_kdump_dump_equals_kernel_text(name):
    """`dump` of each makedumpfile variant of the 6.12 capture prints the kernel's own ptdump text."""
    text = _dump_text(_fixture(name), CASE / "kallsyms.txt")
    assert text.splitlines() == (CASE / "ptdump_kernel.txt").read_text().splitlines()


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_kdump_pages_equal_the_elf_core(name):
    """Every page of the minimised ELF core reads byte for byte the same from each kdump variant."""
    core = ElfCoreMemory(str(CASE / "core.elf"))
    mem = open_image(str(_fixture(name)))
    assert isinstance(mem, KdumpMemory)
    n = 0
    for a, b in core.runs():
        assert mem.contains(a, b - a)
        assert mem.read(a, b - a) == core.read(a, b - a)
        n += (b - a) // 4096
    assert n == 105
    assert mem.warnings == []


def test_kdump_headers_notes_and_vmcoreinfo():
    """The header, the notes and VMCOREINFO of makedumpfile's file are those of the ELF core."""
    core = ElfCoreMemory(str(CASE / "core.elf"))
    mem = KdumpMemory(str(KDUMP / "zlib.kdump"))
    assert (mem.header_version, mem.page_size, mem.dump_level, mem.compression) == (6, 4096, 1, ["zlib"])
    assert not mem.flattened and mem.little_endian and mem.word_bits == 64
    assert mem.machine == "x86_64" and mem.cpu.arch == "x86_64"
    assert mem.cpu.regs["cr3"] == core.cpu.regs["cr3"] == 0x50FC000
    assert mem.cpu.regs["cr4"] == core.cpu.regs["cr4"]
    assert mem.cpu.vmcoreinfo == core.cpu.vmcoreinfo
    assert mem.cpu.vmcoreinfo["SYMBOL(init_top_pgt)"] == "ffffffff82c22000"
    assert [n[0] for n in mem.cpu.notes] == ["CORE", "QEMU", "VMCOREINFO"]
    # 105 committed pages + 87 the fixture script added for makedumpfile, all dumped
    assert mem.dumped_pages == 192
    assert mem.max_mapnr == 0x1FCA0  # the mem_section root page at PA 0x1fc9f000 is the last


def test_kdump_zero_pages_share_one_descriptor_and_read_as_zeros():
    """Zero pages that makedumpfile -d 1 excluded point at one shared page and read as zeros."""
    mem = KdumpMemory(str(KDUMP / "zlib.kdump"))
    core = ElfCoreMemory(str(CASE / "core.elf"))
    zero_pfns = [a >> 12 for a, b in core.runs() for a in range(a, b, 4096) if core.read(a, 4096) == bytes(4096)]
    assert len(zero_pfns) >= 2
    offs = set()
    for pfn in zero_pfns:
        raw = mem._src.read(mem._desc_off + 24 * mem._dumped(pfn), 24)
        off, size, flags, _ = struct.unpack("<QIIQ", raw)
        assert (size, flags) == (4096, 0)
        offs.add(off)
        assert mem.read(pfn << 12, 4096) == bytes(4096)
    assert len(offs) == 1


def test_kdump_pages_outside_the_dump_are_not_in_the_image():
    """A PA the dump does not hold raises MemoryReadError and gathers as a masked row of zeros."""
    mem = KdumpMemory(str(KDUMP / "zlib.kdump"))
    assert not mem.contains(0x1000)
    with pytest.raises(MemoryReadError, match="0x1000 is not in the image"):
        mem.read(0x1000, 8)
    with pytest.raises(MemoryReadError):
        mem.read(0x1FC9E000, 0x4000)  # runs past max_mapnr
    t, ok = mem.gather_tables(np.array([0x1000, 0x50FC000, 1 << 51], np.uint64), 512, np.dtype("<u8"))
    assert ok.tolist() == [False, True, False]
    assert not t[0].any() and not t[2].any()
    assert t[1].tobytes() == ElfCoreMemory(str(CASE / "core.elf")).read(0x50FC000, 4096)


def test_kdump_runs_are_the_dumped_pages():
    """runs() lists the dumped stretches: the ELF core's runs are inside them."""
    mem = KdumpMemory(str(KDUMP / "zlib.kdump"))
    runs = mem.runs()
    assert sum((b - a) >> 12 for a, b in runs) == mem.dumped_pages
    for a, b in ElfCoreMemory(str(CASE / "core.elf")).runs():
        assert any(x <= a and b <= y for x, y in runs)


def test_flattened_fixture_reads_as_its_reassembled_file():
    """The flattened fixture's index gives the bytes `makedumpfile -R` would write (reassembled here)."""
    data = (KDUMP / "flat-zlib.kdump").read_bytes()
    pos, buf = 4096, bytearray()
    while True:
        off, size = struct.unpack_from(">qq", data, pos)
        pos += 16
        if off < 0:
            break
        if len(buf) < off + size:
            buf.extend(bytes(off + size - len(buf)))
        buf[off : off + size] = data[pos : pos + size]
        pos += size
    mem = KdumpMemory(str(KDUMP / "flat-zlib.kdump"))
    assert mem.flattened and mem._src.size == len(buf)
    assert mem._src.read(0, len(buf)) == bytes(buf)
    assert mem._src.data_bytes <= len(data)


def test_open_image_detects_kdump_and_accepts_the_format_name():
    """open_image picks the kdump reader from either signature, and by its format name."""
    assert isinstance(open_image(str(KDUMP / "zlib.kdump")), KdumpMemory)
    assert isinstance(open_image(str(KDUMP / "flat-zlib.kdump")), KdumpMemory)
    assert isinstance(open_image(str(KDUMP / "zlib.kdump"), "kdump"), KdumpMemory)
    with pytest.raises(FormatError, match="not a kdump-compressed file"):
        open_image(str(CASE / "core.elf"), "kdump")


def test_cli_dumps_a_kdump_file(capsys):
    """The console command prints the same text for a kdump file as for the ELF core."""
    from pagewalk.cli import main

    assert main(["dump", str(KDUMP / "flat-zlib.kdump"), "--kallsyms", str(CASE / "kallsyms.txt"), "-q"]) == 0
    assert capsys.readouterr().out.splitlines() == (CASE / "ptdump_kernel.txt").read_text().splitlines()


def test_checkwx_and_extract_on_a_kdump_file(tmp_path, capsys):
    """checkwx reaches the kernel's verdict on a kdump file, and extract turns it into an ELF core that dumps alike."""
    from pagewalk.cli import main

    ks = str(CASE / "kallsyms.txt")
    assert main(["checkwx", str(KDUMP / "zlib.kdump"), "--kallsyms", ks]) == 0
    assert "Checked W+X mappings: passed, no W+X pages found." in capsys.readouterr().out
    assert "passed, no W+X pages found" in (CASE / "wx.txt").read_text()
    assert main(["extract", str(KDUMP / "flat-zlib.kdump"), "--kallsyms", ks, "-o", str(tmp_path / "x.elf"), "-q"]) == 0
    capsys.readouterr()
    assert _dump_text(tmp_path / "x.elf", CASE / "kallsyms.txt") == (CASE / "ptdump_kernel.txt").read_text()


# -- the full-size dumps of a real guest (present after tools/make_kdump_fixtures.sh --large) --------------

_ORACLE_FILES = ["mem.kdump-zlib", "mem.md-zlib.kdump", "mem.md-lzo.kdump", "mem.md-snappy.kdump",
                 "mem.md-zstd.kdump", "mem.md-zstd-flat.kdump", "mem.md-zlib-flat.kdump"]


@pytest.mark.parametrize("name", _ORACLE_FILES)
def test_real_guest_kdump_dumps_equal_its_elf_core(name):
    """QEMU's flattened kdump-zlib and makedumpfile -d 31 files of one guest dump like its ELF core."""
    path = ORACLE_RUN / name
    if not (path.exists() and (ORACLE_RUN / "mem.elf").exists() and (ORACLE_RUN / "kallsyms.txt").exists()):
        pytest.skip(f"{path} absent (tools/make_kdump_fixtures.sh --large makes it)")
    for algo in _NEEDS:
        if algo in name:
            _need(algo)
    kallsyms = ORACLE_RUN / "kallsyms.txt"
    ref = _dump_text(ORACLE_RUN / "mem.elf", kallsyms)
    assert len(ref.splitlines()) > 200
    assert _dump_text(path, kallsyms) == ref


@pytest.mark.parametrize("name", ["mem.kdump-zlib", "mem.md-zlib.kdump"])
def test_real_guest_kdump_pages_equal_its_elf_core(name):
    """Sampled pages of a real guest read as in its ELF core; -d 31 leaves out some, and says so."""
    path = ORACLE_RUN / name
    if not (path.exists() and (ORACLE_RUN / "mem.elf").exists()):
        pytest.skip(f"{path} absent (tools/make_kdump_fixtures.sh --large makes it)")
    elf, mem = ElfCoreMemory(str(ORACLE_RUN / "mem.elf")), KdumpMemory(str(path))
    same = excluded = 0
    for a, b in elf.runs():
        for pa in range(a, b, 4096 * 13):
            if mem.contains(pa, 4096):
                assert mem.read(pa, 4096) == elf.read(pa, 4096)
                same += 1
            elif pa < mem.max_mapnr * 4096:
                with pytest.raises(MemoryReadError, match="excluded from the dump by makedumpfile, dump level 31"):
                    mem.read(pa, 4096)
                excluded += 1
            else:  # makedumpfile's max_mapnr ends with the RAM: the ROM and VGA blocks are left out
                with pytest.raises(MemoryReadError, match=f"{pa:#x} is not in the image"):
                    mem.read(pa, 4096)
    if name == "mem.kdump-zlib":  # QEMU dumps every page of guest RAM (dump level 1: zero pages shared)
        assert excluded == 0 and mem.runs() == elf.runs() and mem.flattened
    else:
        assert mem.dump_level == 31 and excluded > same > 500


# -- synthetic files: layouts -------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", [ZLIB, LZO, SNAPPY, ZSTD], ids=["zlib", "lzo", "snappy", "zstd"])
def test_each_compression_reads_back(tmp_path, algo):
    """Pages compressed with each algorithm read back exactly; the header's status names it."""
    _need(kd._ALGOS[algo])
    pages = _pages(6)
    pages[3] = os.urandom(4096)  # does not compress: stored raw (flags 0)
    pages[4] = bytes(4096)
    write_kdump(tmp_path / "k", pages, algo=algo)
    mem = KdumpMemory(str(tmp_path / "k"))
    assert mem.compression == [kd._ALGOS[algo]]
    for pfn, data in pages.items():
        assert mem.read(pfn << 12, 4096) == data
    assert mem.runs() == [(0, 6 << 12)]


@pytest.mark.parametrize("endian,bits", [("<", 64), (">", 64), ("<", 32), (">", 32)])
def test_header_layouts_and_byte_orders(tmp_path, endian, bits):
    """64- and 32-bit headers in either byte order give the same pages, notes and VMCOREINFO."""
    pages = _pages(5)
    note = ("CORE", 1, b"\x11" * 40)
    machine = "s390x" if endian == ">" and bits == 64 else ("i686" if bits == 32 else "x86_64")
    write_kdump(tmp_path / "k", pages, endian=endian, bits=bits, notes=[note],
                vmcoreinfo=b"OSRELEASE=6.12\nNUMBER(phys_base)=0x1000\n", machine=machine)
    mem = KdumpMemory(str(tmp_path / "k"))
    assert (mem.little_endian, mem.word_bits) == (endian == "<", bits)
    assert mem.read(2 << 12, 4096) == pages[2]
    assert mem.cpu.notes[0] == note
    assert mem.cpu.vmcoreinfo == {"OSRELEASE": "6.12", "NUMBER(phys_base)": "0x1000"}
    assert mem.cpu.arch == {"s390x": "s390x", "i686": "i386", "x86_64": "x86_64"}[machine]
    assert mem.phys_base == 0x1000


def test_excluded_pages_are_absent_and_zero_pages_are_zeros(tmp_path):
    """A page in memory but filtered out is not in the image; a zero page reads as zeros."""
    pages = _pages(4)
    pages[1] = None  # free page, say: 1st bitmap only
    pages[2] = bytes(4096)
    pages[9] = None
    write_kdump(tmp_path / "k", pages, max_mapnr=40)
    mem = KdumpMemory(str(tmp_path / "k"))
    assert mem.read(2 << 12, 4096) == bytes(4096)
    assert not mem.contains(1 << 12) and not mem.contains(9 << 12) and not mem.contains(20 << 12)
    with pytest.raises(MemoryReadError, match=r"0x1000 \(excluded from the dump by makedumpfile, dump level 1\)"):
        mem.read(0x1000, 8)
    with pytest.raises(MemoryReadError, match=r"0x14000 is not in the image"):
        mem.read(20 << 12, 8)
    assert mem.contains(0, 4096) and not mem.contains(0, 8192)
    with pytest.raises(MemoryReadError):
        mem.read(0x1FF8, 16)  # straddles a held and an excluded page
    assert mem.runs() == [(0, 0x1000), (0x2000, 0x4000)]


def test_gather_tables_matches_raw_memory_for_unaligned_and_straddling_tables(tmp_path):
    """gather_tables gives what a raw image gives, for tables inside a page and across two pages."""
    from pagewalk.memory.raw import RawMemory

    pages = _pages(6)
    write_kdump(tmp_path / "k", pages)
    (tmp_path / "raw").write_bytes(b"".join(pages[i] for i in range(6)))
    mem, raw = KdumpMemory(str(tmp_path / "k")), RawMemory(str(tmp_path / "raw"))
    pas = np.array([0, 0x1000, 0x1008, 0x1F00, 0x4800, 0x5000, 0x5F00, 0x6000, 0x10], np.uint64)
    for dtype, count in [(np.dtype("<u8"), 512), (np.dtype("<u8"), 64), (np.dtype(">u4"), 100)]:
        a, ok = mem.gather_tables(pas, count, dtype)
        b, okb = raw.gather_tables(pas, count, dtype)
        assert ok.tolist() == okb.tolist()
        assert np.array_equal(a, b)
    v, ok = mem.gather(np.array([8, 0x5FF8, 0x6000], np.uint64), np.dtype("<u8"))
    assert ok.tolist() == [True, True, False]
    assert v[0] == int.from_bytes(pages[0][8:16], "little")
    assert mem.table(0x1008, 4, np.dtype("<u8")).tolist() == list(np.frombuffer(pages[1][8:40], "<u8"))


def test_split_dump_holds_only_its_part(tmp_path):
    """A split dump (makedumpfile --split) holds only the PFNs of its start_pfn..end_pfn range."""
    pages = _pages(8)
    write_kdump(tmp_path / "k", pages, split=(2, 5))
    mem = KdumpMemory(str(tmp_path / "k"))
    assert mem.runs() == [(0x2000, 0x5000)]
    assert mem.read(0x3000, 4096) == pages[3]
    assert not mem.contains(0x1000)


def test_incomplete_dump_reads_what_was_written(tmp_path):
    """Blank descriptors of an interrupted dump make those pages absent, with a warning."""
    pages = _pages(4)
    write_kdump(tmp_path / "k", pages, status=ZLIB | 0x8, blank_descs={2, 3})
    mem = KdumpMemory(str(tmp_path / "k"))
    assert mem.read(0x1000, 4096) == pages[1]
    with pytest.raises(MemoryReadError, match="no page data"):
        mem.read(0x2000, 8)
    _, ok = mem.gather_tables(np.array([0, 0x3000], np.uint64), 512, np.dtype("<u8"))
    assert ok.tolist() == [True, False]
    assert any("marked incomplete" in w for w in mem.warnings)


def test_old_header_version_uses_the_32bit_max_mapnr(tmp_path):
    """A version-1 header (no notes, no 64-bit fields) still reads through its 32-bit max_mapnr."""
    pages = _pages(3)
    write_kdump(tmp_path / "k", pages, header_version=1, notes=[("CORE", 1, b"x" * 8)])
    mem = KdumpMemory(str(tmp_path / "k"))
    assert mem.header_version == 1 and mem.max_mapnr == 3
    assert mem.read(0x2000, 4096) == pages[2]
    assert mem.cpu.notes == []  # offset_note is a version-4 field


def test_big_pages(tmp_path):
    """A 64 KiB-page dump (arm64, ppc64) uses the block size as the page size."""
    pages = {i: bytes([i + 1]) * 65536 for i in range(3)}
    write_kdump(tmp_path / "k", pages, page_size=65536, machine="aarch64")
    mem = KdumpMemory(str(tmp_path / "k"))
    assert mem.page_size == 65536 and mem.cpu.arch == "aarch64"
    assert mem.read(0x1FFF0, 32) == b"\x02" * 16 + b"\x03" * 16


def test_flattened_records_in_any_order_with_overlaps_later_wins(tmp_path):
    """Flattened records are placed by offset whatever their order; where two overlap the later one wins."""
    pages = _pages(4)
    plain = write_kdump(tmp_path / "plain", pages)
    n = -(-len(plain) // 1000)
    order = list(range(n))[::-1]
    # a later record rewrites 16 bytes of page 2's compressed data with themselves, and one
    # rewrites a stretch of the header padding with a marker
    mem0 = KdumpMemory(str(tmp_path / "plain"))
    desc = mem0._src.read(mem0._desc_off + 24 * 2, 24)
    off2 = struct.unpack("<Q", desc[:8])[0]
    extra = [(off2, plain[off2 : off2 + 16]), (600, b"X" * 3000)]
    (tmp_path / "flat").write_bytes(flatten(plain, order=order, extra=extra))
    mem = KdumpMemory(str(tmp_path / "flat"))
    assert mem.flattened and mem.warnings == []
    for pfn, data in pages.items():
        assert mem.read(pfn << 12, 4096) == data
    assert mem._src.read(590, 20) == plain[590:600] + b"X" * 10
    assert mem._src.read(3590, 20) == b"X" * 10 + plain[3600:3610]


def test_flattened_gaps_read_as_zeros_and_a_missing_end_marker_warns(tmp_path):
    """Stretches no record wrote read as zeros (the holes of `-R`), and a cut stream says so."""
    pages = _pages(2)
    plain = write_kdump(tmp_path / "plain", pages)
    # leave out the header block's padding: bytes 512..4095 (never read) come from no record
    data = flatten(plain[:512], chunk=512) [:-16]
    body = bytearray(data)
    body += struct.pack(">qq", 4096, len(plain) - 4096) + plain[4096:]
    (tmp_path / "flat").write_bytes(bytes(body))
    mem = KdumpMemory(str(tmp_path / "flat"))
    assert mem._src.read(1000, 8) == bytes(8)
    assert mem.read(0x1000, 4096) == pages[1]
    assert any("no end marker" in w for w in mem.warnings)


def test_missing_decompressor_names_the_package(tmp_path, monkeypatch):
    """Without the library for the dump's compression, opening it says which package to install."""
    write_kdump(tmp_path / "k", _pages(2), algo=ZLIB, status=ZSTD)

    def gone():
        raise ImportError("no cramjam")

    monkeypatch.setitem(kd._LOADERS, ZSTD, gone)
    with pytest.raises(FormatError, match=r"zstd-compressed pages; reading them needs the Python package 'cramjam'"):
        KdumpMemory(str(tmp_path / "k"))
    monkeypatch.setitem(kd._LOADERS, LZO, gone)
    with pytest.raises(FormatError, match="'lzallright'"):
        kd.decompressor(LZO)


def test_page_cache_is_bounded(tmp_path, monkeypatch):
    """The decompressed-page cache never holds more than its byte bound."""
    monkeypatch.setattr(kd, "_CACHE_BYTES", 3 * 4096)
    pages = _pages(10)
    write_kdump(tmp_path / "k", pages)
    mem = KdumpMemory(str(tmp_path / "k"))
    for pfn in range(10):
        assert mem.read(pfn << 12, 4096) == pages[pfn]
        assert len(mem._cache) <= 3
    assert list(mem._cache) == [7, 8, 9]
    mem.release()
    assert not mem._cache
    assert mem.read(0, 8) == pages[0][:8]


def test_corrupt_page_data_is_one_page_missing(tmp_path):
    """A page whose compressed data are corrupt reads as absent, named in one warning."""
    pages = _pages(3)
    plain = bytearray(write_kdump(tmp_path / "k", pages))
    mem = KdumpMemory(str(tmp_path / "k"))
    off, size, _, _ = struct.unpack("<QIIQ", mem._src.read(mem._desc_off + 24, 24))
    plain[off + 2 : off + size] = b"\xff" * (size - 2)
    (tmp_path / "bad").write_bytes(bytes(plain))
    mem = KdumpMemory(str(tmp_path / "bad"))
    with pytest.raises(MemoryReadError, match="zlib") as ei:
        mem.read(0x1000, 8)
    assert ei.value.pa == 0x1000
    _, ok = mem.gather_tables(np.array([0, 0x1000, 0x2000], np.uint64), 512, np.dtype("<u8"))
    assert ok.tolist() == [True, False, True]
    assert len([w for w in mem.warnings if "corrupt page data" in w]) == 1


# -- hostile headers ---------------------------------------------------------------------------------------------


def _set(data: bytes, off: int, fmt: str, *vals) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, off, *vals)
    return bytes(b)


@pytest.mark.parametrize(
    "patch,words",
    [
        (lambda d: d[:300], "truncated kdump header"),
        (lambda d: _set(d, 428, "<I", 3000), "no sane header version and block size"),
        (lambda d: _set(d, 8, "<I", 0), "no sane header version"),
        (lambda d: _set(d, 436, "<I", 0xFFFFFFFE), "bitmaps"),
        (lambda d: _set(d, 436, "<I", 0), "bitmap of 0 blocks"),
        (lambda d: _set(d, 432, "<I", 0x7FFFFFFF), "bitmaps"),
        (lambda d: d[:4096 + 50], "truncated kdump file \\(no sub-header\\)"),
        (lambda d: b"DISKDUMP" + d[8:], "old diskdump"),
        (lambda d: b"makedumpfile" + bytes(100), "truncated flattened kdump"),
        (lambda d: (b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 2, 1)).ljust(4096, b"\0"), "unknown type 2"),
        (lambda d: flatten(d, extra=[(-5, b"xx")]), "corrupt flattened kdump: record"),
        (lambda d: flatten(b"", end=True), "the flattened records hold no kdump header"),
    ],
)
def test_bad_headers_are_one_format_error(tmp_path, patch, words):
    """Truncated, inconsistent or absurd headers give one FormatError naming the problem."""
    plain = write_kdump(tmp_path / "ok", _pages(3))
    (tmp_path / "bad").write_bytes(patch(plain))
    with pytest.raises(FormatError, match=words):
        KdumpMemory(str(tmp_path / "bad"))


def test_absurd_max_mapnr_is_clamped_to_the_bitmap(tmp_path):
    """A max_mapnr larger than the bitmap holds is cut to it, with a warning, not allocated."""
    plain = write_kdump(tmp_path / "ok", _pages(3))
    (tmp_path / "bad").write_bytes(_set(plain, 4096 + 96, "<Q", 1 << 62))
    mem = KdumpMemory(str(tmp_path / "bad"))
    assert mem.max_mapnr == 4096 * 8
    assert any("exceeds its bitmap" in w for w in mem.warnings)
    assert mem.read(0x2000, 8) == _pages(3)[2][:8]


def test_truncated_page_data_and_descriptors_warn(tmp_path):
    """A file cut inside the page data or the descriptors holds the pages before the cut."""
    pages = _pages(6)
    plain = write_kdump(tmp_path / "ok", pages)
    mem = KdumpMemory(str(tmp_path / "ok"))
    off4 = struct.unpack("<Q", mem._src.read(mem._desc_off + 24 * 4, 8))[0]
    (tmp_path / "cut").write_bytes(plain[: off4 + 10])
    mem = KdumpMemory(str(tmp_path / "cut"))
    assert mem.read(0x3000, 4096) == pages[3]
    with pytest.raises(MemoryReadError, match="past the end of the file"):
        mem.read(0x4000, 8)
    (tmp_path / "cut2").write_bytes(plain[: mem._desc_off + 24 * 2 + 5])
    mem = KdumpMemory(str(tmp_path / "cut2"))
    assert any("4 of 6 page descriptors" in w for w in mem.warnings)
    assert mem.contains(0x1000) and not mem.contains(0x2000)


def _exercise(path: str) -> None:
    """Open an image and use all of its interface; only PagewalkErrors may come out."""
    try:
        mem = open_image(path, "kdump")
    except PagewalkError:
        return
    runs = mem.runs()
    pas = [a for a, b in runs[:20]] + [0, 0x1000, 0x50FC000, 0xFFF8]
    for pa in pas[:30]:
        try:
            mem.read(pa, 4096)
        except PagewalkError:
            pass
        mem.contains(pa, 4096)
    arr = np.array(pas, np.uint64)
    t, ok = mem.gather_tables(arr, 512, np.dtype("<u8"))
    assert t.shape == (len(pas), 512) and ok.shape == (len(pas),)
    mem.gather_tables(arr + np.uint64(0xF00), 64, np.dtype("<u8"))
    mem.file_offsets(arr, 4096)
    mem.close()


_SEED = write_kdump(os.devnull, {**_pages(3), 3: bytes(4096), 4: None}, notes=[("CORE", 1, b"r" * 24)],
                    vmcoreinfo=b"OSRELEASE=x\n")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_kdump_files_never_crash(data):
    """Random byte changes and truncations of a kdump file (plain or flattened) give PagewalkErrors only."""
    flat = data.draw(st.booleans())
    base = bytearray(flatten(_SEED, chunk=2048) if flat else _SEED)
    for _ in range(data.draw(st.integers(1, 6))):
        hot = data.draw(st.sampled_from([(0, 600), (4096, 4200), (0, len(base))]))
        i = data.draw(st.integers(hot[0], min(hot[1], len(base)) - 1))
        width = data.draw(st.sampled_from([1, 4, 8]))
        val = data.draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, 1]))
        base[i : i + width] = bytes([val]) * len(base[i : i + width])
    cut = data.draw(st.one_of(st.none(), st.integers(1, len(base))))
    blob = bytes(base[:cut] if cut else base)
    with tempfile.NamedTemporaryFile(suffix=".kdump") as f:
        f.write(blob)
        f.flush()
        _exercise(f.name)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 68000 - 1), st.binary(min_size=1, max_size=8), st.booleans())
def test_mutated_real_fixture_never_crashes(at, junk, cut):
    """Changes anywhere in makedumpfile's real file, or a cut there, give PagewalkErrors only."""
    data = bytearray((KDUMP / "zlib.kdump").read_bytes())
    at %= len(data)
    data = data[:at] if cut and at else data[:at] + junk + data[at + len(junk) :]
    with tempfile.NamedTemporaryFile(suffix=".kdump") as f:
        f.write(bytes(data))
        f.flush()
        _exercise(f.name)


def test_no_traceback_from_the_console_script_on_a_bad_kdump(tmp_path):
    """A broken kdump file gives one line on stderr and the format error's exit code, no traceback."""
    plain = write_kdump(tmp_path / "ok", _pages(2))
    bad = tmp_path / "bad.kdump"
    bad.write_bytes(_set(plain, 436, "<I", 0xFFFFFFF0))
    exe = pathlib.Path(sys.executable).parent / "pagewalk"
    r = subprocess.run([str(exe), "dump", str(bad)], capture_output=True, text=True, check=False)
    assert r.returncode == FormatError.exit_code
    assert "Traceback" not in r.stderr
    assert "bitmaps" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@settings(max_examples=300, deadline=None)
@given(where=st.floats(0, 1.01), offset=st.integers(0, 8191), size=st.integers(0, 80000))
def test_contains_scalar_path_equals_the_bitmap_rank(where, offset, size):
    """KdumpMemory.contains() on one to sixteen pages (ints) answers as the array rank test does."""
    mem = _KDUMP_FOR_CONTAINS.setdefault("mem", open_image(str(FIXTURES / "kdump" / "zlib.kdump")))
    pa = int(where * mem.max_mapnr) * mem.page_size + offset
    want = bool(mem._held(np.array([pa], dtype=np.uint64), size)[0])
    assert mem.contains(pa, size) == want


_KDUMP_FOR_CONTAINS: dict = {}
