"""An emulated s390x CPU (unicorn) judges translate(): same PA, same faults, for random DAT tables.

Unicorn 2.1.4's s390x is QEMU 5.0's TCG target: its DAT (target/s390x/mmu_helper.c,
mmu_translate_asce()) walks region-first/second/third, segment and page tables with the ASCE's
designation type and table length, the region entries' TF/TL, the invalid bits, the table-type
(translation-specification) checks and PTE bit 52. Recipe: CPU TLB mode (mapped memory is real
memory), the builder's image at its physical addresses, CR1 = CR7 = CR13 = the ASCE, PSW with DAT
on, primary-space mode, 64-bit addressing (mask 0x0400000180000000), and `lg %r1,0(%r2)` from a
code page identity-mapped through the same tables (instruction fetches are translated too). Every
data page holds its own physical address in each doubleword, so a load says where it read.

What it cannot judge: large leaves. No CPU model of this unicorn has EDAT-1 or EDAT-2 (facility
8/78; QEMU's TCG did not implement them, which is also why the oracle's kernel maps everything
with 4 KiB pages): mmu_translate_asce() ignores the FC bit and walks a 1 MiB segment entry or a
2 GiB region-third entry as a table pointer. The tests check exactly that, against translate()
with a mode built without EDAT (make_mode(..., edat1=False, edat2=False)); the 1 MiB / 2 GiB leaf
formats are covered against the PoP and the kernel in tests/test_s390_mode.py and
tests/test_s390_ptdump.py. Loads do not check DAT protection or IEP, so neither is judged here.
"""

from __future__ import annotations

import struct

import pytest

unicorn = pytest.importorskip("unicorn")

