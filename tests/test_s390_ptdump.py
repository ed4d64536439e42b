"""s390x ptdump: golden tests against the Debian 6.1 kernel's own kernel_page_tables text, hand-
derived texts of built tables, the kernel's W+X check, and drive() against a per-entry reference."""

from __future__ import annotations

import difflib
import io
import itertools
import json
import lzma
import pathlib
import tempfile

import builders_s390  # noqa: F401
import numpy as np
import pytest
from builders_s390 import S390_IEP, S390_P, S390_PAGE_I, S390_SW_RW, S390Builder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagewalk import open_image
from pagewalk.api import checkwx, dump
from pagewalk.arch.s390 import REGION2, REGION3, make_mode
from pagewalk.cli import main
from pagewalk.errors import RootError, UsageError
from pagewalk.mode import Kind
from pagewalk.ptdump.core import drive
from pagewalk.ptdump.s390 import Layout, S390State
from pagewalk.runs import root_runs
from pagewalk.target import read_kallsyms, resolve
from pagewalk.translate import translate

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "s390x"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "core.elf.xz").exists()) if FIXTURES.exists() else []
KB4, MB1, GB2 = 4096, 1 << 20, 1 << 31
THREAD_SIZE = 16 << 10  # the vmalloc'd stack of a task (VMAP_STACK, THREAD_SIZE_ORDER 2)


@pytest.fixture(scope="module")
def cores(tmp_path_factory) -> dict[str, pathlib.Path]:
    """The committed cores, unpacked (they are kept xz-compressed: 4 KiB page tables compress well)."""
    d = tmp_path_factory.mktemp("s390x")
    out = {}
    for name in CASES:
        p = d / f"{name}.elf"
        p.write_bytes(lzma.decompress((FIXTURES / name / "core.elf.xz").read_bytes()))
        out[name] = p
    return out


@pytest.fixture(params=CASES)
def case(request, cores):
    return FIXTURES / request.param, cores[request.param]


def _oracle(case_dir: pathlib.Path) -> dict[str, int]:
    """The helper module's line: kernel_asce=… CR1=… ident_map_size=… vmemmap=… (hex)."""
    out = {}
    for word in (case_dir / "oracle_line.txt").read_text().split()[1:]:
        k, _, v = word.partition("=")
        out[k] = int(v, 16)
    return out


def _target(core, case_dir, **kw):
    return resolve(open_image(str(core)), kallsyms=read_kallsyms(str(case_dir / "kallsyms.txt")), **kw)


def _span(line: str) -> tuple[int, int, str]:
    a, _, rest = line.partition(" ")
    s, _, e = a.partition("-")
    return int(s, 16), int(e, 16), rest.split(None, 1)[1]


def assert_equal_but_a_freed_stack(ours: list[str], kernel: list[str], image_target, vmalloc: tuple[int, int]) -> int:
    """`ours` equals the kernel's text except where a 16 KiB vmalloc'd stack the kernel printed (the
    `cat` that read the file) is gone from the image: there one "PTE I" line of ours stands for the
    kernel's "I, 16K RW NX, I" lines over the same range. Returns how many such places there were."""
    noise = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ours, b=kernel, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        assert tag == "replace" and i2 - i1 == 1, f"unexpected difference: {ours[i1:i2]} vs {kernel[j1:j2]}"
        s, e, what = _span(ours[i1])
        assert what == "PTE I"
        spans = [_span(k) for k in kernel[j1:j2]]
        assert spans[0][0] == s and spans[-1][1] == e
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        stacks = [(a, b) for a, b, w in spans if w == "PTE RW NX"]
        assert len(stacks) == 1 and all(w == "PTE I" for _, _, w in spans if w != "PTE RW NX")
        a, b = stacks[0]
        assert b - a == THREAD_SIZE and vmalloc[0] <= a < b <= vmalloc[1]
        t = translate(image_target.mem, image_target.mode, image_target.root("kernel"), a)
        assert not t.ok and "page-translation" in t.fault  # freed in the image, not misread by us
        noise += 1
    return noise


def test_both_memory_sizes_are_committed():
    """The fixtures cover a 512 MiB and a 2 GiB guest."""
    assert CASES == ["6.1-2g", "6.1-512m", "6.1-512m-b"]


def test_a_capture_without_noise_is_identical(cores):
    """The capture whose `cat` stack was still mapped at dump time gives the kernel's text byte for byte."""
    case_dir = FIXTURES / "6.1-512m-b"
    out = io.StringIO()
    dump(_target(cores["6.1-512m-b"], case_dir), "kernel", out)
    assert out.getvalue() == (case_dir / "ptdump_kernel.txt").read_text()


