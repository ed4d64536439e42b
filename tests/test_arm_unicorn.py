"""An emulated 32-bit ARM MMU (unicorn, Cortex-A15) judges translate(): same PA, same faults, for
random short-descriptor and LPAE tables, with the TTBR0/TTBR1 split of TTBCR.N and T1SZ.

Recipe of /work/shared/reference/unicorn-mmu-notes.md: CPU TLB mode (mapped memory is physical),
the builders' images at their physical addresses, and the MMU switched on by the guest itself from
a code page mapped at its own address (VA == PA): `mcr`/`mcrr` to TTBR0, TTBR1, TTBCR (and DACR),
`dsb`, `mcr` SCTLR.M, `isb`, then `ldr r0, [r1]`. The CPU starts in SVC mode (PL1). Every data page
holds its own physical address in each word, so a load says where it read; a fault shows as an
exception (4: data abort) in a UC_HOOK_INTR hook, which stops the emulation.

What the load must do besides translating (left to the caller by translate(), applied here to the
leaf translate() found): short descriptors check the domain in DACR (0b00 and the reserved 0b10
fault, 0b11 manager skips the check, 0b01 client checks AP[2:0], which lets PL1 read for 1, 2, 3,
5, 6 and 7; B3.7.1, B3.12.3); with LPAE PL1 may always read. Access flag faults (LPAE AF = 0) are
translate()'s own.
"""

from __future__ import annotations

import struct

import pytest

unicorn = pytest.importorskip("unicorn")

import builders_arm  # noqa: F401  (registers the arm entry formats)
from builders import PageTableBuilder
from builders_arm import KB4, LD_KERNEL, MB1, MB2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unicorn import UC_ARCH_ARM, UC_HOOK_INTR, UC_MODE_ARM, Uc, UcError
from unicorn import arm_const as A

from pagewalk.arch import arm
from pagewalk.translate import translate

CODE = 0x2000_0000  # code, mapped at VA == PA
DATA_BASE = 0x4000_0000
GB1 = 1 << 30
SCTLR = 0x00C50078 | arm.SCTLR_M  # the reset value's RES1 bits, MMU on, AFE and TRE off
SHORT_CODE = (0xEE022F10, 0xEE026F30, 0xEE023F50, 0xEE034F10, 0xF57FF04F, 0xEE015F10, 0xF57FF06F, 0xE5910000)
LPAE_CODE = (0xEC432F02, 0xEC476F12, 0xEE024F50, 0xF57FF04F, 0xEE015F10, 0xF57FF06F, 0xE5910000)


