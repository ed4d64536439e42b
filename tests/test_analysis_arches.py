"""The analyses (stats, aliases, check, diff, map) on arm, ppc64, s390x and mips64 captures and on
synthetic sparc64 and arc tables: every command runs through the CLI with its documented exit
status, and check's W+X page count is the kernel's W+X check's."""

from __future__ import annotations

import json
import lzma
import pathlib
import re

import builders_arc  # noqa: F401  (registers the arc entry formats)
import builders_sparc64
import numpy as np
import pytest
from builders import PageTableBuilder
from hypothesis import given, settings
from hypothesis import strategies as st

from pagewalk import cli
from pagewalk.analysis import aliases, check, mappings
from pagewalk.analysis.mappings import MAPPED, NEVER, Bit, arch_bits, to_va
from pagewalk.arch import arc, arm, mips, ppc64, s390, sparc64
from pagewalk.target import Target

FIX = pathlib.Path(__file__).parent / "fixtures"
SEVERE = ("medium", "high")  # check's default --fail-on medium


def _cases(arch: str, marker: str = "core.elf") -> list[str]:
    d = FIX / arch
    return sorted(p.name for p in d.iterdir() if (p / marker).exists()) if d.exists() else []


ARM = _cases("arm")
PPC64 = _cases("ppc64")
S390 = _cases("s390x", "core.elf.xz")
MIPS = _cases("mips64")


@pytest.fixture(scope="module")
def s390_cores(tmp_path_factory) -> dict[str, pathlib.Path]:
    """The s390x cores, unpacked (they are kept xz-compressed)."""
    out = {}
    d = tmp_path_factory.mktemp("s390x")
    for name in S390:
        p = d / f"{name}.elf"
        p.write_bytes(lzma.decompress((FIX / "s390x" / name / "core.elf.xz").read_bytes()))
        out[name] = p
    return out


def _image_args(arch: str, case: str, s390_cores: dict[str, pathlib.Path]) -> tuple[str, list[str]]:
    d = FIX / arch / case
    core = str(s390_cores[case]) if arch == "s390x" else str(d / "core.elf")
    opts = ["-q"]
    if (d / "kallsyms.txt").exists():
        opts += ["--kallsyms", str(d / "kallsyms.txt")]
    if (d / "regs.txt").exists():
        opts += [a for r in (d / "regs.txt").read_text().split() for a in ("--reg", r)]
    if arch == "mips64":
        opts += ["--arch", "mips64"]
    return core, opts


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = cli.main(argv)
    return rc, capsys.readouterr().out


def _checkwx_pages(capsys, core: str, opts: list[str]) -> int | None:
    """The W+X page count of `pagewalk checkwx` (None: the architecture has no kernel check)."""
    _, out = _run(capsys, ["checkwx", core, *opts])
    if "FAILED" in out:
        return int(re.search(r"FAILED, (\d+) W\+X pages", out).group(1))
    return 0 if "passed" in out else None


ALL = [("arm", c) for c in ARM] + [("ppc64", c) for c in PPC64] + [("s390x", c) for c in S390] + [
    ("mips64", c) for c in MIPS]


@pytest.mark.parametrize("arch,case", ALL, ids=[f"{a}-{c}" for a, c in ALL])
def test_every_command_runs_with_its_exit_status(capsys, tmp_path, s390_cores, arch, case):
    """stats, aliases, check, diff of a core with itself and map exit as documented on every capture."""
    core, opts = _image_args(arch, case, s390_cores)
    rc, out = _run(capsys, ["stats", core, *opts, "--format", "json"])
    doc = json.loads(out)
    assert rc == 0 and doc["arch"] == arch and doc["mapped_bytes"] > 0 and doc["table_bytes"] > 0
    rc, out = _run(capsys, ["aliases", core, *opts, "--format", "json"])
    assert rc == 0 and json.loads(out)["schema"] == "pagewalk.aliases"
    rc, out = _run(capsys, ["check", core, *opts, "--format", "json", "--all"])
    doc = json.loads(out)
    severe = any(f["severity"] in SEVERE for f in doc["findings"])
    assert rc == doc["exit_status"] == (1 if severe else 0)
    rc, out = _run(capsys, ["diff", core, core, *opts, "--format", "json"])
    doc = json.loads(out)
    assert rc == 0 and doc["verdict"] == "identical" and doc["changes"] == [] and doc["regions"] == []
    html = tmp_path / "map.html"
    rc, _ = _run(capsys, ["map", core, *opts, "-o", str(html)])
    assert rc == 0 and "<html" in html.read_text()[:2000].lower()


