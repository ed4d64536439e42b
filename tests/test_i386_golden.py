"""Golden tests for i386: our dump and W+X verdict against what the Debian 6.1 686/686-pae kernels
printed themselves (tests/fixtures/i386/, made by tools/make_i386_fixtures.sh with ../shared/oracle).

Captures: PAE without and with KASLR, PAE with PTI, PAE with rodata=off (the kernel's W+X check
called by the oracle module: "passed", its blind spot), and 2-level paging (no NX: no check).
"""

from __future__ import annotations

import io
import json
import pathlib
import struct

import numpy as np
import pytest
from conftest import FIXTURES
from test_ptdump_properties import reference_ptdump

from pagewalk import open_image
from pagewalk.api import checkwx, dump
from pagewalk.arch import x86
from pagewalk.cli import main
from pagewalk.memory.write import write_elf_core
from pagewalk.ptdump.core import drive
from pagewalk.ptdump.x86 import X86State, format_fast
from pagewalk.runs import root_runs
from pagewalk.target import read_kallsyms, resolve
from pagewalk.translate import translate

I386 = FIXTURES / "i386"
CASES = sorted(p.name for p in I386.iterdir() if (p / "core.elf").exists())
PAE_CASES = [c for c in CASES if "-pae-" in c]


@pytest.fixture(params=CASES)
def case(request) -> pathlib.Path:
    return I386 / request.param


def _target(case: pathlib.Path, kallsyms: bool = True):
    mem = open_image(str(case / "core.elf"))
    return resolve(mem, kallsyms=read_kallsyms(str(case / "kallsyms.txt")) if kallsyms else None)


def _kernel_text(case: pathlib.Path) -> list[str]:
    return (case / "ptdump_kernel.txt").read_text().splitlines()


def _dump(t, view: str = "kernel", fmt: str = "text") -> str:
    out = io.StringIO()
    dump(t, view, out, fmt)
    return out.getvalue()


def test_captures_are_all_there():
    """The five oracle captures are committed: PAE nokaslr, kaslr, PTI, rodata=off, and 2-level."""
    assert CASES == [
        "6.1-2level-nokaslr",
        "6.1-pae-kaslr",
        "6.1-pae-nokaslr",
        "6.1-pae-nokaslr-pti",
        "6.1-pae-nokaslr-rodata-off",
    ]


def test_dump_equals_kernel_text(case):
    """`dump` of the minimised core is the kernel's page_tables/kernel text, line for line."""
    assert _dump(_target(case)).splitlines() == _kernel_text(case)


def test_dump_without_kallsyms_equals_kernel_text(case):
    """Without --kallsyms (high_memory guessed from the end of the direct map) the text is still the kernel's."""
    t = _target(case, kallsyms=False)
    assert "high_memory" not in t.layout.known
    assert t.layout.high_memory == 0xDFFE0000  # 512 MiB guest: RAM ends at 0x1ffe0000
    assert any("high_memory taken as the end of the direct map" in n for n in t.notes)
    assert _dump(t).splitlines() == _kernel_text(case)


def test_checkwx_verdict_equals_kernel(case):
    """`checkwx` prints the kernel's own W+X lines for every capture (none for 2-level, which has no NX)."""
    kernel = [ln for ln in (case / "wx.txt").read_text().splitlines() if ln.startswith("x86/mm: ")]
    res = checkwx(_target(case))
    ours = [ln for ln in res.lines if ln.startswith("x86/mm: ")]
    assert ours == kernel
    assert res.passed and res.wx_pages == 0 and res.ranges == []
    if "2level" in case.name:
        assert kernel == []
        assert "NX (Execute Disable) protection cannot be enabled: non-PAE kernel!" in (case / "wx.txt").read_text()
        assert res.lines == [
            "pagewalk: 2-level paging has no NX bit: the kernel skips its W+X check "
            "(ptdump_walk_pgd_level_checkwx() returns true)"
        ]
    else:
        assert kernel[0] == "x86/mm: Checked W+X mappings: passed, no W+X pages found."


