"""Golden tests: our arm64 dump and W+X verdict against what the Debian kernels printed themselves."""

from __future__ import annotations

import io
import json
import re

import pytest
from conftest import FIXTURES

from pagewalk import open_image
from pagewalk.api import checkwx, dump
from pagewalk.cli import main
from pagewalk.errors import RootError
from pagewalk.kernel import arm64 as karm64
from pagewalk.target import resolve

ARM64 = FIXTURES / "arm64"
CASES = sorted(p.name for p in ARM64.iterdir() if (p / "core.elf").exists())
TOP = 1 << 64


def _target(case: str, **options):
    return resolve(open_image(str(ARM64 / case / "core.elf")), **options)


def _dump(t, view: str = "kernel") -> list[str]:
    out = io.StringIO()
    dump(t, view, out)
    return out.getvalue().splitlines()


def _kernel_text(case: str) -> list[str]:
    return (ARM64 / case / "ptdump_kernel.txt").read_text().splitlines()


def test_all_required_captures_are_committed():
    """The fixtures cover 6.1 nokaslr, 6.1 KASLR, rodata=off, 6.12 LPA2 and 6.12 on a 48-bit CPU."""
    assert CASES == [
        "6.1-kaslr-48bit",
        "6.1-nokaslr-48bit",
        "6.1-nokaslr-48bit-rodata-off",
        "6.12-nokaslr-48bit-cortex-a57",
        "6.12-nokaslr-52bit-lpa2",
    ]


@pytest.mark.parametrize("case", CASES)
def test_dump_equals_kernel_text(case):
    """`dump` of the minimised core (registers from its note) is the kernel's kernel_page_tables text, line for line."""
    assert _dump(_target(case)) == _kernel_text(case)


@pytest.mark.parametrize("case", CASES)
def test_dump_from_vmcoreinfo_alone_equals_kernel_text(case):
    """With no registers at all, VMCOREINFO (swapper_pg_dir - kimage_voffset, T1SZ, PAGESIZE) gives the same text."""
    mem = open_image(str(ARM64 / case / "core.elf"))
    t = karm64.resolve(mem, {}, {}, {}, {"pti": "auto"})
    t.kernel = karm64
    assert any("TCR_EL1 from VMCOREINFO" in n for n in t.notes)
    assert _dump(t) == _kernel_text(case)


@pytest.mark.parametrize("case", CASES)
def test_checkwx_verdict_equals_kernel(case):
    """`checkwx` reaches the kernel's verdict; with W+X pages, the kernel's count give or take the oracle module's page."""
    verdicts = [ln for ln in (ARM64 / case / "wx.txt").read_text().splitlines() if "Checked W+X mappings" in ln]
    assert len(verdicts) == 1
    res = checkwx(_target(case))
    ours = [ln for ln in res.lines if "Checked W+X mappings" in ln]
    assert ("FAILED" in ours[0]) == ("FAILED" in verdicts[0])
    assert res.passed == ("passed" in verdicts[0])
    m = re.search(r"FAILED, (\d+) W\+X pages found, (\d+) non-UXN pages found", verdicts[0])
    if m:
        # the kernel checked while the oracle module was loading, the dump came later: its init
        # pages may differ by a page between the two moments
        assert abs(res.wx_pages - int(m.group(1))) <= 4
        assert res.uxn_pages == int(m.group(2))


def test_rodata_off_finds_the_module_text_writable():
    """With rodata=off the first W+X range is the qemu_fw_cfg module's text (the kernel's WARN names fw_cfg_sysfs_attr_show)."""
    res = checkwx(_target("6.1-nokaslr-48bit-rodata-off"))
    assert not res.passed
    assert res.wx_pages == 3318 and res.uxn_pages == 0
    assert res.ranges[0][0] == 0xFFFF800000D00000  # Modules start + 13M: the first module's text
    assert res.lines[-1] == "Checked W+X mappings: FAILED, 3318 W+X pages found, 0 non-UXN pages found"