def _wx_pages(doc: dict, view: str = "kernel") -> list[tuple[int, int, int]]:
    return [(f["va_start"], f["va_end"], f["pages"]) for f in doc["findings"] if f["check"] == "wx" and view in f["views"]]


WX_CASES = [("arm", c) for c in ARM] + [("ppc64", c) for c in PPC64] + [("s390x", c) for c in S390]


@pytest.mark.parametrize("arch,case", WX_CASES, ids=[f"{a}-{c}" for a, c in WX_CASES])
def test_check_wx_pages_equal_the_kernel_check(capsys, s390_cores, arch, case):
    """check's W+X pages in the kernel view are checkwx's (s390: besides the lowcore page the kernel exempts)."""
    core, opts = _image_args(arch, case, s390_cores)
    expect = _checkwx_pages(capsys, core, opts)
    assert expect is not None
    _, out = _run(capsys, ["check", core, *opts, "--format", "json", "--all", "--view", "kernel"])
    found = _wx_pages(json.loads(out))
    _, wx_out = _run(capsys, ["checkwx", core, *opts])
    if arch == "s390x" and "no unexpected W+X" in wx_out:
        found = [f for f in found if not (f[0] == 0 and f[1] <= 0x1000)]  # note_prot_wx()'s lowcore exemption
    assert sum(p for _, _, p in found) == expect


def test_arm_rodata_off_wx_counts():
    """The rodata=off captures' W+X counts are the kernel's (2817 short-descriptor, 3073 LPAE pages)."""
    assert {"nolpae-rodata-off", "lpae-rodata-off"} <= set(ARM)  # committed in tests/fixtures/arm
    for case, pages in (("nolpae-rodata-off", 2817), ("lpae-rodata-off", 3073)):
        d = FIX / "arm" / case
        regs = [a for r in (d / "regs.txt").read_text().split() for a in ("--reg", r)]
        args = cli.build_parser().parse_args(["check", str(d / "core.elf"), "-q", "--kallsyms", str(d / "kallsyms.txt"),
                                              *regs, "--view", "kernel"])
        target, ks = cli._target(args)
        res = check(target, views=["kernel"], symbols=ks)
        assert sum(f.pages for f in res.by_check("wx", "kernel")) == pages


def _mips_oracle(case: str) -> tuple[set[int], set[int]]:
    """(VAs of the pages whose PTE has EntryLo V, those of them with _PAGE_WRITE) from the
    capture's listing of every non-zero PTE, walked in the guest with the kernel's helpers."""
    text = (FIX / "mips64" / case / "ptdump_kernel.txt").read_text()
    consts = dict(re.findall(r"(_PAGE_\w+)=([0-9a-f]+)", text))
    valid, write = int(consts["_PAGE_VALID"], 16), int(consts["_PAGE_WRITE"], 16)
    mapped, writable = set(), set()
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        va, pte = (int(x, 16) for x in line.split()[:2])
        if pte & valid:
            mapped.add(va)
            if pte & write:
                writable.add(va)
    return mapped, writable