def test_dump_equals_kernel_text(case):
    """`dump` of the minimised core is the kernel's kernel_page_tables text, but for the freed `cat` stack."""
    case_dir, core = case
    t = _target(core, case_dir)
    out = io.StringIO()
    n = dump(t, "kernel", out)
    kernel = (case_dir / "ptdump_kernel.txt").read_text().splitlines()
    o = _oracle(case_dir)
    noise = assert_equal_but_a_freed_stack(out.getvalue().splitlines(), kernel, t, (o["VMALLOC_START"], o["MODULES_VADDR"]))
    assert noise <= 1
    assert n == sum(1 for ln in kernel if ln.startswith("0x")) - 2 * noise


def test_root_mode_and_markers_come_from_the_image(case):
    """CR13 of NT_S390_CTRS is the module's kernel_asce; markers read through System.map equal the module's values."""
    case_dir, core = case
    t = _target(core, case_dir)
    o = _oracle(case_dir)
    mem = t.mem
    assert mem.cpu.arch == "s390x" and not mem.little_endian
    assert mem.cpu.regs["cr13"] == o["kernel_asce"] == o["CR13"] and mem.cpu.regs["cr1"] == o["CR1"]
    assert t.mode.name == "s390x-region3" and t.roots["kernel"] == o["pgd_pa"]
    v = t.layout.values
    assert t.layout.max_addr == o["max_addr"]
    assert v["ident_map_size"] == o["ident_map_size"] and v["vmemmap"] == o["vmemmap"]
    assert v["VMALLOC_START"] == o["VMALLOC_START"] and v["MODULES_VADDR"] == o["MODULES_VADDR"]
    assert (v["_stext"], v["_end"]) == (o["_stext"], o["_end"])
    assert t.layout.missing == []


def test_every_line_translates_as_printed(case):
    """The first page of every valid line translates with the printed rights and page size; I lines fault."""
    case_dir, core = case
    t = _target(core, case_dir)
    size = {"PTE": KB4, "PMD": MB1, "PUD": GB2}
    for line in (case_dir / "ptdump_kernel.txt").read_text().splitlines():
        if not line.startswith("0x"):
            continue
        s, _, what = _span(line)
        lvl, *prot = what.split()
        tr = translate(t.mem, t.mode, t.roots["kernel"], s)
        if prot == ["I"]:
            assert not tr.ok
            continue
        if not tr.ok:  # the freed stack of `cat` (see test_dump_equals_kernel_text)
            assert "page-translation" in tr.fault
            continue
        assert tr.page_size == size[lvl]
        rights = ("r" + ("-" if prot[0] == "RO" else "w") + ("-" if prot[1] == "NX" else "x"))
        assert t.mode.extra["perm_text"](tr.perm) == rights


def test_user_and_primary_views_and_json(case, capsys):
    """CR1 and CR7 give the current_kernel and current_user views; JSON has one record per text line."""
    case_dir, core = case
    t = _target(core, case_dir)
    assert set(t.roots) == {"kernel", "current_kernel", "current_user"}
    assert t.roots["current_kernel"] == t.roots["kernel"]
    user = io.StringIO()
    dump(t, "current_user", user)
    assert user.getvalue().startswith("---[ Identity Mapping Start ]---\n0x0000000000000000-")
    buf = io.StringIO()
    n = dump(t, "kernel", buf, "json")
    doc = json.loads(buf.getvalue())
    assert doc["arch"] == "s390x" and doc["mode"] == "s390x-region3" and len(doc["ranges"]) == n
    text = io.StringIO()
    assert dump(t, "kernel", text) == n
    assert main(["checkwx", str(core), "--kallsyms", str(case_dir / "kallsyms.txt"), "-q"]) == 0
    assert capsys.readouterr().out.strip() == "Checked W+X mappings: passed, no unexpected W+X pages found"


