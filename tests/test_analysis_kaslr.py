"""diff of two KASLR boots: the moves the images say (KERNELOFFSET, the layout's markers) are applied and reported by region."""

from __future__ import annotations

import numpy as np
from conftest import FIXTURES

from pagewalk import open_image
from pagewalk.analysis import diff
from pagewalk.analysis.commands import main as analysis_main
from pagewalk.target import read_kallsyms, resolve
from pagewalk.translate import translate

NOKASLR = FIXTURES / "x86_64" / "6.12-nokaslr-5level"
KASLR = FIXTURES / "x86_64" / "6.12-kaslr-5level"
PMD_SPAN = 1 << 21


def _load(case, kallsyms: bool = True):
    ks = read_kallsyms(str(case / "kallsyms.txt")) if kallsyms else {}
    return resolve(open_image(str(case / "core.elf")), kallsyms=ks)


def _relocated_copy(tmp_path, shift: int):
    """A copy of the KASLR core whose kernel image is moved up by `shift` VA (a multiple of 2 MiB): the entries of
    the PMD table that maps it are moved `shift / 2 MiB` slots up, and VMCOREINFO's KERNELOFFSET and SYMBOL(_stext)
    are rewritten (same lengths), as a boot with that offset would have them. PAs do not change."""
    t = _load(KASLR, kallsyms=False)
    vi = t.mem.cpu.vmcoreinfo
    stext, off = int(vi["SYMBOL(_stext)"], 16), int(vi["KERNELOFFSET"], 16)
    steps = translate(t.mem, t.mode, t.root("kernel"), stext).steps
    pmd = next(s for s in steps if s.level == "pmd")
    fo, ok = t.mem.file_offsets(np.array([pmd.table_pa], np.uint64), 4096)
    assert ok[0]
    data = bytearray((KASLR / "core.elf").read_bytes())
    fo = int(fo[0])
    table = np.frombuffer(bytes(data[fo : fo + 4096]), "<u8").copy()
    used = np.flatnonzero(table)
    k = shift // PMD_SPAN
    assert used.max() + k < 512 and (table[used.min() + k : used.max() + k + 1][~np.isin(
        np.arange(used.min() + k, used.max() + k + 1), used)] == 0).all()
    moved = np.zeros_like(table)
    moved[used + k] = table[used]
    data[fo : fo + 4096] = moved.tobytes()
    for key, old, new in (("KERNELOFFSET", off, off + shift), ("SYMBOL(_stext)", stext, stext + shift)):
        a, b = f"{key}={old:x}\n".encode(), f"{key}={new:x}\n".encode()
        assert len(a) == len(b) and a in data
        data = data.replace(a, b)
    path = tmp_path / "moved.elf"
    path.write_bytes(bytes(data))
    return resolve(open_image(str(path))), path


def test_relocated_kernel_image_moved_and_nothing_else_changed(tmp_path):
    """Built from one real core (its kernel image's PMD entries moved by 0x10000000): diff finds the move from
    KERNELOFFSET and says exactly that the image moved and nothing else changed, anywhere."""
    a = _load(KASLR, kallsyms=False)
    b, _ = _relocated_copy(tmp_path, 0x10000000)
    res = diff(a, b)
    [(name, sh)] = res.regions
    assert (name, sh.va_delta, sh.pa_delta) == ("kernel image", 0x10000000, 0)
    assert sh.va_start == 0xFFFFFFFF96400000 and sh.va_end > int(a.mem.cpu.vmcoreinfo["SYMBOL(_stext)"], 16)
    assert res.changes == []
    assert res.verdict == f"kernel image {sh.va_start:#x}-{sh.va_end:#x} moved by 0x10000000, nothing else changed; " \
                          "elsewhere: identical"
    assert res.moves == {0x10000000: sh.va_end - sh.va_start}
    # without the automatic shift the same move is still found, by pairing the removed and added ranges
    plain = diff(a, b, auto_shift=False)
    assert plain.regions == [] and not [c for c in plain.changes if c.kind != "moved"]
    assert set(plain.moves) == {0x10000000}


def test_two_real_boots_kernel_image_and_regions_moved(tmp_path):
    """6.12 nokaslr and KASLR boots of one kernel: the image moved by KERNELOFFSET (PA by the physical offset), the
    direct map, vmalloc and vmemmap by their bases; what else differs is reported as what it is."""
    a, b = _load(NOKASLR), _load(KASLR)
    res = diff(a, b)
    regions = dict(res.regions)
    image = regions["kernel image"]
    assert image.va_delta == 0x15400000 == int(b.mem.cpu.vmcoreinfo["KERNELOFFSET"], 16)
    assert image.pa_delta == 0x1BC00000 - 0x1000000  # _stext at PA 0x1000000 / 0x1bc00000
    assert regions["Low Kernel Mapping"].va_delta == (b.layout.page_offset - a.layout.page_offset) % (1 << 64)
    assert regions["Vmemmap"].va_delta and regions["vmalloc() Area"].va_delta
    # the kernel image: text and rodata identical after the move; the only other differences are pages of its
    # data that one boot has read-only and the other writable, at the same (moved) physical pages
    inside = res.in_region(image)
    assert inside and {c.kind for c in inside} == {"changed"}
    assert all(c.va_start >= 0xFFFFFFFF82A00000 and c.pa_a == c.pa_b for c in inside)
    assert {(c.perm_a, c.perm_b) for c in inside} == {("kernel rw- G", "kernel r-- G")}
    # the direct map maps the same physical memory at the moved VAs: only rights / levels differ, never the PA
    dmap = res.in_region(regions["Low Kernel Mapping"])
    assert dmap and {c.kind for c in dmap} == {"changed"} and all(c.pa_a == c.pa_b for c in dmap)
    assert "Vmemmap" in res.verdict and "moved by 0x15400000, PA by 0x1ac00000; in it" in res.verdict


def test_diff_command_says_the_region_verdicts(tmp_path, capsys):
    """The CLI prints the detected shifts (kallsyms of each image), exits 1 on real changes and 0 on a detected move."""
    base = ["--kallsyms", str(NOKASLR / "kallsyms.txt"), "--kallsyms-b", str(KASLR / "kallsyms.txt"), "-q"]
    assert analysis_main(["diff", str(NOKASLR / "core.elf"), str(KASLR / "core.elf"), *base]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("Low Kernel Mapping 0x")
    assert "shift    0xffffffff81000000-0xffffffff83e00000 kernel image: VA 0x15400000 PA 0x1ac00000" in out
    _, moved = _relocated_copy(tmp_path, 0x10000000)
    assert analysis_main(["diff", str(KASLR / "core.elf"), str(moved), "-q"]) == 0
    assert "moved by 0x10000000, nothing else changed; elsewhere: identical" in capsys.readouterr().out
    # without the detection the move is a change: exit 1, the same 46 MiB found by pairing
    assert analysis_main(["diff", str(KASLR / "core.elf"), str(moved), "-q", "--no-auto-shift"]) == 1
    assert capsys.readouterr().out.startswith("nothing changed except moves (46.0 MiB by 0x10000000)")
