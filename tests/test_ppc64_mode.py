"""book3s64 radix: process-table entries, the tree's geometry, Linux's view of entries and the MMU's."""

from __future__ import annotations

import builders_ppc64  # noqa: F401  (registers the ppc64 entry formats)
import numpy as np
import pytest
from builders import PageTableBuilder
from builders_ppc64 import (
    PPC_A,
    PPC_KERNEL_ROX,
    PPC_KERNEL_RW,
    PPC_L,
    PPC_P,
    PPC_PRIV,
    PPC_R,
    PPC_W,
    PPC_X,
    RadixTableBuilder,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagewalk.arch.ppc64 import (
    _PAGE_INVALID,
    _PAGE_SPECIAL,
    RADIX_4K,
    RADIX_64K,
    decode_prtb0,
    describe,
    encode_prtb0,
    perm_text,
    probe_nls,
    radix_mode,
)
from pagewalk.errors import RootError
from pagewalk.mode import HwKind, Kind
from pagewalk.runs import root_runs
from pagewalk.target import resolve
from pagewalk.translate import translate, translate_many

GB1, MB2, KB64, KB4 = 1 << 30, 2 << 20, 64 << 10, 4096
KVA = 0xC000000000000000


def hw(mode, level, entry):
    kind, out = mode.hw_classify(level, np.array([entry], dtype=np.uint64))
    return HwKind(int(kind[0])), int(out[0])


def kern(mode, level, entry):
    kind, out = mode.classify(level, np.array([entry], dtype=np.uint64))
    return Kind(int(kind[0])), int(out[0])


def test_prtb0_of_the_oracle_kernel():
    """The kernel's process-table entry 0 (0x40000000027400ad) is a 52-bit tree at 0x2740000 with a 2^13 root."""
    rts, rpdb, rpds = decode_prtb0(0x40000000027400AD)
    assert (rts + 31, rpdb, rpds) == (52, 0x2740000, 13)
    assert encode_prtb0(0x2740000) == 0x40000000027400AD


@given(rts=st.integers(0, 31), rpds=st.integers(0, 31), rpdb=st.integers(0, (1 << 52) - 1).map(lambda x: x << 8))
def test_prtb0_round_trip(rts, rpds, rpdb):
    """encode_prtb0() and decode_prtb0() are inverse on every RTS (split in RTS1/RTS2), RPDB and RPDS."""
    assert decode_prtb0(encode_prtb0(rpdb, rts, rpds)) == (rts, rpdb, rpds)


def test_geometry_is_computed_from_the_index_sizes():
    """13/9/9/5 over 52 bits leaves 64 KiB pages (64 KiB root, 256-byte PTE tables); 13/9/9/9 leaves 4 KiB."""
    assert [lvl.entry_span for lvl in RADIX_64K.levels] == [1 << 39, GB1, MB2, KB64]
    assert [lvl.entries * 8 for lvl in RADIX_64K.levels] == [KB64, KB4, KB4, 256]
    assert RADIX_64K.va_bits == 52 and RADIX_64K.root_align == KB64 and RADIX_64K.byteorder == ">"
    assert [lvl.entry_span for lvl in RADIX_4K.levels] == [1 << 39, GB1, MB2, KB4]
    assert radix_mode(rts=21, rpds=12, nls=(10, 9, 5)).levels[1].entries == 1024


@pytest.mark.parametrize(
    "rts, rpds, nls", [(21, 13, (9, 9, 9, 1)), (21, 13, (9, 9, 13)), (21, 4, (9, 9, 5)), (5, 13, (9, 9, 5))]
)
def test_impossible_geometries_are_refused(rts, rpds, nls):
    """Trees that are not 4 levels, leave pages under 4 KiB or have tables under 32 entries raise ValueError."""
    with pytest.raises(ValueError):
        radix_mode(rts, rpds, nls)


def test_linux_view_of_the_root():
    """The root is walked as the folded p4d: 0 and RADIX_P4D_BAD_BITS are holes (a leaf there is bad), else a table."""
    m = RADIX_64K
    assert kern(m, 0, 0)[0] == Kind.HOLE
    assert kern(m, 0, 0x8000000002ED6009) == (Kind.TABLE, 0x2ED6000)
    assert kern(m, 0, PPC_P | PPC_L | PPC_KERNEL_RW | (1 << 39))[0] == Kind.HOLE  # _PAGE_PTE: p4d_bad()
    assert kern(m, 0, 0x2ED6009 | 0x80)[0] == Kind.HOLE  # bits 7:5
    assert kern(m, 0, 0x2ED6009)[0] == Kind.TABLE  # not present, not bad: walked into
    assert m.levels[0].hole_depth == 0 and m.levels[0].klevel == 1


def test_linux_view_of_pud_pmd_and_pte():
    """p?d_leaf() is _PAGE_PTE (present or not); a non-present pointer is skipped; every PTE slot is reported."""
    m = RADIX_64K
    for level, span in ((1, GB1), (2, MB2)):
        assert kern(m, level, PPC_L | PPC_KERNEL_RW | span) == (Kind.LEAF, span)
        assert kern(m, level, (PPC_L | PPC_KERNEL_RW | span) & ~PPC_P)[0] == Kind.LEAF
        assert kern(m, level, 0x3000000 | 9)[0] == Kind.SKIP
        assert kern(m, level, PPC_P | 0x3000000 | 9) == (Kind.TABLE, 0x3000000)
        assert kern(m, level, 0)[0] == Kind.HOLE
    assert kern(m, 3, 0)[0] == Kind.LEAF
    # pte_pfn() keeps bits 52:16: the low 64 KiB and bits above _PAGE_PA_MAX are not the PA
    assert kern(m, 3, PPC_L | PPC_KERNEL_RW | (1 << 53) | 0x12345F000)[1] == 0x123450000


@pytest.mark.parametrize(
    "level, entry, reason",
    [
        (1, PPC_L | PPC_KERNEL_RW & ~PPC_P | GB1, "not valid"),
        (0, 0x2ED6000 | 9, "not valid"),
        (0, PPC_P | 0x2ED6000 | 5, "NLS"),
        (2, PPC_P | 0x2ED6000 | 9, "NLS"),
        (3, PPC_P | 0x2ED6000 | 5, "size is used up"),
    ],
)
def test_mmu_faults(level, entry, reason):
    """V clear, an NLS that is not the tree's next level, and a directory entry at the last level fault."""
    kind, code = hw(RADIX_64K, level, entry)
    assert kind == HwKind.FAULT
    assert reason in RADIX_64K.fault_reason(code)


def test_mmu_leaves_and_directories():
    """A leaf may sit at any level (QEMU accepts a 512 GiB root leaf); its RPN bits under the page size
    are ignored; NLB is aligned down to the next table's size."""
    m = RADIX_64K
    assert hw(m, 0, PPC_L | PPC_KERNEL_RW | (1 << 39)) == (HwKind.LEAF, 1 << 39)
    assert hw(m, 2, PPC_L | PPC_KERNEL_RW | MB2 | 0x10000) == (HwKind.LEAF, MB2)
    assert hw(m, 3, PPC_L | PPC_KERNEL_RW | (1 << 55) | 0x50000) == (HwKind.LEAF, (1 << 55) | 0x50000)
    assert hw(m, 2, PPC_P | 0x2ED6000 | 0x80 | 5) == (HwKind.TABLE, 0x2ED6000)  # 256-byte PTE table
    assert hw(m, 1, PPC_P | 0x2ED6800 | 9) == (HwKind.TABLE, 0x2ED6000)  # 4 KiB PMD table


def test_perm_text_and_describe():
    """EAA read/write implies read; privileged is "kernel"; describe() names the ISA fields."""
    assert perm_text(PPC_PRIV | PPC_W) == "kernel rw-"
    assert perm_text(PPC_R | PPC_X) == "user r-x"
    e = PPC_L | PPC_KERNEL_ROX | 0x2000000 | 0x20 | _PAGE_SPECIAL
    assert describe(e) == "V L RPN=0x2000000 R ATT=non-idempotent I/O EAA=privileged|read|execute special"
    assert describe(0x8000000002ED6009) == "V NLB=0x2ed6000 NLS=9"
    assert describe(_PAGE_INVALID | PPC_L).startswith("not valid L")


def _built(tmp_path, mappings, builder=RadixTableBuilder, mode=RADIX_64K):
    b = builder(mode)
    for va, pa, size, flags in mappings:
        b.map(va, pa, size, flags)
    return b, b.memory(tmp_path)


LEVEL_CASES = [(KVA + 3 * GB1, 0x40000000, GB1), (KVA + (5 << 39) + 7 * MB2, 0x1E00000, MB2),
               (0xC00A000080020000, (1 << 44) | 0x10000, KB64)]


@pytest.mark.parametrize("va, pa, size", LEVEL_CASES)
def test_leaf_at_every_level_translates_and_is_one_run(tmp_path, va, pa, size):
    """A 1 GiB pud leaf, a 2 MiB pmd leaf and a 64 KiB PTE translate with their size and are one run."""
    b, mem = _built(tmp_path, [(va, pa, size, PPC_KERNEL_RW)])
    t = translate(mem, RADIX_64K, b.root, va + size - 8)
    assert t.ok and (t.pa, t.page_size) == (pa + size - 8, size) and t.steps[-1].kind == "leaf"
    assert perm_text(t.perm) == "kernel rw-"
    runs = root_runs(mem, RADIX_64K, b.root)
    leaf = [(int(s), int(v)) for s, v, k in zip(runs.start, runs.val, runs.key) if k]
    assert leaf == [(va - KVA, b.mappings[0].entry)]


def test_addresses_outside_the_kernel_quadrant_fault(tmp_path):
    """Quadrant 0 and EA bits above the 52-bit tree are not translated by the kernel's tree."""
    b, mem = _built(tmp_path, [(KVA, 0, MB2, PPC_KERNEL_RW)])
    for va in (0x0, 0xC010000000000000, 0x4000000000000000):
        t = translate(mem, RADIX_64K, b.root, va)
        assert not t.ok and "canonical" in t.fault
    assert translate(mem, RADIX_64K, b.root, KVA + 8).ok


def test_plain_builder_entries_have_nls_0_and_the_mmu_says_so(tmp_path):
    """Directory entries without NLS are walked by the kernel but refused by the MMU (its NLS is checked)."""
    b, mem = _built(tmp_path, [(KVA, 0, MB2, PPC_KERNEL_RW)], builder=PageTableBuilder)
    assert int(root_runs(mem, RADIX_64K, b.root).key[0]) != 0
    t = translate(mem, RADIX_64K, b.root, KVA)
    assert not t.ok and "NLS" in t.fault


SIZES = st.sampled_from([GB1, MB2, KB64])
FLAGS = st.sampled_from([PPC_KERNEL_RW, PPC_KERNEL_ROX, PPC_P | PPC_A | PPC_R, PPC_P | PPC_R | PPC_W | PPC_X])


@st.composite
def mapping_sets(draw):
    """Up to 8 leaves of 1 GiB, 2 MiB or 64 KiB in 16 pgd slots (overlapping draws are skipped by map())."""
    out = []
    for _ in range(draw(st.integers(1, 8))):
        size = draw(SIZES)
        va = KVA + (draw(st.integers(0, 15)) << 39) + draw(st.integers(0, 3)) * GB1
        if size < GB1:
            va += draw(st.integers(0, 3)) * MB2 + (draw(st.integers(0, 31)) * KB64 if size == KB64 else 0)
        out.append((va, draw(st.integers(1, 1 << 20)) * size, size, draw(FLAGS)))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(maps=mapping_sets(), probes=st.lists(st.integers(0, (1 << 43) - 1), max_size=20))
def test_round_trip_walk_and_translate_agree(tmp_path, maps, probes):
    """Every built mapping is a run of the walk and translates to its PA; translate_many equals translate."""
    b = RadixTableBuilder(RADIX_64K)
    for va, pa, size, flags in maps:
        try:
            b.map(va, pa, size, flags)
        except ValueError:
            continue  # overlapping draws
    mem = b.memory(tmp_path)
    runs = root_runs(mem, RADIX_64K, b.root)
    starts = {int(s): int(v) for s, v, k in zip(runs.start, runs.val, runs.key) if k}
    vas = []
    for m in b.mappings:
        assert starts.get(m.va - KVA, m.entry) == m.entry  # a run starts there (unless merged with its neighbour)
        for off in (0, m.size - 8):
            t = translate(mem, RADIX_64K, b.root, m.va + off)
            assert t.ok and t.pa == m.pa + off and t.page_size == m.size
            vas.append(m.va + off)
    vas += [KVA + p * 8 for p in probes]
    arr = np.array(vas, dtype=np.uint64)
    pa, size, ok = translate_many(mem, RADIX_64K, b.root, arr)
    for i, va in enumerate(vas):
        t = translate(mem, RADIX_64K, b.root, va)
        assert bool(ok[i]) == t.ok
        if t.ok:
            assert (int(pa[i]), int(size[i])) == (t.pa, t.page_size)


def test_probe_reads_the_geometry_from_the_entries(tmp_path):
    """A 4K-page tree (13/9/9/9) is recognised from its directory entries' NLS; a disagreement is noted."""
    maps = [(KVA + 0x1000, 0x5000, KB4, PPC_KERNEL_RW), (KVA + (2 << 39), 0x6000, KB4, PPC_KERNEL_RW)]
    b, mem = _built(tmp_path, maps, mode=RADIX_4K)
    assert probe_nls(mem, b.root, RADIX_64K) == ((9, 9, 9), [])
    t = resolve(mem, "ppc64", regs={"prtb0": encode_prtb0(b.root)})
    assert t.mode.levels[-1].entry_span == KB4
    assert any("13/9/9/9" in n for n in t.notes)
    assert translate(mem, t.mode, b.root, KVA + 0x1008).pa == 0x5008
    b.set_entry(b.root, 1, PPC_P | b.alloc_table() | 7)
    nls, notes = probe_nls(b.memory(tmp_path), b.root, RADIX_64K)
    assert nls == (9, 9, 9) and "disagree" in notes[0]


def _prtb_image(tmp_path, b: PageTableBuilder, prtb0: int, ptcr_hr: bool = True) -> tuple[object, int, int]:
    """The builder's image plus a process table (and a partition table pointing at it)."""
    prtb = b.alloc_table()
    b.image[prtb - b.base : prtb - b.base + 8] = prtb0.to_bytes(8, "big")
    patb = b.alloc_table()
    dw0 = (1 << 63) if ptcr_hr else 0
    b.image[patb - b.base : patb - b.base + 16] = dw0.to_bytes(8, "big") + prtb.to_bytes(8, "big")
    return b.memory(tmp_path), prtb, patb


def test_root_sources_agree(tmp_path):
    """prtb0, rpdb, prtb (process table in the image), ptcr (partition table) and kallsyms give one root."""
    b, _ = _built(tmp_path, [(KVA, 0, MB2, PPC_KERNEL_RW)])
    prtb0 = encode_prtb0(b.root)
    mem, prtb, patb = _prtb_image(tmp_path, b, prtb0)
    ptr_pa = b.alloc_table()
    b.image[ptr_pa - b.base : ptr_pa - b.base + 8] = (KVA + prtb).to_bytes(8, "little")  # ppc64el kernel data
    mem = b.memory(tmp_path)
    roots = set()
    for regs, ksyms in [({"prtb0": prtb0}, {}), ({"rpdb": b.root}, {}), ({"prtb": prtb}, {}), ({"ptcr": patb}, {}),
                        ({}, {"process_tb": KVA + ptr_pa}), ({}, {"swapper_pg_dir": KVA + b.root})]:
        t = resolve(mem, "ppc64el", regs=regs, kallsyms=ksyms)
        roots.add((t.roots["kernel"], t.mode.name))
    assert roots == {(b.root, RADIX_64K.name)}


@pytest.mark.parametrize(
    "regs, message",
    [
        ({}, "pass --reg prtb0"),
        ({"prtb0": 0}, "hash-MMU kernel"),
        ({"pgd": 0}, "PA 0"),
        ({"prtb0": encode_prtb0(0x7000000)}, "not in the image"),
        ({"prtb0": encode_prtb0(0x10000, rts=1)}, "radix tree"),
        ({"prtb": 0x7000000}, "process table"),
    ],
)
def test_bad_roots_are_clear_errors(tmp_path, regs, message):
    """No root, an empty or absent tree, an impossible size or an absent process table: one RootError line."""
    _, mem = _built(tmp_path, [(KVA, 0, MB2, PPC_KERNEL_RW)])
    with pytest.raises(RootError, match=message):
        resolve(mem, "ppc64", regs=regs)


def test_hash_partition_is_refused(tmp_path):
    """A partition-table entry with HR=0 (hash MMU) is said to be unsupported, not walked."""
    b, _ = _built(tmp_path, [(KVA, 0, MB2, PPC_KERNEL_RW)])
    mem, _, patb = _prtb_image(tmp_path, b, encode_prtb0(b.root), ptcr_hr=False)
    with pytest.raises(RootError, match="hash"):
        resolve(mem, "ppc64", regs={"ptcr": patb})


def test_per_entry_walker_reports_each_leaf_at_its_level(tmp_path):
    """walk_page_range_novma() (mm/pagewalk.c) calls pud_entry/pmd_entry/pte_entry with each built leaf
    at its quadrant-3 VA and reports root holes at depth 0 (the folded p4d)."""
    from pagewalk.walk import WalkOps, walk_page_range_novma

    maps = [(va, pa, size, PPC_KERNEL_RW) for va, pa, size in LEVEL_CASES]
    b, mem = _built(tmp_path, maps)
    seen: list[tuple[str, int, int]] = []
    holes: set[int] = set()

    def cb(name):
        def f(entry, va, next_va, walk):
            if name == "pte" and entry or entry & PPC_L:
                seen.append((name, va, entry))
            return 0

        return f

    ops = WalkOps(pud_entry=cb("pud"), pmd_entry=cb("pmd"), pte_entry=cb("pte"),
                  pte_hole=lambda va, nxt, depth, w: holes.add(depth) or 0)
    assert walk_page_range_novma(mem, RADIX_64K, b.root, 0, 1 << 64, ops) == 0
    assert sorted(seen) == sorted(
        ({1: "pud", 2: "pmd", 3: "pte"}[m.level], m.va, m.entry) for m in b.mappings
    )
    assert 0 in holes and 1 not in holes


def test_hash_mode_linux_tables():
    """Hash MMU: 8/10/10/8 Linux tables; a root entry is bad only when 0; no NLS; the PA drops bits 55:53."""
    from pagewalk.arch.ppc64 import H_PAGE_HASHPTE, HASH_64K

    assert [lvl.entry_span for lvl in HASH_64K.levels] == [1 << 44, 1 << 34, 1 << 24, KB64]
    assert kern(HASH_64K, 0, PPC_P | PPC_L | 0x2C58000) == (Kind.TABLE, 0x2C58000)
    assert hw(HASH_64K, 1, PPC_P | 0x2C58000) == (HwKind.TABLE, 0x2C58000)
    assert hw(HASH_64K, 3, PPC_L | PPC_KERNEL_RW | H_PAGE_HASHPTE | 0x2BA0000) == (HwKind.LEAF, 0x2BA0000)
    assert hw(HASH_64K, 3, 0)[0] == HwKind.FAULT
    assert describe(PPC_P | 0x2C58000, radix=False) == "V table=0x2c58000"


def test_hash_tables_are_recognised_and_walked(tmp_path):
    """--reg pgd on a tree whose directory entries have no NLS selects the hash MMU's Linux tables
    (walked from KERN_VIRT_START); on a radix tree it selects radix; --kernel-config forces either."""
    from pagewalk.arch.ppc64 import HASH_64K
    from pagewalk.errors import UsageError

    vmalloc = 0xC008000000000000
    hb = PageTableBuilder(HASH_64K)
    hb.map(vmalloc + KB64, 0x2BA0000, KB64, PPC_KERNEL_ROX | PPC_A)
    hmem = hb.memory(tmp_path)
    t = resolve(hmem, "ppc64", regs={"pgd": hb.root})
    assert t.mode is HASH_64K and t.layout.ranges()[0][0] == vmalloc
    assert translate(hmem, t.mode, hb.root, vmalloc + KB64 + 8).pa == 0x2BA0008
    rb, rmem = _built(tmp_path, [(KVA, 0, MB2, PPC_KERNEL_RW)])
    assert resolve(rmem, "ppc64", regs={"pgd": rb.root}).mode.extra["mmu"] == "radix"
    assert resolve(rmem, "ppc64", regs={"pgd": rb.root}, kernel_config="hash").mode is HASH_64K
    with pytest.raises(UsageError):
        resolve(rmem, "ppc64", regs={"pgd": rb.root}, kernel_config="4level")