def test_cli_dump_with_explicit_asce_and_translate(case, capsys):
    """`--reg asce=` selects the root; a VA past the ASCE's table length is a region-third-translation exception."""
    case_dir, core = case
    asce = _oracle(case_dir)["kernel_asce"]
    assert main(["dump", str(core), "--arch", "s390", "--reg", f"asce={asce:#x}", "-q",
                 "--kallsyms", str(case_dir / "kallsyms.txt")]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (case_dir / "ptdump_kernel.txt").read_text().splitlines()[1]
    assert main(["translate", str(core), "--reg", f"asce={asce & ~3:#x}", "0x37fffd00000", "-q"]) == 1
    out = capsys.readouterr().out
    assert "outside the table" in out and "region-third-translation exception" in out


# -- hand-built tables -----------------------------------------------------------------------------


def _mem(b, d):
    b.finish()
    return b.memory(d)


def test_hand_built_region3_text(tmp_path):
    """PTE, 1 MiB and 2 GiB leaves, invalid PTEs and holes print as the kernel's note_page() would."""
    b = S390Builder(REGION3, base=0x10000000)
    b.map(0x0, 0x0, KB4, S390_SW_RW)  # RW X (an entry of 0 would read as empty)
    b.map(0x100000, 0x100000, KB4, S390_P)  # RO X
    b.map(0x101000, 0x101000, KB4, S390_P | S390_IEP)  # RO NX
    b.map(0x200000, 0x200000, MB1, S390_IEP)  # RW NX
    b.map(0x80000000, 0x80000000, GB2, S390_P)  # RO X
    mem = _mem(b, tmp_path)
    layout = Layout(max_addr=1 << 42, values={"_stext": 0x100000, "_end": 0x200000, "ident_map_size": 0x80000000})
    out = io.StringIO()
    drive(S390State(layout, out), REGION3, root_runs(mem, REGION3, b.root), layout.ranges())
    assert out.getvalue() == """\
---[ Identity Mapping Start ]---
0x0000000000000000-0x0000000000001000         4K PTE RW X
0x0000000000001000-0x0000000000100000      1020K PTE I
---[ Identity Mapping End ]---
---[ Kernel Image Start ]---
0x0000000000100000-0x0000000000101000         4K PTE RO X
0x0000000000101000-0x0000000000102000         4K PTE RO NX
0x0000000000102000-0x0000000000200000      1016K PTE I
---[ Kernel Image End ]---
---[ Identity Mapping Start ]---
0x0000000000200000-0x0000000000300000         1M PMD RW NX
0x0000000000300000-0x0000000080000000      2045M PMD I
---[ Identity Mapping End ]---
0x0000000080000000-0x0000000100000000         2G PUD RO X
0x0000000100000000-0x0000040000000000      4092G PUD I
"""
    mem.close()


def test_region2_holes_are_printed_at_their_levels(tmp_path):
    """With a region-second ASCE the root is the p4d: its holes print at level 1, whose name is "PGD"."""
    b = S390Builder(REGION2, base=0x10000000)
    b.map(0x1000, 0x5000, KB4, S390_IEP)
    mem = _mem(b, tmp_path)
    layout = Layout(max_addr=1 << 53)
    out = io.StringIO()
    drive(S390State(layout, out), REGION2, root_runs(mem, REGION2, b.root), layout.ranges())
    assert out.getvalue() == """\
---[ Identity Mapping Start ]---
0x0000000000000000-0x0000000000001000         4K PTE I
0x0000000000001000-0x0000000000002000         4K PTE RW NX
0x0000000000002000-0x0000000000100000      1016K PTE I
0x0000000000100000-0x0000000080000000      2047M PMD I
0x0000000080000000-0x0000040000000000      4094G PUD I
0x0000040000000000-0x0020000000000000      8188T PGD I
"""
    mem.close()


def _target_of(b, tmp_path, **defines):
    mem = _mem(b, tmp_path)
    return resolve(mem, arch="s390x", regs={"asce": b.root | 0x7}, defines=defines)


def test_checkwx_counts_wx_pages_with_the_kernels_messages(tmp_path):
    """W+X pages are counted and the first reported; the first lowcore page is exempt when it is W+X itself."""
    b = S390Builder(REGION3, base=0x10000000)
    b.map(0x0, 0x0, KB4, S390_SW_RW)  # lowcore page 0, RW X: the kernel's sign of trampolines / no BEAR
    for va in (0x5000, 0x6000):
        b.map(va, va, KB4, S390_SW_RW)
    b.map(0x7000, 0x7000, KB4, S390_IEP)
    b.map(0x300000, 0x300000, MB1, S390_P)  # RO X: fine
    t = _target_of(b, tmp_path)
    r = checkwx(t)
    assert r.wx_pages == 2 and r.ranges == [(0x5000, 0x7000)]
    assert r.lines == ["s390/mm: Found insecure W+X mapping at address 0x5000",
                       "Checked W+X mappings: FAILED, 2 W+X pages found"]
    t.mem.close()


def test_checkwx_without_the_lowcore_exemption(tmp_path):
    """Without the exemption page 0 counts too; a clean table passes without "unexpected"."""
    b = S390Builder(REGION3, base=0x10000000)
    b.map(0x0, 0x0, KB4, S390_SW_RW)
    t = _target_of(b, tmp_path, WX_LOWCORE_EXEMPT=0)
    r = checkwx(t)
    assert r.wx_pages == 1 and r.lines[-1] == "Checked W+X mappings: FAILED, 1 W+X pages found"
    t.mem.close()
    b2 = S390Builder(REGION3, base=0x10000000)
    b2.map(0x0, 0x0, KB4, S390_IEP)
    b2.map(0x200000, 0x200000, MB1, S390_P)
    t2 = _target_of(b2, tmp_path)
    assert checkwx(t2).lines == ["Checked W+X mappings: passed, no W+X pages found"]
    t2.mem.close()


def test_bad_input_gives_clear_errors(tmp_path):
    """No ASCE, a real-space ASCE and unknown --define names are errors, not tracebacks."""
    b = S390Builder(REGION3, base=0x10000000)
    b.map(0x0, 0x0, KB4, S390_SW_RW)
    mem = _mem(b, tmp_path)
    with pytest.raises(RootError, match="asce"):
        resolve(mem, arch="s390x")
    with pytest.raises(RootError, match="real-space"):
        resolve(mem, arch="s390x", regs={"asce": b.root | 0x20})
    with pytest.raises(UsageError, match="NOPE"):
        resolve(mem, arch="s390x", regs={"asce": b.root | 7}, defines={"NOPE": 1})
    mem.close()


# -- drive() over runs == the kernel's per-entry walk ------------------------------------------------


def reference_text(mem, mode, root, layout) -> str:
    """mm/ptdump.c walked entry by entry (walk_page_range_novma's loops with s390's predicates)."""
    out = io.StringIO()
    st_ = S390State(layout, out)

    def walk(table, level, base):
        lvl = mode.levels[level]
        ent = mem.table(table, lvl.entries, mode.dtype).astype(np.uint64)
        kinds, outs = mode.classify(level, ent)
        if level == 0:  # the ASCE's TL: entries past it are holes
            _, hi = mode.extra["index_window"](0, None)
            kinds = np.where((np.arange(lvl.entries) >= int(hi[0])), Kind.HOLE, kinds)
        for k in range(lvl.entries):
            va = base + (k << lvl.shift)
            if va >= layout.max_addr:
                return
            kind = int(kinds[k])
            if kind == Kind.HOLE:
                st_.note(va, lvl.hole_depth, 0, 0, 0)
            elif kind == Kind.LEAF:
                st_.note(va, lvl.klevel, int(ent[k]), 0, 0)
            elif kind == Kind.TABLE:
                walk(int(outs[k]), level + 1, va)

    walk(root, 0, 0)
    st_.flush()
    return out.getvalue()


op_st = st.tuples(st.sampled_from(["4k", "1m", "2g", "inv", "empty_pte"]), st.integers(0, (1 << 35) - 1),
                  st.sampled_from([0, S390_P, S390_IEP, S390_P | S390_IEP]), st.integers(1, 3))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_st, min_size=1, max_size=12), stext=st.integers(0, 1 << 12), asce_tl=st.integers(0, 3))