def test_modes_of_the_captures():
    """TCR_EL1 gives 4K/48-bit 4-level tables on 6.1 and cortex-a57, 4K/52-bit LPA2 5-level on `-cpu max`."""
    assert _target("6.1-kaslr-48bit").mode.name == "arm64-4k-48bit-4level-ttbr1"
    assert _target("6.12-nokaslr-48bit-cortex-a57").mode.name == "arm64-4k-48bit-4level-ttbr1"
    lpa2 = _target("6.12-nokaslr-52bit-lpa2")
    assert lpa2.mode.name == "arm64-4k-52bit-lpa2-5level-ttbr1"
    assert lpa2.mode.pa_bits == 52 and lpa2.mode.levels[0].entries == 16


def test_register_root_and_vmcoreinfo_root_agree():
    """TTBR1_EL1's table (ASID and CnP dropped) is swapper_pg_dir as VMCOREINFO locates it."""
    for case in CASES:
        t = _target(case)
        assert t.root("current_kernel") == t.root("kernel")
    assert _target("6.12-nokaslr-52bit-lpa2").root("kernel") == 0x41EFE000


def test_user_half_from_ttbr0():
    """--view current_user walks TTBR0_EL1's table (the process that was running) with the TTBR0 mode."""
    t = _target("6.1-nokaslr-48bit")
    lines = _dump(t, "current_user")
    assert lines[0] == "---[ User space start ]---"
    assert lines[-1] == "---[ User space end ]---"
    mapped = [ln for ln in lines if ln.startswith("0x") and "USR" in ln]
    assert mapped, "a user process maps pages with AP[1] (USR)"
    assert all(int(ln[2:18], 16) < 1 << 48 for ln in lines if ln.startswith("0x"))


def test_kernel_version_option_selects_the_format():
    """--kernel-version 6.1 on a 6.12 capture gives the 6.1 marker order, so the text is no longer the kernel's."""
    case = "6.12-nokaslr-48bit-cortex-a57"
    ours = _dump(_target(case, kernel_version="6.1"))
    markers = [ln for ln in ours if ln.startswith("---[")]
    assert markers.index("---[ Fixmap start ]---") < markers.index("---[ vmemmap start ]---")
    assert ours != _kernel_text(case)


def test_json_has_the_same_ranges_as_text(capsys):
    """`--format json` gives one record per range line of the kernel's text, with the same bounds and level."""
    case = "6.12-nokaslr-52bit-lpa2"
    assert main(["dump", str(ARM64 / case / "core.elf"), "-q", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "pagewalk.dump" and doc["mode"] == "arm64-4k-52bit-lpa2-5level-ttbr1"
    text = [ln for ln in _kernel_text(case) if ln.startswith("0x")]
    assert len(doc["ranges"]) == len(text)
    for rec, ln in zip(doc["ranges"], text):
        assert rec["start"] == int(ln[2:18], 16)
        assert rec["end"] % TOP == int(ln[21:37], 16)
        assert rec["level"] == ln[51:54]


def test_no_registers_and_no_vmcoreinfo_says_what_is_missing(tmp_path):
    """A core without VMCOREINFO and without --reg names the missing registers and how to read them over gdb."""
    raw = tmp_path / "mem.raw"
    raw.write_bytes(bytes(4096 * 4))
    with pytest.raises(RootError) as e:
        resolve(open_image(str(raw), "raw", 0x40000000), arch="arm64")
    msg = str(e.value)
    assert "tcr_el1" in msg and "ttbr1_el1" in msg
    assert "p/x $TTBR1_EL1" in msg and "--reg ttbr1_el1=" in msg


def test_cli_dump_with_registers_only_matches(tmp_path, capsys):
    """`pagewalk dump --reg ttbr1_el1=… --reg tcr_el1=…` on a core without VMCOREINFO gives the kernel's text
    (with the markers of the 6.1 layout, given as --kernel-version)."""
    from pagewalk.memory.write import write_elf_core

    case = "6.1-nokaslr-48bit"
    mem = open_image(str(ARM64 / case / "core.elf"))
    chunks = [(a, mem.read(a, b - a)) for a, b in mem.runs()]
    bare = tmp_path / "bare.elf"
    write_elf_core(str(bare), "arm64", True, [], chunks)
    regs = mem.cpu.regs
    t = resolve(
        open_image(str(bare)), arch="arm64", kernel_version="6.1",
        regs={"ttbr1_el1": regs["ttbr1_el1"], "tcr_el1": regs["tcr_el1"]},
    )
    assert t.mode.name == "arm64-4k-48bit-4level-ttbr1"
    assert _dump(t) == _kernel_text(case)
