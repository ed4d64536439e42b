"""The analyses on the committed real kernel captures (x86-64, arm64, riscv64)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import FIXTURES

from pagewalk import open_image
from pagewalk.analysis import aliases, check, diff, mappings, pagemap, stats
from pagewalk.analysis.commands import main as analysis_main
from pagewalk.analysis.diff import Shift
from pagewalk.analysis.mappings import MAPPED, PM_PFRAME_MASK
from pagewalk.api import checkwx, table_pages
from pagewalk.target import read_kallsyms, resolve
from pagewalk.translate import translate

CASES = sorted(
    f"{arch}/{p.name}" for arch in ("x86_64", "arm64", "riscv64") for p in (FIXTURES / arch).iterdir()
    if (p / "core.elf").exists()
)
_cache: dict[str, tuple] = {}


def _load(case: str):
    if case not in _cache:
        d = FIXTURES / case
        ks = read_kallsyms(str(d / "kallsyms.txt"))
        _cache[case] = (resolve(open_image(str(d / "core.elf")), kallsyms=ks), ks)
    return _cache[case]


def _kernel_wx_count(case: str) -> int:
    line = next(ln for ln in (FIXTURES / case / "wx.txt").read_text().splitlines() if "Checked W+X" in ln)
    m = re.search(r"FAILED, (\d+) W\+X", line)
    return int(m.group(1)) if m else 0


@pytest.mark.parametrize("case", [c for c in CASES if not c.startswith("riscv")])
def test_wx_findings_count_what_the_kernel_counted(case):
    """`check`'s W+X pages in the kernel view equal checkwx's count (and the kernel's own, within its module's pages)."""
    t, ks = _load(case)
    ours = sum(f.pages for f in check(t, symbols=ks).by_check("wx", "kernel"))
    assert ours == checkwx(t).wx_pages
    assert abs(ours - _kernel_wx_count(case)) <= 4


def test_rodata_off_x86_findings_start_at_the_kernel_text():
    """x86 rodata=off: W+X from _text on (12601 pages), the text writable, and its direct-map alias a W/X alias."""
    t, ks = _load("x86_64/6.1-nokaslr-5level-rodata-off")
    r = check(t, symbols=ks)
    wx = r.by_check("wx", "kernel")
    assert (wx[0].va_start, wx[0].va_end, wx[0].pa_start, wx[0].level, wx[0].perm) == (
        0xFFFFFFFF81000000, 0xFFFFFFFF83000000, 0x1000000, "pmd", "kernel rwx G")
    assert sum(f.pages for f in wx) == 12601
    text = r.by_check("writable-kernel-text")
    assert [(f.va_start, f.va_end) for f in text] == [(ks["_stext"], (ks["_etext"] + 4095) & ~4095)]
    alias = r.by_check("wx-alias")
    assert alias[0].va_start == 0xFFFFFFFF81000000 and alias[0].detail["writable_at"][0]["va_start"] == 0xFF11000001000000
    assert r.exit_status("high") == 1


def test_rodata_off_arm64_findings_match_checkwx():
    """arm64 rodata=off: 3318 W+X pages in the kernel image and modules, no non-UXN page, the text writable."""
    t, ks = _load("arm64/6.1-nokaslr-48bit-rodata-off")
    r = check(t, symbols=ks)
    wx = checkwx(t)
    assert sum(f.pages for f in r.by_check("wx", "kernel")) == wx.wx_pages == 3318
    assert r.by_check("user-kernel") == [] and wx.uxn_pages == 0
    assert r.by_check("writable-kernel-text")[0].va_start == ks["_stext"]


@pytest.mark.parametrize("case", [c for c in CASES if "rodata-off" not in c])
def test_healthy_kernels_have_no_high_findings_but_the_known_ones(case):
    """No W+X, no writable text, no user-accessible kernel page in any healthy capture; exceptions are explained."""
    t, ks = _load(case)
    r = check(t, symbols=ks)
    assert not r.by_check("wx") and not r.by_check("writable-kernel-text") and not r.by_check("user-kernel")
    assert not r.by_check("reserved-bits") and not r.by_check("missing-table")
    for f in r.findings:
        if "exception" in f.detail:
            assert f.severity == "low"
    if case.startswith("x86_64"):
        # the real-mode trampoline, executable in the direct map below 1 MiB, is the only finding
        assert [(f.check, f.severity, f.pa_start) for f in r.findings] == [("exec-direct-map", "low", 0x99000)]
        assert r.exit_status() == 0


def test_riscv_fixmap_fdt_mapping_is_a_wx_alias():
    """riscv Sv39: the early FDT fixmap (4 MiB RW) still covers a page the kernel now executes: a W/X alias."""
    t, ks = _load("riscv64/sv39")
    res = aliases(t)
    (g,) = res.wx
    assert (g.pa_start, g.pa_end, g.kernel_wx) == (0x9FE9B000, 0x9FE9C000, True)
    assert [(m.va_start, m.perm, m.level) for m in g.members] == [
        (0xFFFFFFC4FEC9B000, "kernel rw- G", "pmd"),
        (0xFFFFFFD61FE9B000, "kernel r-x G", "pte"),
        (0xFFFFFFFF01E6D000, "kernel r-x G", "pte"),
    ]
    f = check(t, symbols=ks).by_check("wx-alias")
    assert [(x.va_start, x.severity) for x in f] == [(0xFFFFFFD61FE9B000, "high")]


def test_kernel_text_alias_and_espfix_on_x86():
    """x86 6.12: the text's PA is also in the direct map (not W/X), and the ESPfix page is mapped 65537 times."""
    t, _ = _load("x86_64/6.12-nokaslr-5level")
    res = aliases(t, max_members=3)
    by_pa = {g.pa_start: g for g in res.groups}
    text = by_pa[0x1000000]
    assert [m.va_start for m in text.members] == [0xFF11000001000000, 0xFFFFFFFF81000000]
    assert not res.wx
    espfix = max(res.groups, key=lambda g: g.mappings)
    assert espfix.mappings == 65537 and len(espfix.members) == 3