import builders_s390  # noqa: F401
from builders_s390 import (
    S390_FC,
    S390_I_REGION,
    S390_PAGE_I,
    S390_PTE_BIT52,
    S390_SEG_SW_RW,
    S390_SW_RW,
    S390Builder,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from unicorn import UC_ARCH_S390X, UC_MODE_BIG_ENDIAN, Uc, UcError
from unicorn import s390x_const as S

from pagewalk.arch.s390 import make_mode
from pagewalk.translate import translate

KB4, MB1 = 4096, 1 << 20
CODE = 0x10000  # VA == PA
LG = bytes.fromhex("e31020000004")  # lg %r1,0(%r2)
PSW_DAT_64 = 0x0400000180000000  # DAT (bit 5), EA+BA (bits 31-32), primary space, supervisor
DATA_BASE = 0x800000  # data pages follow the tables in the same image
BASE = 0x200000  # the tables


def add_data_pages(b: S390Builder, pages: set[int]) -> None:
    """Put the data pages into the builder's image (after finish(): no table is allocated later),
    each doubleword holding its own PA, so translate() and the CPU see the same memory."""
    if not pages:
        return
    top = max(pages) + KB4
    b.image.extend(bytes(max(0, top - b.end)))
    for page in pages:
        off = page - b.base
        b.image[off : off + KB4] = b"".join(struct.pack(">Q", page + k) for k in range(0, KB4, 8))


def emulate_load(b: S390Builder, asce: int, va: int) -> int | None:
    """The doubleword the CPU loads at `va` through the tables of `asce`, or None on an exception."""
    uc = Uc(UC_ARCH_S390X, UC_MODE_BIG_ENDIAN)
    uc.ctl_set_tlb_mode(unicorn.UC_TLB_CPU)
    end = -(-b.end // KB4) * KB4
    uc.mem_map(0, end)
    uc.mem_write(b.base, bytes(b.image))
    uc.mem_write(CODE, LG)
    for r in (S.UC_S390X_REG_CR1, S.UC_S390X_REG_CR7, S.UC_S390X_REG_CR13):
        uc.reg_write(r, asce)
    uc.reg_write(S.UC_S390X_REG_PSWM, PSW_DAT_64)
    uc.reg_write(S.UC_S390X_REG_R2, va)
    try:
        uc.emu_start(CODE, CODE + len(LG))
    except UcError:
        return None
    return uc.reg_read(S.UC_S390X_REG_R1)


def predict(mem, mode, root: int, va: int) -> int | None:
    t = translate(mem, mode, root, va)
    return t.pa if t.ok else None


def _builder(dt: int) -> S390Builder:
    b = S390Builder(make_mode(dt), base=BASE)
    b.map(CODE, CODE, KB4, S390_SW_RW)
    return b


def test_a_4k_page_loads_where_translate_says(tmp_path):
    """Through a region-third ASCE the CPU reads the PA translate() gives; an invalid PTE faults in both."""
    b = _builder(1)
    b.map(0x7000000000, DATA_BASE, KB4, S390_SW_RW)
    b.map(0x7000001000, DATA_BASE + KB4, KB4, S390_PAGE_I)
    b.finish()
    add_data_pages(b, {DATA_BASE, DATA_BASE + KB4})
    mode = make_mode(1, edat1=False, edat2=False, iep=False)
    mem = b.memory(tmp_path)
    assert emulate_load(b, b.root | 7, 0x7000000008) == predict(mem, mode, b.root, 0x7000000008) == DATA_BASE + 8
    assert emulate_load(b, b.root | 7, 0x7000001008) is None
    assert predict(mem, mode, b.root, 0x7000001008) is None
    mem.close()


def test_large_leaves_are_tables_to_a_cpu_without_edat(tmp_path):
    """This CPU has no EDAT: a 1 MiB segment leaf is walked as a page table, as translate() without EDAT predicts."""
    b = _builder(1)
    b.map(0x7000100000, DATA_BASE, MB1, S390_SEG_SW_RW)
    b.finish()
    add_data_pages(b, {DATA_BASE + k * KB4 for k in range(256)})
    mem = b.memory(tmp_path)
    va = 0x7000100010
    with_edat = translate(mem, make_mode(1), b.root, va)
    assert with_edat.ok and with_edat.pa == DATA_BASE + 0x10 and with_edat.page_size == MB1
    no_edat = make_mode(1, edat1=False, edat2=False, iep=False)
    t = translate(mem, no_edat, b.root, va)
    assert [s.kind for s in t.steps][:2] == ["table", "table"]
    got = emulate_load(b, b.root | 7, va)
    assert got == predict(mem, no_edat, b.root, va) and got != DATA_BASE + 0x10
    mem.close()


op_st = st.tuples(
    st.sampled_from(["map", "map", "map", "inv", "tt", "bit52", "window", "fc"]),
    st.integers(0, (1 << 42) - 1),
    st.integers(0, 3),
    st.integers(0, 3),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(
    dt=st.sampled_from([1, 2, 0]),
    asce_tl=st.integers(0, 3),
    ops=st.lists(op_st, min_size=1, max_size=10),
    probes=st.lists(st.integers(0, (1 << 42) - 1), max_size=4),
)
def test_translate_equals_the_emulated_cpu(tmp_path_factory, dt, asce_tl, ops, probes):
    """For random tables (invalid bits, wrong table types, PTE bit 52, TF/TL windows, ASCE TL) loads go where translate() says."""
    b = _builder(dt)
    top = 1 << b.mode.va_bits
    last = len(b.mode.levels) - 1
    vas, pages = [], set()
    ops = [(w, (va % top) & ~(KB4 - 1), a, c) for w, va, a, c in ops]
    for what, va, a, _ in ops:  # first the mappings, then the empty entries, then the damage
        if what == "map":
            pa = DATA_BASE + len(pages) * KB4
            try:
                b.map(va, pa, KB4, S390_SW_RW)
            except (ValueError, KeyError):
                continue
            pages.add(pa)
            vas.append(va + 8 * (a + 1))
    b.finish()
    for what, va, a, c in ops:
        if what == "map":
            continue
        level = {"bit52": last, "fc": last - 1, "window": max(0, last - 2)}.get(what, a % (last + 1))
        try:
            tbl, idx = b.slot(va, level)
        except (ValueError, KeyError):
            continue
        e = b.entry(tbl, idx)
        if what == "inv":
            e |= S390_PAGE_I if level == last else S390_I_REGION
        elif what == "tt" and level < last:
            e ^= 0x4
        elif what == "bit52":
            e |= S390_PTE_BIT52
        elif what == "fc":
            e |= S390_FC
        elif what == "window" and last >= 2:
            e = (e & ~0xC3) | (min(a, c) << 6) | max(a, c)
        b.set_entry(tbl, idx, e)
    add_data_pages(b, pages)
    mode = make_mode(dt, asce_tl, edat1=False, edat2=False, iep=False)
    d = tmp_path_factory.mktemp("s390uc")
    mem = b.memory(d)
    asce = b.root | (dt << 2) | asce_tl
    assume(predict(mem, mode, b.root, CODE) == CODE)  # the code page itself must stay mapped
    for va in vas + [(p % top) & ~7 for p in probes]:  # doubleword-aligned
        pa = predict(mem, mode, b.root, va)
        got = emulate_load(b, asce, va)
        why = (hex(va), translate(mem, mode, b.root, va).fault)
        if pa is None:
            assert got is None, why
        elif mem.contains(pa, 8):  # the doubleword at the PA (a data page's word is its own PA)
            assert got == mem.read_u64(pa, ">"), why
        else:  # below the tables (the code page) the CPU reads something, past the memory nothing
            assert (got is not None) == (pa < -(-b.end // KB4) * KB4), why
        if pa is not None and pa in {p + (va & 0xFFF) for p in pages}:
            assert got == pa
    mem.close()