def test_checkwx_exit_status_is_zero_for_every_capture(case, capsys):
    """The CLI's checkwx exits 0 (passed, or skipped) on every capture, as the kernel's check returned true."""
    assert main(["checkwx", str(case / "core.elf"), "--kallsyms", str(case / "kallsyms.txt"), "-q"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(("no W+X pages found.", "returns true)"))


def test_rodata_off_blind_spot_of_pae():
    """rodata=off leaves RW, executable kernel text; the kernel's PAE fold (PDPTEs have no RW) passes it, the MMU's fold does not."""
    case = I386 / "6.1-pae-nokaslr-rodata-off"
    assert "0xc1000000-0xc1c00000          12M     RW         PSE     GLB x  pmd" in _kernel_text(case)
    t = _target(case)
    assert checkwx(t).passed  # the kernel's verdict, reproduced
    # the same walk with the MMU's permission fold (a PDPTE restricts nothing) finds the text
    st = format_fast(t.mode, root_runs(t.mem, t.mode, t.root("kernel")), t.layout, None, check_wx=True)
    assert st.wx_ranges[0] == (0xC1000000, 0xC1C00000)
    # ... every page the kernel's own text shows as RW and executable (all upper levels are RW)
    wx_in_text = 0
    for ln in _kernel_text(case):
        if ln.startswith("0x") and " RW " in ln and ln[-6:-3] == "x  ":
            a, b = (int(x, 16) for x in ln.split()[0].split("-"))
            wx_in_text += ((b or 1 << 32) - a) // 4096
    assert st.wx_pages == wx_in_text == 3857
    # in the kernel's view no effective permission carries RW at all
    kview = x86.ptdump_view(t.mode)
    runs = root_runs(t.mem, kview, t.root("kernel"))
    assert not (runs.eff & np.uint64(x86._PAGE_RW)).any()
    assert (root_runs(t.mem, t.mode, t.root("kernel")).eff & np.uint64(x86._PAGE_RW)).any()


def test_modes_roots_and_page_offset(case):
    """CR4 picks PAE or 2-level; the kernel root is VMCOREINFO's swapper_pg_dir minus PAGE_OFFSET 0xc0000000."""
    t = _target(case)
    vi = t.mem.cpu.vmcoreinfo
    sym = int(vi["SYMBOL(swapper_pg_dir)"], 16)
    assert t.mem.cpu.arch == "i386"
    assert t.layout.page_offset == 0xC0000000
    assert t.root("kernel") == sym - 0xC0000000
    if "2level" in case.name:
        assert t.mode.name == "i386-2level" and t.mem.cpu.regs["cr4"] & x86.CR4_PSE
        assert "CONFIG_X86_PAE" not in vi
        assert [lvl.entries for lvl in t.mode.levels] == [1024, 1024] and t.mode.entry_bytes == 4
    else:
        assert t.mode.name == "i386-pae" and t.mem.cpu.regs["cr4"] & x86.CR4_PAE
        assert vi["CONFIG_X86_PAE"] == "y"
        assert [lvl.entries for lvl in t.mode.levels] == [4, 512, 512] and t.mode.entry_bytes == 8
    assert t.kernel_version == vi["OSRELEASE"]


def test_kaslr_moves_the_kernel_not_the_markers():
    """With KASLR swapper_pg_dir is at 0xdee98000 (PA 0x1ee98000); PAGE_OFFSET and the markers do not move."""
    t = _target(I386 / "6.1-pae-kaslr")
    assert t.root("kernel") == 0x1EE98000
    n = _target(I386 / "6.1-pae-nokaslr")
    assert n.root("kernel") == 0x01E98000
    assert t.layout.markers() == n.layout.markers()


def test_pae_current_kernel_root_is_a_32_byte_aligned_pdpt():
    """With PAE, CR3 holds a 32-byte aligned PDPT (bits 31:5): the current process's root is not page aligned."""
    t = _target(I386 / "6.1-pae-nokaslr")
    cr3 = t.mem.cpu.regs["cr3"]
    assert cr3 == 0x21F6760
    assert t.root("current_kernel") == 0x21F6760 == t.root("current_user")
    assert not t.pti
    # the current process shares the kernel's PMDs: from PAGE_OFFSET on the text is the kernel's
    cur = _dump(t, "current_kernel").splitlines()
    k = _kernel_text(I386 / "6.1-pae-nokaslr")
    at = k.index("---[ Kernel Mapping ]---")
    assert cur[cur.index("---[ Kernel Mapping ]---"):] == k[at:]


def test_pti_is_detected_and_its_user_copy_walked():
    """pti=on: the page after swapper_pg_dir is the user PDPT, whose kernel PMD maps far less; both W+X walks run."""
    t = _target(I386 / "6.1-pae-nokaslr-pti")
    assert t.pti
    assert t.root("kernel_user") == t.root("kernel") + 4096
    assert t.root("current_user") == t.root("current_kernel") + 4096
    kern, user = _dump(t, "current_kernel"), _dump(t, "current_user")
    assert "0xc0000000-0xc009b000         620K     RW                     NX pte" in kern  # PTI: no GLB
    assert len(user.splitlines()) < len(kern.splitlines())
    assert "---[ CPU entry area ]---" in user
    assert checkwx(t).lines[1] == "x86/mm: Checking user space page tables"
    off = resolve(open_image(str(I386 / "6.1-pae-nokaslr-pti" / "core.elf")), pti="off")
    assert not off.pti and "kernel_user" not in off.roots


def test_layout_from_the_kernel_variables(case):
    """high_memory, __FIXADDR_TOP and __supported_pte_mask are read from the image; the markers follow the 32-bit formulas."""
    t = _target(case)
    lay = t.layout
    assert {"high_memory", "fixaddr_top"} <= lay.known
    assert lay.high_memory == 0xDFFE0000 and lay.fixaddr_top == 0xFFFFF000
    pae = "-pae-" in case.name
    assert lay.nx is pae  # __supported_pte_mask has NX with PAE (QEMU -cpu max), never without
    a = lay.areas()
    assert a["VMALLOC_START"] == 0xE07E0000
    assert a["CPU_ENTRY_AREA_BASE"] == 0xFF400000
    assert a["FIXADDR_START"] == 0xFFDB8000
    if pae:  # PMD_SIZE 2 MiB
        assert (a["LDT_BASE_ADDR"], a["PKMAP_BASE"], a["VMALLOC_END"]) == (0xFF200000, 0xFF000000, 0xFEFFE000)
    else:  # PMD_SIZE 4 MiB
        assert (a["LDT_BASE_ADDR"], a["PKMAP_BASE"], a["VMALLOC_END"]) == (0xFF000000, 0xFEC00000, 0xFEBFE000)
    names = [m[1] for m in lay.markers()]
    assert names == ["User Space", "Kernel Mapping", "vmalloc() Area", "vmalloc() End", "Persistent kmap() Area",
                     "LDT remap", "CPU entry area", "Fixmap area", ""]
    headers = [ln[5:-5] for ln in _kernel_text(case) if ln.startswith("---[")]
    assert headers == names[:-1]


def test_level_folding_in_the_text():
    """2-level: 4 MiB pages print as "pmd", top-level holes as "pgd"; PAE: 2 MiB pages "pmd", PMD holes "pmd", PDPT holes "pgd"."""
    two = _kernel_text(I386 / "6.1-2level-nokaslr")
    assert "0xc0400000-0xc1000000          12M     RW         PSE     GLB x  pmd" in two
    assert "0xe0000000-0xe0400000           4M                               pgd" in two
    assert not any(ln.endswith(("pud", "p4d")) for ln in two)
    pae = _kernel_text(I386 / "6.1-pae-nokaslr")
    assert "0xc0200000-0xc1000000          14M     RW         PSE     GLB NX pmd" in pae
    assert "0xe0000000-0xe0600000           6M                               pmd" in pae
    assert pae[1] == "0x00000000-0xc0000000           3G                               pgd"
    for text in (two, pae):
        assert text[-1] == "0xffffd000-0x00000000          12K                               pte"  # the flush at 0
        assert all(len(ln) == 68 for ln in text if ln.startswith("0x"))  # 8 hex digits a side


def test_per_entry_reference_equals_kernel_text(case):
    """The per-entry mm/ptdump.c reference (walk.py, PDPTE folded as pgd, p4d and pud) prints the kernel's text too."""
    t = _target(case)
    text, st, ref = reference_ptdump(t.mem, t.mode, t.root("kernel"), t.layout)
    assert not ref.missing
    assert text.splitlines() == _kernel_text(case)
    assert st.wx_pages == 0 or "2level" in case.name


def test_json_equals_the_reference_state_machine(case):
    """The vectorised JSON ranges of i386 equal the records of the per-event note_page() port."""
    t = _target(case)
    records: list[dict] = []
    mode = x86.ptdump_view(t.mode)
    drive(X86State(t.layout, None, records=records), mode, root_runs(t.mem, mode, t.root("kernel")), t.layout.ranges())
    doc = json.loads(_dump(t, fmt="json"))
    assert doc["arch"] == "i386" and doc["mode"] == t.mode.name
    assert doc["ranges"] == records
    assert records[-1]["end"] == 1 << 32  # the flush at address 0 ends the last range at 2^32
    text = [ln for ln in _kernel_text(case) if ln.startswith("0x")]
    assert len(records) == len(text)


def _strip_notes(case: pathlib.Path, path: pathlib.Path, keep_vmcoreinfo: bool = False) -> None:
    """The minimised core without QEMU's CPU note (and without VMCOREINFO): registers must come from --reg."""
    mem = open_image(str(case / "core.elf"))
    chunks = [(a, mem.read(a, b - a)) for a, b in mem.runs()]
    notes = [n for n in mem.cpu.notes if keep_vmcoreinfo and n[0] == "VMCOREINFO"]
    write_elf_core(str(path), "i386", True, notes, chunks)


@pytest.mark.parametrize("name", ["6.1-pae-nokaslr", "6.1-2level-nokaslr"])
def test_cli_arch_and_registers(tmp_path, capsys, name):
    """`pagewalk dump IMAGE --arch i386 --reg cr3=… --reg cr4=…` on a core without notes dumps CR3's table, the kernel half as the kernel printed it."""
    case = I386 / name
    regs = open_image(str(case / "core.elf")).cpu.regs
    bare = tmp_path / "bare.elf"
    _strip_notes(case, bare)
    args = ["dump", str(bare), "--arch", "i386", "--reg", f"cr3={regs['cr3']:#x}", "--reg", f"cr4={regs['cr4']:#x}"]
    assert main(args) == 0
    cap = capsys.readouterr()
    assert "no VMCOREINFO swapper_pg_dir: dumping CR3's table" in cap.err
    ours = cap.out.splitlines()
    k = _kernel_text(case)
    assert ours[ours.index("---[ Kernel Mapping ]---"):] == k[k.index("---[ Kernel Mapping ]---"):]
    # with the guest's System.map, swapper_pg_dir gives the kernel's own root: the whole text
    assert main(args + ["--kallsyms", str(case / "kallsyms.txt"), "-q"]) == 0
    assert capsys.readouterr().out.splitlines() == k
    # without registers and without notes there is no root
    assert main(["dump", str(bare), "--arch", "i386", "-q"]) == 5


def _elf32(src: pathlib.Path, dst: pathlib.Path) -> None:
    """Rewrite an ELF64 core as the ELF32 EM_386 core QEMU writes when guest RAM ends below 4 GiB."""
    mem = open_image(str(src))
    notes = mem.cpu.notes
    blob = b""
    for name, ntype, desc in notes:
        nb = name.encode() + b"\0"
        blob += struct.pack("<III", len(nb), len(desc), ntype) + nb + b"\0" * (-len(nb) % 4) + desc + b"\0" * (-len(desc) % 4)
    runs = mem.runs()
    phnum = 1 + len(runs)
    off = 52 + 32 * phnum
    phdrs = [struct.pack("<IIIIIIII", 4, off, 0, 0, len(blob), len(blob), 0, 0)]
    data_off = (off + len(blob) + 4095) & ~4095
    datas = []
    for a, b in runs:
        phdrs.append(struct.pack("<IIIIIIII", 1, data_off, a, a, b - a, b - a, 0, 0))
        datas.append((data_off, mem.read(a, b - a)))
        data_off += b - a
    ident = b"\x7fELF" + bytes([1, 1, 1, 0]) + b"\0" * 8
    hdr = ident + struct.pack("<HHIIIIIHHHHHH", 4, 3, 1, 0, 52, 0, 0, 52, 32, phnum, 40, 0, 0)
    with open(dst, "wb") as f:
        f.write(hdr + b"".join(phdrs) + blob)
        for o, d in datas:
            f.seek(o)
            f.write(d)


def test_elf32_core_gives_i386_and_the_qemu_registers(tmp_path):
    """An ELF32 EM_386 core is read as i386 with CR3/CR4 from its QEMU note and VMCOREINFO, and dumps the same text."""
    case = I386 / "6.1-pae-nokaslr"
    dst = tmp_path / "core32.elf"
    _elf32(case / "core.elf", dst)
    assert dst.read_bytes()[4] == 1  # ELFCLASS32
    mem = open_image(str(dst))
    assert mem.cpu.arch == "i386"
    assert mem.cpu.regs["cr3"] == 0x21F6760 and mem.cpu.regs["cr4"] == 0x350EF0
    assert mem.cpu.vmcoreinfo["SYMBOL(swapper_pg_dir)"] == "c1e98000"
    t = resolve(mem, kallsyms=read_kallsyms(str(case / "kallsyms.txt")))
    assert _dump(t).splitlines() == _kernel_text(case)


def test_translate_through_the_kernel_tables(capsys):
    """`translate` walks a kernel text VA of each mode: PDPT, PMD (2 MiB) with PAE; PDE (4 MiB) with 2-level."""
    pae = I386 / "6.1-pae-nokaslr"
    assert main(["translate", str(pae / "core.elf"), "0xc1000123", "-q"]) == 0
    out = capsys.readouterr().out
    assert "pgd[  3] @ 0x1e98018 = 0x0000000001e94021  P A  -> table" in out
    assert "pa 0x1000123  (2M page; effective: kernel ro x)" in out
    two = I386 / "6.1-2level-nokaslr"
    assert main(["translate", str(two / "core.elf"), "0xc1000123", "-q"]) == 0
    out = capsys.readouterr().out
    assert "pa 0x1000123  (4M page; effective: kernel ro x)" in out
    assert main(["translate", str(two / "core.elf"), "0xe0000000", "-q"]) == 1
    assert "fault: pgd entry 0x0000000000000000: not present (P=0)" in capsys.readouterr().out


def test_every_range_of_the_kernel_text_translates_accordingly(case):
    """Each present range's first and last page translate with the line's page size and bits; each hole's first page faults at the line's level."""
    t = _target(case)
    root = t.root("kernel")
    pae = "-pae-" in case.name
    big = (2 << 20) if pae else (4 << 20)
    hw_level = {"pte": "pte", "pmd": "pmd" if pae else "pgd", "pgd": "pgd"}  # 2-level: the PDE is the kernel's pmd
    present = holes = 0
    for ln in _kernel_text(case):
        if not ln.startswith("0x"):
            continue
        a, b = (int(x, 16) for x in ln.split()[0].split("-"))
        b = b or 1 << 32
        cols, level = ln[-34:-4], ln[-3:]
        tr = translate(t.mem, t.mode, root, a)
        if not cols.strip():
            assert not tr.ok and tr.fault.endswith("not present (P=0)"), (ln, tr.fault)
            assert tr.steps[-1].level == hw_level[level], ln
            holes += 1
            continue
        size = 4096 if level == "pte" else big
        last = translate(t.mem, t.mode, root, b - 4096)
        assert tr.ok and last.ok and tr.page_size == last.page_size == size, ln
        leaf = tr.steps[-1]
        assert leaf.level == hw_level[level]
        words = leaf.flags.split()
        assert ("RW" in cols.split()) == ("RW" in words)
        assert ("NX" in cols.split()) == ("XD" in words) == bool(leaf.entry >> 63)
        assert ("GLB" in cols.split()) == ("G" in words)
        assert ("PSE" in cols.split()) == ("PS" in words) == (level == "pmd")
        present += 1
    assert present > 20 and holes > 10