def emulate_load(images: list[PageTableBuilder], regs: dict[int, int], code: tuple[int, ...], va: int,
                 data_pages: set[int]) -> int | None:
    """The word the CPU loads at `va` at PL1 once the guest code has set up the MMU, or None on a fault."""
    uc = Uc(UC_ARCH_ARM, UC_MODE_ARM)
    uc.ctl_set_cpu_model(A.UC_CPU_ARM_CORTEX_A15)
    uc.ctl_set_tlb_mode(unicorn.UC_TLB_CPU)
    for b in images:
        start, end = b.base, -(-b.end // KB4) * KB4
        uc.mem_map(start, end - start)
        uc.mem_write(b.base, bytes(b.image))
    uc.mem_map(CODE, KB4)
    uc.mem_write(CODE, b"".join(struct.pack("<I", c) for c in code))
    for page in data_pages:
        uc.mem_map(page, KB4)
        uc.mem_write(page, b"".join(struct.pack("<I", (page + k) & 0xFFFFFFFF) for k in range(0, KB4, 4)))
    for reg, value in regs.items():
        uc.reg_write(reg, value)
    uc.reg_write(A.UC_ARM_REG_R1, va)
    faults: list[int] = []

    def on_intr(uc_, intno, _):
        faults.append(intno)
        uc_.emu_stop()

    uc.hook_add(UC_HOOK_INTR, on_intr)
    try:
        uc.emu_start(CODE, CODE + 4 * len(code))
    except UcError:
        return None
    return None if faults else uc.reg_read(A.UC_ARM_REG_R0)


def _free(b: PageTableBuilder, table: int, first: int, count: int) -> bool:
    return all(b.entry(table, first + k) == 0 for k in range(count))


# -- short descriptors ----------------------------------------------------------------------------------


@st.composite
def short_tables(draw, n: int):
    """TTBR0 (and, with N > 0, TTBR1) tables with sections, supersections, small and large pages in random domains."""
    lo = arm.short_mode(n, linux=False)
    hi = arm.short_mode(n, upper=True, linux=False)
    b0 = PageTableBuilder(lo, base=0x100000)
    b1 = PageTableBuilder(hi, base=0x800000) if n else None
    b0.map(CODE, CODE, MB1, arm.SD_SECT_AP0)  # domain 0, PL1 RW: the code runs
    dacr = 0b01 | sum(draw(st.sampled_from([0b00, 0b01, 0b11, 0b10])) << (2 * d) for d in range(1, 16))
    split = 1 << (32 - n)
    probes: list[int] = []
    for _ in range(draw(st.integers(2, 10))):
        kind = draw(st.sampled_from(["section", "supersection", "small", "large", "fault"]))
        region = draw(st.sampled_from([0x1, 0x3F, 0xC0, 0xE0, 0xFF] if n == 0 else [0x1, 0x3F, 0xC0, 0xFF]))
        va = (region << 24) + draw(st.integers(0, 15)) * MB1
        if va >> 24 == CODE >> 24:
            continue
        b = b0 if va < split else b1
        l1, i1 = b.slot(va, 0)
        dom = draw(st.integers(0, 15))
        ap = draw(st.integers(0, 7))
        xn = draw(st.booleans())
        pa = DATA_BASE + draw(st.integers(0, 63)) * (16 * MB1)
        if kind == "section" and _free(b, l1, i1, 1):
            e = pa | 2 | (ap & 3) << 10 | (ap >> 2) << 15 | dom << 5 | (arm.SD_SECT_XN if xn else 0)
            b.set_entry(l1, i1, e | draw(st.sampled_from([0, 1])))  # 0b11: a section with PXN
            size = MB1
        elif kind == "supersection":
            va &= ~(16 * MB1 - 1)
            l1, i1 = b.slot(va, 0)
            if not _free(b, l1, i1, 16):
                continue
            e = pa | 2 | arm.SD_SECT_SUPER | (ap & 3) << 10 | (ap >> 2) << 15
            for k in range(16):
                b.set_entry(l1, i1 + k, e)
            size = 16 * MB1
        elif kind in ("small", "large"):
            size = KB4 if kind == "small" else 64 * 1024
            va += draw(st.integers(0, MB1 // size - 1)) * size
            if b.entry(l1, i1) & 3 not in (0, 1):
                continue
            l2, i2 = b.slot(va, 1, create=True)
            b.set_entry(l1, i1, (b.entry(l1, i1) & ~0x1E0) | dom << 5)
            if not _free(b, l2, i2, 1 if kind == "small" else 16):
                continue
            bits = (ap & 3) << 4 | (ap >> 2) << 9
            if kind == "small":
                b.set_entry(l2, i2, (pa + draw(st.integers(0, 255)) * KB4) | 2 | bits | (1 if xn else 0))
            else:
                e = (pa + draw(st.integers(0, 15)) * size) | 1 | bits | (arm.SD_LARGE_XN if xn else 0)
                for k in range(16):
                    b.set_entry(l2, i2 + k, e)
        else:  # an unmapped neighbour: probe it
            size = MB1
        probes += [va + draw(st.integers(0, size // 4 - 1)) * 4, va + size - 4]
        if va + size < 1 << 32:
            probes.append(va + size)
    return b0, b1, dacr, probes


def predict_short(b0, b1, dacr: int, n: int, va: int, mems) -> int | None:
    """translate()'s PA, or None where the load faults: translation, then the domain and AP[2:0] check."""
    b, mem = (b0, mems[0]) if va < 1 << (32 - n) else (b1, mems[1])
    t = translate(mem, b.mode, b.root, va)
    if not t.ok:
        return None
    field = (dacr >> (2 * ((t.perm >> arm.PERM_DOMAIN_SHIFT) & 0xF))) & 3
    if field in (0b00, 0b10):
        return None
    ap = (4 if t.perm & arm.PERM_AP2 else 0) | (2 if t.perm & arm.PERM_AP1 else 0) | (1 if t.perm & arm.PERM_AP0 else 0)
    if field == 0b01 and ap in (0, 4):
        return None
    return t.pa


@pytest.mark.parametrize("n", [0, 2])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_short_descriptors_load_where_translate_says(tmp_path, n, data):
    """For random short-descriptor tables and DACR, the CPU faults exactly where translate() (plus domain/AP) says, else reads its PA."""
    b0, b1, dacr, probes = data.draw(short_tables(n))
    mems = [b0.memory(tmp_path), b1.memory(tmp_path) if b1 else None]
    regs = {A.UC_ARM_REG_R2: b0.root, A.UC_ARM_REG_R6: (b1 or b0).root, A.UC_ARM_REG_R3: n,
            A.UC_ARM_REG_R4: dacr, A.UC_ARM_REG_R5: SCTLR}
    expect = {va: predict_short(b0, b1, dacr, n, va, mems) for va in probes}
    pages = {pa & ~(KB4 - 1) for pa in expect.values() if pa is not None}
    for va, pa in expect.items():
        got = emulate_load([b for b in (b0, b1) if b], regs, SHORT_CODE, va, pages)
        assert got == pa, f"N={n} va {va:#x}: cpu {got!r} vs translate {pa!r}"


# -- LPAE -------------------------------------------------------------------------------------------------


@st.composite
def lpae_tables(draw, t1sz: int):
    """TTBR0 (T0SZ = 0) and, with T1SZ = 2, TTBR1 tables: 1 GiB and 2 MiB blocks, pages, and broken entries."""
    b0 = PageTableBuilder(arm.lpae_mode(0, linux=False), base=0x100000)
    b1 = PageTableBuilder(arm.lpae_mode(t1sz, upper=True, linux=False), base=0x800000) if t1sz else None
    b0.map(CODE, CODE, MB2, LD_KERNEL)
    split = (1 << 32) - (1 << (32 - t1sz)) if t1sz else 1 << 32
    probes: list[int] = []
    for _ in range(draw(st.integers(2, 10))):
        size = draw(st.sampled_from([GB1, MB2, KB4, KB4]))
        va = draw(st.sampled_from([1, 2, 3])) * GB1 + draw(st.integers(0, 3)) * GB1 // 4
        if size != GB1:
            va += draw(st.integers(0, min(GB1 // 4, 64 * MB2) // size - 1)) * size
        b = b0 if va < split else b1
        if size == GB1 and (b is b1 or va % GB1):
            continue
        pa = DATA_BASE + draw(st.integers(0, 15)) * max(size, MB2) if size != GB1 else GB1 * draw(st.integers(1, 3))
        flags = LD_KERNEL | draw(st.sampled_from([0, arm.LD_AP1, arm.LD_AP2, arm.LD_XN | arm.LD_PXN]))
        try:
            b.map(va, pa, size, flags)
        except (ValueError, KeyError):
            continue
        level = b.level_for(size)
        table, idx = b.slot(va, level)
        e = b.entry(table, idx)
        broken = draw(st.sampled_from(["none", "none", "none", "no-af", "invalid", "reserved"]))
        if broken == "no-af":
            e &= ~arm.LD_AF
        elif broken == "invalid":
            e &= ~arm.LD_VALID
        elif broken == "reserved" and size == KB4:
            e &= ~arm.LD_TABLE_BIT  # 0b01 at the third level
        b.set_entry(table, idx, e)
        if level and draw(st.booleans()):  # hierarchical controls on the table above: no effect on PL1 reads
            up, ui = b.slot(va, level - 1)
            b.set_entry(up, ui, b.entry(up, ui) | arm.LD_AP_TABLE0 | arm.LD_AP_TABLE1 | arm.LD_XN_TABLE)
        probes += [va + draw(st.integers(0, min(size, 1 << 20) // 4 - 1)) * 4, va + size - 4, va + size]
    return b0, b1, probes


@pytest.mark.parametrize("t1sz", [0, 2])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_lpae_loads_where_translate_says(tmp_path, t1sz, data):
    """For random LPAE tables (T1SZ 0 or 2), the CPU faults exactly where translate() says, else reads its PA."""
    b0, b1, probes = data.draw(lpae_tables(t1sz))
    mems = [b0.memory(tmp_path), b1.memory(tmp_path) if b1 else None]
    split = (1 << 32) - (1 << (32 - t1sz)) if t1sz else 1 << 32
    regs = {A.UC_ARM_REG_R2: b0.root, A.UC_ARM_REG_R3: 0, A.UC_ARM_REG_R6: (b1 or b0).root, A.UC_ARM_REG_R7: 0,
            A.UC_ARM_REG_R4: arm.TTBCR_EAE | t1sz << arm.TTBCR_T1SZ_SHIFT, A.UC_ARM_REG_R5: SCTLR}
    expect = {}
    for va in probes:
        va &= 0xFFFFFFFF
        b, mem = (b0, mems[0]) if va < split else (b1, mems[1])
        t = translate(mem, b.mode, b.root, va)
        expect[va] = t.pa if t.ok else None
    pages = {pa & ~(KB4 - 1) for pa in expect.values() if pa is not None}
    for va, pa in expect.items():
        got = emulate_load([b for b in (b0, b1) if b], regs, LPAE_CODE, va, pages)
        assert got == (None if pa is None else pa & 0xFFFFFFFF), f"T1SZ={t1sz} va {va:#x}: cpu {got!r} vs translate {pa!r}"