def test_drive_equals_the_per_entry_walk(ops, stext, asce_tl):
    """For random region-third tables the run-based dump equals the per-entry kernel walk, markers included."""
    b = S390Builder(REGION3, base=0x100000)
    for what, va, flags, n in ops:
        try:
            if what in ("4k", "inv", "empty_pte"):
                va &= ~(KB4 - 1)
                for k in range(n):
                    b.map(va + k * KB4, 0x4000000 + k * KB4,
                          KB4, S390_PAGE_I if what == "inv" else flags)
            elif what == "1m":
                b.map(va & ~(MB1 - 1), 0x4000000, MB1, flags)
            else:
                b.map(va & ~(GB2 - 1), GB2, GB2, flags)
        except (ValueError, KeyError):
            pass
    mode = make_mode(1, asce_tl)
    layout = Layout(max_addr=1 << 42, values={"_stext": stext * KB4, "_end": stext * KB4 + 5 * MB1,
                                              "ident_map_size": 1 << 31, "VMALLOC_START": 1 << 34,
                                              "VMALLOC_END": (1 << 34) + (1 << 33)})
    with tempfile.TemporaryDirectory() as d:
        mem = _mem(b, d)
        out = io.StringIO()
        drive(S390State(layout, out), mode, root_runs(mem, mode, b.root), layout.ranges())
        assert out.getvalue() == reference_text(mem, mode, b.root, layout)
        mem.close()