@pytest.mark.parametrize("case", CASES)
def test_mappings_agree_with_translate(case):
    """Sampled VAs inside the intervals translate (the MMU walk) to the interval's PA; VAs in gaps fault."""
    t, _ = _load(case)
    for view in ("kernel", "current_user"):
        if view not in t.roots:
            continue
        m = mappings(t, view)
        assert (m.status == MAPPED).all()
        mm = m.mapped()
        assert np.all(mm.va_start[1:] >= mm.va_end[:-1])  # sorted, disjoint
        rng = np.random.default_rng(1)
        k = rng.integers(0, len(mm), 300)
        off = (rng.random(300) * mm.size[k].astype(np.float64)).astype(np.uint64) & ~np.uint64(7)
        vas = mm.va_start[k] + off
        mode, root = t.mode_for(view), t.root(view)
        # scalar translate(): translate_many() does not know arm64's TTBR1 VA numbering yet
        assert [translate(t.mem, mode, root, va).pa for va in vas.tolist()] == mm.pa_of(k, vas).tolist()
        gap = mm.va_end[:-1][mm.va_end[:-1] < mm.va_start[1:]][:100]
        assert all(not translate(t.mem, mode, root, va).ok for va in gap.tolist())


def test_stats_table_bytes_equal_the_table_pages():
    """stats' bytes of page tables are the table pages `extract` keeps, and the leaves add up to the mapped bytes."""
    for case in ("x86_64/6.12-kaslr-4level-pti", "arm64/6.12-nokaslr-52bit-lpa2", "riscv64/sv57"):
        t, _ = _load(case)
        s = stats(t)
        assert s.table_bytes == sum(table_pages(t, ["kernel"]).values())
        assert sum(lf.mapped_bytes for lf in s.leaves) == s.mapped_bytes
    t, _ = _load("x86_64/6.12-kaslr-4level-pti")
    s = stats(t)
    assert [(lv.name, lv.tables) for lv in s.levels] == [("pgd", 1), ("pud", 70), ("pmd", 9), ("pte", 26)]
    assert s.shared[0]["references"] == 512  # ESPfix: one PTE table behind 512 PMD entries