@pytest.mark.parametrize("case", MIPS)
def test_mips64_mappings_and_wx_match_the_guest(capsys, s390_cores, case):
    """The mapped pages (XKSEG vmalloc and CKSSEG modules) are the guest's valid PTEs; without RI/XI
    every page executes, so check's W+X pages are exactly the writable ones."""
    core, opts = _image_args("mips64", case, s390_cores)
    args = cli.build_parser().parse_args(["check", core, *opts])
    target, _ = cli._target(args)
    m = mappings(target).mapped()
    page = m.page_size
    pages = {int(v) + k * page for v, n in zip(m.va_start.tolist(), m.size.tolist()) for k in range(n // page)}
    mapped, writable = _mips_oracle(case)
    assert pages == mapped and any(va >= mips.CKSSEG for va in pages) and any(va < mips.CKSEG0 for va in pages)
    res = check(target, views=["kernel"])
    wx = {f.va_start + k * page for f in res.by_check("wx", "kernel") for k in range(f.pages)}
    assert wx == writable and len(wx) > 0


def test_mips64_windows_give_the_vas():
    """Offsets in the PGD's span become XKSEG VAs below the top 4 GiB and CKSSEG/CKSEG3 VAs in it."""
    mode = mips.make_mode("4k")
    span = 1 << mode.va_bits
    off = np.array([0, 0x1000, span - (1 << 32) - 0x1000, span - (1 << 32), span - 0x1000], np.uint64)
    assert to_va(mode, off).tolist() == [mode.canonical_va(int(o)) for o in off.tolist()]
    assert to_va(mode, off).tolist()[3] == 0xFFFFFFFF00000000


WINDOW_MODES = [arm.SHORT, arm.short_mode(2, upper=True), arm.lpae_mode(2, upper=True), ppc64.radix_mode(),
                *(s390.make_mode(dt) for dt in range(4)), *(mips.make_mode(c) for c in mips.CONFIGS),
                sparc64.make_mode("sun4v"), arc.make_mode("8k")]


@pytest.mark.parametrize("mode", WINDOW_MODES, ids=[m.name for m in WINDOW_MODES])
@given(fracs=st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=20))
@settings(max_examples=30, deadline=None)
def test_to_va_is_the_modes_own_numbering(mode, fracs):
    """For any offsets in the root table's span, the analyses' VAs are the mode's canonical_va()."""
    span = 1 << mode.va_bits
    off = [min(int(f * span), span - 1) for f in fracs]
    assert to_va(mode, np.array(off, np.uint64)).tolist() == [mode.canonical_va(o) % (1 << 64) for o in off]


def test_s390_valid_is_per_level():
    """The s390 PTE invalid bit (0x400) is the segment's large-frame bit: valid is tested per level."""
    b = arch_bits(s390.make_mode(1))
    n = 3
    seg_large = np.array([0x80000400], np.uint64)  # FC=1, I clear: a valid 1 MiB frame
    pte_invalid = np.array([0x80000400], np.uint64)
    assert b.valid.for_level(1, n)(seg_large).tolist() == [True]
    assert b.valid.for_level(2, n)(pte_invalid).tolist() == [False]
    assert b.valid.for_level(1, n)(np.array([0x20, 0], np.uint64)).tolist() == [False, False]  # I bit; empty


def test_bit_extensions_are_backwards_compatible():
    """A plain Bit tests the word as before; NEVER is false; `at` overrides one level; `entry` tests the entry."""
    w = np.array([0, 1, 3], np.uint64)
    assert Bit(1, 1)(w).tolist() == [False, True, True]
    assert Bit(0, 0)(w).tolist() == [True] * 3 and NEVER(w).tolist() == [False] * 3
    b = Bit(1, 1, at=((-1, Bit(2, 2, entry=True)),))
    perm = np.array([1, 1], np.uint64)
    entry = np.array([0, 2], np.uint64)
    assert b.test(perm, entry, np.array([0, 1]), 2).tolist() == [True, True]
    assert b.test(perm, np.array([0, 0], np.uint64), np.array([0, 1]), 2).tolist() == [True, False]


def test_every_new_arch_has_arch_bits():
    """Every mode of the six architectures brings its ArchBits (no "do not know the bits" error)."""
    modes = [arm.SHORT, arm.SHORT_HW, arm.LPAE, arm.LPAE_HW, ppc64.radix_mode(), ppc64.hash_mode(),
             *(s390.make_mode(dt) for dt in range(4)), *(mips.make_mode(c) for c in mips.CONFIGS),
             *(sparc64.make_mode(c) for c in sparc64.CONFIGS), *(arc.make_mode(c) for c in arc.CONFIGS)]
    for mode in modes:
        assert arch_bits(mode).valid is not None


# -- synthetic sparc64 and arc tables ------------------------------------------------------------------

def _target(b: PageTableBuilder, tmp_path) -> Target:
    return Target(b.memory(tmp_path), b.mode, {"kernel": b.root})


SPARC_V4 = dict(sparc64.SUN4V.flags)


@pytest.mark.parametrize("config", list(sparc64.CONFIGS))
def test_sparc64_wx_and_alias_found(tmp_path, config):
    """A W+X vmalloc page and a page mapped writable at one VA and executable at another are found."""
    mode = sparc64.make_mode(config)
    tte = sparc64.CONFIGS[config]
    kernel = builders_sparc64.SUN4V_KERNEL if config == "sun4v" else builders_sparc64.SUN4U_KERNEL
    rw = kernel & ~tte.exec_
    rx = kernel & ~tte.write
    b = PageTableBuilder(mode, base=0x400000)
    b.map(0x100000000, 0x8000000, 0x2000, kernel)  # W+X
    b.map(0x100002000, 0x8002000, 0x2000, rw)
    b.map(0x10000000, 0x9000000, 0x2000, rx)  # module text...
    b.map(0x100010000, 0x9000000, 0x2000, rw)  # ...writable through vmalloc: a W/X alias
    t = _target(b, tmp_path)
    res = check(t)
    wx = res.by_check("wx")
    assert [(f.va_start, f.va_end, f.pages, f.pa_start) for f in wx] == [(0x100000000, 0x100002000, 1, 0x8000000)]
    wa = res.by_check("wx-alias")
    assert [(f.va_start, f.pa_start, f.severity) for f in wa] == [(0x10000000, 0x9000000, "high")]
    assert wa[0].detail["writable_at"][0]["va_start"] == 0x100010000
    a = aliases(t)
    assert a.wx_count == 1
    m = mappings(t).mapped()
    assert sorted(m.va_start.tolist()) == [0x10000000, 0x100000000, 0x100002000, 0x100010000] and (m.status == MAPPED).all()


ARC_RW = arc._PAGE_PRESENT | arc._PAGE_CACHEABLE | arc._PAGE_GLOBAL | arc._PAGE_READ | arc._PAGE_WRITE
ARC_RX = arc._PAGE_PRESENT | arc._PAGE_CACHEABLE | arc._PAGE_GLOBAL | arc._PAGE_READ | arc._PAGE_EXECUTE


@pytest.mark.parametrize("config", list(arc.CONFIGS))
def test_arc_wx_alias_and_user_page_found(tmp_path, config):
    """A W+X vmalloc page, a W/X alias and a non-global (user-accessible) page in the kernel's range are found."""
    mode = arc.make_mode(config)
    page = mode.levels[-1].entry_span
    b = PageTableBuilder(mode, base=0x80100000)
    b.map(0x70000000, 0x81000000, page, arc.PAGE_KERNEL)  # W+X
    b.map(0x70100000, 0x82000000, page, ARC_RX)
    b.map(0x70200000, 0x82000000, page, ARC_RW)  # the same page writable: a W/X alias
    b.map(0x70300000, 0x83000000, page, ARC_RW & ~arc._PAGE_GLOBAL)  # user mode can write it
    b.map(0x20000000, 0x84000000, page, ARC_RW & ~arc._PAGE_GLOBAL)  # a user page: no finding
    t = _target(b, tmp_path)
    res = check(t)
    assert [(f.va_start, f.pages) for f in res.by_check("wx")] == [(0x70000000, 1)]
    assert [(f.va_start, f.pa_start) for f in res.by_check("wx-alias")] == [(0x70100000, 0x82000000)]
    assert [f.va_start for f in res.by_check("user-kernel")] == [0x70300000]
    assert aliases(t).wx_count == 1


def test_sparc64_cli_on_a_raw_image(capsys, tmp_path):
    """`pagewalk check` of a raw sparc64 image with --reg pgd=PA finds the W+X page and exits 1."""
    mode = sparc64.make_mode("sun4v")
    b = PageTableBuilder(mode, base=0x400000)
    b.map(0x100000000, 0x8000000, 0x2000, builders_sparc64.SUN4V_KERNEL)
    img = b.write(tmp_path / "sparc64.raw")
    argv = [str(img), "-q", "--arch", "sparc64", "--image-format", "raw", "--base", hex(b.base), "--reg",
            f"pgd={b.root:#x}"]
    rc, out = _run(capsys, ["check", *argv, "--format", "json"])
    doc = json.loads(out)
    assert rc == 1 and _wx_pages(doc) == [(0x100000000, 0x100002000, 1)]
    for cmd in (["stats"], ["aliases"], ["diff", str(img)]):
        rc, _ = _run(capsys, [cmd[0], *argv[:1], *cmd[1:], *argv[1:]])
        assert rc == 0
    rc, _ = _run(capsys, ["map", *argv, "-o", str(tmp_path / "m.html")])
    assert rc == 0 and (tmp_path / "m.html").stat().st_size > 0


@pytest.mark.parametrize("arch", ["sparc64", "arc"])
def test_an_entry_hidden_from_the_kernel_is_found(tmp_path, arch):
    """An upper entry with low bits set is p?d_bad() to the kernel but followed by the TLB-miss
    handler: `unwalked-entry`; zero entries are not findings."""
    if arch == "sparc64":
        mode, flags, va, base = sparc64.make_mode("sun4v"), builders_sparc64.SUN4V_KERNEL & ~SPARC_V4["W"], 0x100000000, 0x400000
    else:
        mode, flags, va, base = arc.make_mode("8k"), ARC_RX, 0x70000000, 0x80100000
    b = PageTableBuilder(mode, base=base)
    b.map(va, 0x8000000, mode.levels[-1].entry_span, flags)
    level = len(mode.levels) - 2  # the entry pointing at the PTE table
    table, idx = b.slot(va, level)
    b.set_entry(table, idx, b.entry(table, idx) | 1)
    res = check(_target(b, tmp_path))
    hidden = res.by_check("unwalked-entry")
    assert [(f.va_start, f.severity) for f in hidden] == [(va - va % mode.levels[level].entry_span, "medium")]
    assert not res.by_check("reserved-bits") and not res.by_check("wx")


def test_dump_does_not_import_the_analyses():
    """`pagewalk dump` loads nothing of the analysis package (its parser is built for `dump` alone)."""
    import subprocess
    import sys

    d = FIX / "x86_64" / "6.12-kaslr-4level-pti"
    code = ("import sys, io, contextlib\nfrom pagewalk.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    main(['dump', {str(d / 'core.elf')!r}, '--kallsyms', {str(d / 'kallsyms.txt')!r}, '-q'])\n"
            "print(sorted(m for m in sys.modules if m.startswith('pagewalk.analysis')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_package_names_stay_the_functions():
    """`pagewalk.analysis.stats` (and check, diff, aliases, mappings) is the function even after its submodule loads."""
    import importlib

    import pagewalk.analysis as pa

    for name in ("stats", "check", "diff", "aliases", "mappings"):
        mod = importlib.import_module(f"pagewalk.analysis.{name}")
        assert getattr(pa, name) is getattr(mod, name) and callable(getattr(pa, name))
