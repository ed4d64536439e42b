"""The analyses (mappings, aliases, diff, check, stats, pagemap, mincore) on synthetic tables with known answers."""

from __future__ import annotations

import builders_arm64  # noqa: F401  (registers the arm64 entry formats)
import builders_riscv  # noqa: F401  (registers the riscv entry formats)
import numpy as np
import pytest
from builders import X86_NX, X86_P, X86_PSE, X86_RW, X86_US, PageTableBuilder
from builders_arm64 import AP_TABLE_RDONLY, KERNEL_RO_X, KERNEL_RW, PTE_UXN
from builders_riscv import RV_KERNEL_RW, RV_N, RV_R, RV_V, RV_W, RV_X, ppn_bits

from pagewalk.analysis import aliases, check, diff, mappings, mincore, pagemap, stats
from pagewalk.analysis.diff import Shift
from pagewalk.analysis.mappings import FAULT, MAPPED, PM_PRESENT, compute
from pagewalk.arch import arm64
from pagewalk.arch.riscv import SV39
from pagewalk.arch.x86 import X86_64_4LEVEL
from pagewalk.errors import PagewalkError
from pagewalk.target import Target
from pagewalk.translate import translate_many

K, M, G = 1 << 10, 1 << 20, 1 << 30
TEXT = 0xFFFFFFFF81000000
DMAP = 0xFFFF888000000000
G_ = 1 << 8  # x86 _PAGE_GLOBAL
RW_NX = X86_P | X86_RW | X86_NX
RX = X86_P


def _target(b: PageTableBuilder, tmp_path, **kw) -> Target:
    return Target(b.memory(tmp_path), b.mode, {"kernel": b.root}, **kw)


def _kernel_like(**extra) -> PageTableBuilder:
    """Kernel text (2 MiB, read-only executable) at TEXT and its direct-map alias (RW, NX)."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(TEXT, 0x1000000, 2 * M, RX | G_)
    b.map(DMAP + 0x1000000, 0x1000000, 2 * M, RW_NX | G_)
    b.map(DMAP + 0x1200000, 0x1200000, 2 * M, RW_NX | G_)
    return b


def test_mappings_coalesce_va_and_pa_contiguous_leaves(tmp_path):
    """Two direct-map 2 MiB leaves with equal attributes and contiguous PAs are one interval; the text is another."""
    m = mappings(_target(_kernel_like(), tmp_path)).mapped()
    assert m.va_start.tolist() == [DMAP + 0x1000000, TEXT]
    assert m.size.tolist() == [4 * M, 2 * M]
    assert m.pa_start.tolist() == [0x1000000, 0x1000000]
    assert m.level_names() == ["pmd", "pmd"]
    assert m.perms.write.tolist() == [True, False]
    assert m.perms.kexec.tolist() == [False, True]


def test_mappings_do_not_coalesce_across_a_pa_gap_or_attribute_change(tmp_path):
    """Contiguous VAs break where the PA jumps or the rights differ; A/D bits do not break them."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(DMAP, 0x10000, 4 * K, RW_NX)
    b.map(DMAP + 0x1000, 0x11000, 4 * K, RW_NX | (1 << 5) | (1 << 6))  # Accessed, Dirty
    b.map(DMAP + 0x2000, 0x30000, 4 * K, RW_NX)  # PA gap
    b.map(DMAP + 0x3000, 0x31000, 4 * K, X86_P | X86_NX)  # read-only
    m = mappings(_target(b, tmp_path)).mapped()
    assert [(hex(v), s) for v, s in zip(m.va_start.tolist(), m.size.tolist())] == [
        (hex(DMAP), 0x2000), (hex(DMAP + 0x2000), 0x1000), (hex(DMAP + 0x3000), 0x1000)]