def test_pagemap_of_the_kernel_text():
    """pagemap gives the text's frames (nokaslr: PA 0x1000000 at 0xffffffff81000000)."""
    t, _ = _load("x86_64/6.12-nokaslr-5level")
    pm = pagemap(t, 0xFFFFFFFF81000000, 0xFFFFFFFF81004000)
    assert [int(x) & PM_PFRAME_MASK for x in pm] == [0x1000, 0x1001, 0x1002, 0x1003]
    assert all(int(x) >> 63 for x in pm)


def test_diff_of_two_boots_given_the_kaslr_shift():
    """6.12 nokaslr vs KASLR boot: given KERNELOFFSET (and the physical offset), the text and rodata did not change;
    the direct map moved by the difference of page_offset_base."""
    a, _ = _load("x86_64/6.12-nokaslr-5level")
    b, _ = _load("x86_64/6.12-kaslr-5level")
    kaslr = int(b.mem.cpu.vmcoreinfo["KERNELOFFSET"], 16)
    assert kaslr == 0x15400000
    image = Shift(kaslr, 0x1BC00000 - 0x1000000, 0xFFFFFFFF80000000, 0xFFFFFFFFC0000000)
    res = diff(a, b, shifts=[image])
    text_end = 0xFFFFFFFF82A00000  # text and rodata, both PMD mapped
    assert not [c for c in res.changes if c.va_start < text_end and c.va_end > 0xFFFFFFFF81000000]
    assert res.moves[kaslr] >= text_end - 0xFFFFFFFF81000000
    delta_dmap = (b.layout.page_offset - a.layout.page_offset) % (1 << 64)
    assert delta_dmap == 0xB7F2800000000 and res.moves[delta_dmap] > 8 << 20
    assert res.verdict != "identical" and "moved by 0x15400000" in res.verdict


def test_diff_of_two_views_of_one_image():
    """x86 PTI: the kernel view equals itself; CR3's table adds only user-half ranges to init_top_pgt."""
    t, _ = _load("x86_64/6.12-kaslr-4level-pti")
    assert diff(t, view_a="kernel", view_b="kernel").verdict == "identical"
    res = diff(t, view_a="kernel", view_b="current_kernel")
    assert res.changes and all(c.kind == "added" and c.va_end <= 1 << 47 for c in res.changes)


@pytest.mark.parametrize("cmd,extra,status", [
    ("stats", [], 0), ("aliases", ["--wx"], 0), ("check", [], 1), ("check", ["--fail-on", "high"], 1),
    ("diff", ["--view-b", "current_kernel"], 1), ("diff", [], 0),
])
def test_commands_write_versioned_json(cmd, extra, status, capsys):
    """Every command's --format json is {"schema": "pagewalk.<cmd>", "version": 1, ...}; exit statuses for CI."""
    case = FIXTURES / "x86_64" / "6.1-nokaslr-5level-rodata-off"
    args = [cmd, str(case / "core.elf"), "--kallsyms", str(case / "kallsyms.txt"), "-q", "--format", "json", *extra]
    assert analysis_main(args) == status
    doc = json.loads(capsys.readouterr().out)
    assert (doc["schema"], doc["version"]) == (f"pagewalk.{cmd}", 1)
    if cmd == "check":
        assert doc["counts"]["wx"]["pages"] == 12601 and doc["exit_status"] == status
        f = doc["findings"][0]
        assert {"check", "severity", "va_start", "va_end", "pa_start", "pa_end", "level", "entry", "trace"} <= set(f)
    if cmd == "aliases":
        assert doc["wx_count"] == len(doc["aliases"]) == 9 and doc["count"] == 143
    if cmd == "diff" and not extra:
        assert doc["verdict"] == "identical"


def test_commands_text_output(capsys):
    """The text forms say the verdicts: check's summary line, diff's verdict, stats' table bytes."""
    case = FIXTURES / "arm64" / "6.1-nokaslr-48bit-rodata-off"
    base = [str(case / "core.elf"), "--kallsyms", str(case / "kallsyms.txt"), "-q"]
    assert analysis_main(["check", *base]) == 1
    out = capsys.readouterr().out
    assert "HIGH   wx: writable and executable mapping" in out and "wx 7 (3318 pages)" in out
    assert analysis_main(["diff", str(case / "core.elf"), *base]) == 0  # A B, then the options
    assert capsys.readouterr().out == "identical\n"
    assert analysis_main(["stats", *base]) == 0
    assert "page tables: " in capsys.readouterr().out
