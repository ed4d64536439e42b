"""Golden tests: our dump and W+X verdict against what the Debian kernels printed themselves."""

from __future__ import annotations

import io
import json
import re

from pagewalk import open_image
from pagewalk.api import checkwx, dump
from pagewalk.cli import main
from pagewalk.target import read_kallsyms, resolve


def _target(case):
    mem = open_image(str(case / "core.elf"))
    return resolve(mem, kallsyms=read_kallsyms(str(case / "kallsyms.txt")))


def test_dump_equals_kernel_text(x86_64_case):
    """`dump` of the minimised core is the kernel's page_tables/kernel text, line for line."""
    out = io.StringIO()
    dump(_target(x86_64_case), "kernel", out)
    expected = (x86_64_case / "ptdump_kernel.txt").read_text()
    assert out.getvalue().splitlines() == expected.splitlines()


def test_checkwx_verdict_equals_kernel(x86_64_case):
    """`checkwx` reaches the kernel's verdict for the kernel page tables of every capture."""
    lines = (x86_64_case / "wx.txt").read_text().splitlines()
    verdicts = [ln for ln in lines if "Checked W+X mappings" in ln]
    assert verdicts, "the capture has a W+X line"
    res = checkwx(_target(x86_64_case))
    ours = [ln for ln in res.lines if "Checked W+X mappings" in ln]
    kernel_failed = "FAILED" in verdicts[0]
    assert ("FAILED" in ours[0]) == kernel_failed
    if kernel_failed:
        # The kernel's check ran when the oracle module loaded, the dump a little later; the
        # module's own pages may differ by a page between the two moments.
        n_kernel = int(re.search(r"FAILED, (\d+) W\+X", verdicts[0]).group(1))
        assert abs(res.wx_pages - n_kernel) <= 4
        assert res.wx_pages > 0 and res.ranges


def test_rodata_off_reports_kernel_text_as_wx():
    """With rodata=off the insecure mappings start at the kernel text, as the kernel's WARN says."""
    from conftest import FIXTURES

    res = checkwx(_target(FIXTURES / "x86_64" / "6.1-nokaslr-5level-rodata-off"))
    assert not res.passed
    assert res.ranges[0][0] == 0xFFFFFFFF81000000  # startup_64, the start of _text


def test_pti_user_copy_is_walked():
    """With PTI, current_user walks the user copy of the PGD, which maps far less of the kernel."""
    from conftest import FIXTURES

    t = _target(FIXTURES / "x86_64" / "6.12-kaslr-4level-pti")
    assert t.pti
    kern, user = io.StringIO(), io.StringIO()
    dump(t, "current_kernel", kern)
    dump(t, "current_user", user)
    assert "Low Kernel Mapping" in kern.getvalue()
    assert len(user.getvalue().splitlines()) < len(kern.getvalue().splitlines())
    assert "USR" in user.getvalue() or "---[ User Space ]---" in user.getvalue()


def test_no_pti_user_view_is_the_kernel_view():
    """Without PTI, current_user is the same table as current_kernel (as in the kernel's debugfs)."""
    from conftest import FIXTURES

    t = _target(FIXTURES / "x86_64" / "6.12-nokaslr-5level")
    assert not t.pti
    assert t.root("current_user") == t.root("current_kernel")


def test_json_has_the_same_ranges_as_text(x86_64_case, capsys):
    """`--format json` gives one record per range line of the text, with the same bounds."""
    args = [str(x86_64_case / "core.elf"), "--kallsyms", str(x86_64_case / "kallsyms.txt"), "-q"]
    assert main(["dump", *args, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "pagewalk.dump" and doc["version"] == 1
    text = [ln for ln in (x86_64_case / "ptdump_kernel.txt").read_text().splitlines() if ln.startswith("0x")]
    assert len(doc["ranges"]) >= len(text)
    first = text[0].split()[0].split("-")
    assert doc["ranges"][0]["start"] == int(first[0], 16)
    assert doc["ranges"][0]["end"] == int(first[1], 16)


def test_kaslr_markers_need_kallsyms():
    """Without --kallsyms a KASLR capture uses default markers and says so; with it, it matches."""
    from conftest import FIXTURES

    case = FIXTURES / "x86_64" / "6.1-kaslr-4level"
    t = resolve(open_image(str(case / "core.elf")))
    assert any("KASLR" in n for n in t.notes)
    out = io.StringIO()
    dump(t, "kernel", out)
    assert out.getvalue().splitlines() != (case / "ptdump_kernel.txt").read_text().splitlines()


def test_define_gives_the_kernel_text_without_kallsyms():
    """--define with the KASLR bases (as a user would copy them from /proc) gives the kernel's text."""
    from conftest import FIXTURES

    case = FIXTURES / "x86_64" / "6.1-kaslr-4level"
    lay = _target(case).layout
    defines = {"page_offset_base": lay.page_offset, "vmalloc_base": lay.vmalloc_start, "vmemmap_base": lay.vmemmap_start}
    t = resolve(open_image(str(case / "core.elf")), defines=defines)
    assert not any("KASLR" in n for n in t.notes)
    out = io.StringIO()
    dump(t, "kernel", out)
    assert out.getvalue().splitlines() == (case / "ptdump_kernel.txt").read_text().splitlines()


def test_json_equals_the_reference_state_machine(x86_64_case):
    """The vectorised JSON ranges equal the records of the per-event note_page() port."""
    from pagewalk.ptdump.core import drive
    from pagewalk.ptdump.x86 import X86State
    from pagewalk.runs import root_runs

    t = _target(x86_64_case)
    records: list[dict] = []
    drive(X86State(t.layout, None, records=records), t.mode, root_runs(t.mem, t.mode, t.root("kernel")), t.layout.ranges())
    out = io.StringIO()
    dump(t, "kernel", out, "json")
    assert json.loads(out.getvalue())["ranges"] == records