def test_shared_table_of_one_page_is_one_repeat_interval(tmp_path):
    """KASAN's shape (one PTE table mapping one page 512 times, shared by 64 PMD entries) is a single repeat interval."""
    b = PageTableBuilder(X86_64_4LEVEL)
    shadow = 0xFFFFEC0000000000
    b.map(shadow, 0x5000, 4 * K, X86_P | X86_NX)
    pte, _ = b.slot(shadow, 3)
    for i in range(512):
        b.set_entry(pte, i, 0x5000 | X86_P | X86_NX)
    pmd, idx = b.slot(shadow, 2)
    for i in range(1, 64):
        b.set_entry(pmd, idx + i, b.entry(pmd, idx))
    t = _target(b, tmp_path)
    m = mappings(t).mapped()
    assert len(m) == 1 and bool(m.repeat[0])
    assert int(m.size[0]) == 64 * 2 * M and int(m.pa_start[0]) == 0x5000
    a = aliases(t)
    assert [(g.pa_start, g.pa_end, g.mappings, g.wx) for g in a.groups] == [(0x5000, 0x6000, 64 * 512, False)]
    pm = pagemap(t, shadow + 0x3000, shadow + 0x5000)
    assert [int(x) for x in pm] == [PM_PRESENT | 5, PM_PRESENT | 5]


def test_expansion_beyond_the_bound_is_refused(tmp_path):
    """A PTE table of 512 scattered pages shared by 512 PMD entries expands past a small bound: a PagewalkError."""
    b = PageTableBuilder(X86_64_4LEVEL)
    va = 0xFFFFC90000000000
    b.map(va, 0x100000, 4 * K, RW_NX)
    pte, _ = b.slot(va, 3)
    for i in range(512):
        b.set_entry(pte, i, (0x100000 + 2 * i * 4096) | RW_NX)
    pmd, idx = b.slot(va, 2)
    for i in range(1, 512):
        b.set_entry(pmd, i, b.entry(pmd, idx))
    t = _target(b, tmp_path)
    with pytest.raises(PagewalkError, match="more than 100000 intervals at the pmd level"):
        compute(t.mem, t.mode, b.root, max_intervals=100_000)
    assert len(compute(t.mem, t.mode, b.root, max_intervals=1_000_000)) == 512 * 512


def test_aliases_flag_writable_here_executable_there(tmp_path):
    """Kernel text aliased writable in the direct map is one alias range flagged W/X (kernel-executable)."""
    b = _kernel_like()
    b.set_entry(*b.slot(TEXT, 2), 0x1000000 | RX | X86_PSE | G_)  # unchanged, explicit
    b.set_entry(*b.slot(DMAP + 0x1000000, 2), 0x1000000 | X86_P | X86_RW | X86_PSE | G_)  # direct map executable too
    res = aliases(_target(b, tmp_path))
    assert [(g.pa_start, g.pa_end, g.mappings) for g in res.groups] == [(0x1000000, 0x1200000, 2)]
    g = res.groups[0]
    assert g.wx and g.kernel_wx and not g.user_wx
    assert [(mb.va_start, mb.perm) for mb in g.members] == [(DMAP + 0x1000000, "kernel rwx G"), (TEXT, "kernel r-x G")]


def test_read_only_aliases_are_not_flagged(tmp_path):
    """Text r-x aliased read-only in the direct map is not flagged; aliased rw- (writable here, executable there) it is."""
    b = _kernel_like()
    b.set_entry(*b.slot(DMAP + 0x1000000, 2), 0x1000000 | X86_P | X86_NX | X86_PSE | G_)
    res = aliases(_target(b, tmp_path))
    assert len(res.groups) == 1 and not res.groups[0].wx
    b2 = _kernel_like()
    res2 = aliases(_target(b2, tmp_path))
    assert res2.groups[0].wx  # rw- NX direct map + r-x text: writable here, executable there


def test_user_text_in_the_direct_map_is_not_a_wx_alias(tmp_path):
    """A user r-x page also in the (writable) direct map is how every OS works: not flagged; a user rw + user rx double mapping is."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0x400000, 0x7000, 4 * K, X86_P | X86_US)  # user r-x
    b.map(DMAP + 0x7000, 0x7000, 4 * K, RW_NX)
    b.map(0x600000, 0x8000, 4 * K, X86_P | X86_US)  # user r-x ...
    b.map(0x700000, 0x8000, 4 * K, X86_P | X86_US | X86_RW | X86_NX)  # ... and user rw- (a JIT)
    res = aliases(_target(b, tmp_path))
    flags = {g.pa_start: (g.wx, g.kernel_wx, g.user_wx) for g in res.groups}
    assert flags == {0x7000: (False, False, False), 0x8000: (True, False, True)}
    c = check(_target(b, tmp_path))
    assert [(f.check, f.severity, f.va_start) for f in c.by_check("wx-alias")] == [("wx-alias", "low", 0x600000)]


def test_effective_permissions_fold_the_hierarchy(tmp_path):
    """An RW+X leaf under a read-only PUD entry is not writable; with RW at every level it is a W+X finding."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(TEXT, 0x1000000, 2 * M, X86_P | X86_RW)
    t = _target(b, tmp_path)
    f = check(t).by_check("wx")
    assert [(x.va_start, x.va_end, x.pages, x.pa_start, x.level) for x in f] == [(TEXT, TEXT + 2 * M, 512, 0x1000000, "pmd")]
    assert [s["level"] for s in f[0].trace] == ["pgd", "pud", "pmd"] and f[0].trace[-1]["entry"] == f[0].entry
    pud, idx = b.slot(TEXT, 1)
    b.set_entry(pud, idx, b.entry(pud, idx) & ~X86_RW)
    t2 = _target(b, tmp_path)
    assert check(t2).by_check("wx") == []
    assert not mappings(t2).mapped().perms.write[0]


def test_check_reports_reserved_bits_with_the_reason(tmp_path):
    """Valid entries the MMU rejects (PS in a PML4 entry, a 1 GiB page with bits 29:13 set) are `reserved-bits` findings."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(DMAP, 0x10000, 4 * K, RW_NX)
    b.set_entry(b.root, 300, 0x40000000 | X86_P | X86_RW | X86_PSE)  # PS at the PML4 level
    pud, idx = b.slot(DMAP, 1)
    b.set_entry(pud, idx + 1, 0x12345000 | X86_P | X86_RW | X86_PSE)
    t = _target(b, tmp_path)
    assert (mappings(t).status == FAULT).sum() == 2
    f = check(t).by_check("reserved-bits")
    pgd_va = 0xFFFF000000000000 | (300 << 39)
    assert [(x.va_start, x.va_end, x.level, x.severity) for x in f] == [
        (DMAP + G, DMAP + 2 * G, "pud", "medium"), (pgd_va, pgd_va + (1 << 39), "pgd", "medium")]
    assert [x.detail["reason"] for x in f] == [
        "reserved bit set (bits below the large page's alignment)", "reserved bit set (PS must be 0 at this level)"]
    assert f[0].trace[-1]["kind"] == "fault" and f[0].trace[-1]["entry"] == 0x12345000 | X86_P | X86_RW | X86_PSE
    st = stats(t)
    assert (st.levels[0].entries["reserved"], st.levels[1].entries["reserved"]) == (1, 1)


def test_user_accessible_kernel_mapping_and_global_user_pages(tmp_path):
    """A user-accessible page in the kernel half is `user-kernel`; a global user page under PTI is `global-user`."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(DMAP, 0x10000, 4 * K, RW_NX | X86_US)
    b.map(0x400000, 0x20000, 4 * K, X86_P | X86_US | G_)
    r = check(_target(b, tmp_path, pti=True))
    assert [(f.check, f.va_start, f.severity) for f in r.findings] == [
        ("user-kernel", DMAP, "high"), ("global-user", 0x400000, "medium")]
    assert r.exit_status("high") == 1 and r.exit_status("medium") == 1
    r2 = check(_target(b, tmp_path, pti=False))
    assert [f.check for f in r2.findings] == ["user-kernel"]


def test_writable_kernel_text_needs_the_symbols(tmp_path):
    """With _stext/_etext the writable pages of the text are a finding; without, a note says why it was skipped."""
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(TEXT, 0x1000000, 4 * K, X86_P | X86_RW | X86_NX)
    b.map(TEXT + 0x1000, 0x1001000, 4 * K, X86_P)
    t = _target(b, tmp_path)
    r = check(t, symbols={"_stext": TEXT, "_etext": TEXT + 0x1800})
    assert [(f.check, f.va_start, f.va_end, f.pages) for f in r.findings] == [
        ("writable-kernel-text", TEXT, TEXT + 0x1000, 1)]
    assert "writable-kernel-text not checked" in check(t).notes[0]


def test_arm64_hierarchical_permissions_and_non_uxn_kernel_pages(tmp_path):
    """arm64: APTable=ro above an RW+X block hides the W+X; a kernel page with UXN clear is `user-kernel`."""
    mode = arm64.make_mode(4096, 48)
    va = 0xFFFF800008000000
    b = PageTableBuilder(mode)
    b.map(va, 0x40000000, 2 * M, KERNEL_RW & ~arm64.PTE_PXN)  # RW, executable at EL1
    b.map(va + 2 * M, 0x40200000, 2 * M, KERNEL_RO_X & ~PTE_UXN)  # EL0-executable kernel page
    t = _target(b, tmp_path)
    r = check(t)
    assert [(f.check, f.va_start, f.pages) for f in r.findings] == [("user-kernel", va + 2 * M, 512), ("wx", va, 512)]
    pud, idx = b.slot(va, 1)
    b.set_entry(pud, idx, b.entry(pud, idx) | AP_TABLE_RDONLY)
    assert [f.check for f in check(_target(b, tmp_path)).findings] == ["user-kernel"]


def test_riscv_napot_pages_and_wx(tmp_path):
    """riscv: a 64 KiB NAPOT run maps 16 consecutive frames (pagemap), and an RWX leaf is a W+X finding."""
    b = PageTableBuilder(SV39)
    va = 0xFFFFFFD600000000
    b.map(va, 0x80000000, 4 * K, RV_KERNEL_RW)
    pte, idx = b.slot(va, 2)
    for i in range(16):
        b.set_entry(pte, idx + i, ppn_bits(0x80008000) | RV_N | RV_KERNEL_RW)
    b.map(0xFFFFFFFF80000000, 0x90000000, 2 * M, RV_V | RV_R | RV_W | RV_X)
    t = _target(b, tmp_path)
    pm = pagemap(t, va, va + 16 * 4096)
    assert (pm & ~np.uint64(PM_PRESENT)).tolist() == list(range(0x80000, 0x80010))
    pa, _, ok = translate_many(t.mem, t.mode, b.root, va + np.arange(16, dtype=np.uint64) * np.uint64(4096))
    assert ok.all() and (pa >> np.uint64(12)).tolist() == list(range(0x80000, 0x80010))
    assert [(f.check, f.va_start, f.pages) for f in check(t).by_check("wx")] == [("wx", 0xFFFFFFFF80000000, 512)]


def test_pagemap_and_mincore_per_page(tmp_path):
    """A 2 MiB leaf gives consecutive PFNs with the present bit; holes give 0 / False; in_image needs the frame."""
    b = _kernel_like()
    t = _target(b, tmp_path)
    pm = pagemap(t, TEXT - 8192, TEXT + 8192)
    assert [int(x) for x in pm] == [0, 0, PM_PRESENT | 0x1000, PM_PRESENT | 0x1001]
    assert mincore(t, TEXT - 8192, TEXT + 8192).tolist() == [False, False, True, True]
    assert mincore(t, TEXT, TEXT + 8192, in_image=True).tolist() == [False, False]  # frames not in the image
    b.map(DMAP + 0x3000000, 0x2000, 4 * K, RW_NX)  # the image holds PA 0x2000 (a table page)
    t2 = _target(b, tmp_path)
    assert mincore(t2, DMAP + 0x3000000, DMAP + 0x3001000, in_image=True).tolist() == [True]
    with pytest.raises(PagewalkError, match="per call"):
        pagemap(t, 0, 1 << 47)


def test_stats_count_tables_leaves_and_sharing(tmp_path):
    """Tables per level, their bytes, leaf entries by size and a table referenced twice."""
    b = _kernel_like()
    b.map(DMAP + 0x40000000, 0x9000, 4 * K, RW_NX)
    pmd, idx = b.slot(DMAP + 0x40000000, 2)
    b.set_entry(pmd, idx + 1, b.entry(pmd, idx))  # the same PTE table again, 2 MiB later
    s = stats(_target(b, tmp_path))
    assert [(lv.name, lv.tables, lv.references, lv.shared_tables, lv.max_references) for lv in s.levels] == [
        ("pgd", 1, 1, 0, 1), ("pud", 2, 2, 0, 1), ("pmd", 3, 3, 0, 1), ("pte", 1, 2, 1, 2)]
    assert s.table_bytes == 7 * 4096
    assert [(lf.size, lf.entries, lf.mapped_pages) for lf in s.leaves] == [(2 * M, 3, 3), (4 * K, 1, 2)]
    assert s.shared == [{"level": "pte", "pa": int(b.entry(pmd, idx)) & ~0xFFF & ((1 << 52) - 1), "references": 2}]


def test_diff_detects_a_constant_shift(tmp_path):
    """B is A moved by 0x200000 in VA: diff says everything moved; given the shift, nothing else changed either."""
    a = _kernel_like()
    b = PageTableBuilder(X86_64_4LEVEL)
    for mp in a.mappings:
        b.map(mp.va + 0x40000000, mp.pa, mp.size, mp.flags)
    ta, tb = _target(a, tmp_path), _target(b, tmp_path)
    res = diff(ta, tb)
    assert res.verdict == "everything moved by 0x40000000, nothing else changed"
    assert [(c.kind, c.va_start, c.va_b) for c in res.changes] == [
        ("moved", DMAP + 0x1000000, DMAP + 0x41000000), ("moved", TEXT, TEXT + 0x40000000)]
    given = diff(ta, tb, shifts=[Shift(0x40000000)])
    assert given.changes == [] and given.verdict == "everything moved by 0x40000000, nothing else changed"
    assert diff(ta, ta).verdict == "identical"


def test_diff_reports_added_removed_changed_and_remapped(tmp_path):
    """Each kind of difference is one coalesced range with A's and B's rights and PAs."""
    a = _kernel_like()
    a.map(DMAP + 0x2000000, 0x2000000, 2 * M, RW_NX)
    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(TEXT, 0x1000000, 2 * M, RX | G_)  # same
    b.map(DMAP + 0x1000000, 0x1000000, 2 * M, X86_P | X86_NX | G_)  # made read-only
    b.map(DMAP + 0x1200000, 0x5200000, 2 * M, RW_NX | G_)  # another PA
    b.map(DMAP + 0x8000000, 0x8000000, 2 * M, RW_NX)  # new
    res = diff(_target(a, tmp_path), _target(b, tmp_path))
    got = [(c.kind, c.va_start, c.size, c.perm_a, c.perm_b, c.pa_a, c.pa_b) for c in res.changes]
    assert got == [
        ("changed", DMAP + 0x1000000, 2 * M, "kernel rw- G", "kernel r-- G", 0x1000000, 0x1000000),
        ("remapped", DMAP + 0x1200000, 2 * M, "kernel rw- G", "kernel rw- G", 0x1200000, 0x5200000),
        ("removed", DMAP + 0x2000000, 2 * M, "kernel rw-", None, 0x2000000, None),
        ("added", DMAP + 0x8000000, 2 * M, None, "kernel rw-", None, 0x8000000),
    ]
    assert res.verdict == "1 removed, 1 added, 1 changed, 1 remapped"
    assert res.same_bytes == 2 * M
    ign = diff(_target(a, tmp_path), _target(b, tmp_path), pa="ignore")  # rw- 2M at +0x6000000: a move
    assert [(c.kind, c.va_start, c.va_b) for c in ign.changes] == [
        ("changed", DMAP + 0x1000000, None), ("moved", DMAP + 0x2000000, DMAP + 0x8000000)]


def test_shift_parsing():
    """--shift takes VA_DELTA[:PA_DELTA][@START-END]."""
    assert Shift.parse("0x1000") == Shift(0x1000)
    assert Shift.parse("-0x1000:0x2000@0x10-0x20") == Shift(-0x1000, 0x2000, 0x10, 0x20)
    with pytest.raises(PagewalkError):
        Shift.parse("nonsense")


def test_mapped_status_of_every_leaf_matches_translate(tmp_path):
    """Every page of every interval translates (translate_many) to the PA the interval gives."""
    b = _kernel_like()
    b.map(0xFFFFC90000000000, 0x123000, 4 * K, RW_NX)
    b.map(0xFFFFC90000001000, 0x124000, 4 * K, RW_NX)
    t = _target(b, tmp_path)
    m = mappings(t)
    assert (m.status == MAPPED).all()
    vas = np.concatenate([np.arange(int(s), int(s) + int(n), 4096, dtype=np.uint64)
                          for s, n in zip(m.va_start, m.size)])
    pa, _, ok = translate_many(t.mem, t.mode, b.root, vas)
    idx, hit = m.lookup(vas)
    assert ok.all() and hit.all() and (m.pa_of(idx, vas) == pa).all()
