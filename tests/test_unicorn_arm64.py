"""An emulated arm64 MMU (unicorn) judges translate(): same output address, same faults, for random
VMSAv8-64 stage-1 tables of every granule, several input sizes and both TTBR halves, probed with
EL1 and EL0 reads, writes and instruction fetches.

Recipe (/work/shared/reference/unicorn-mmu-notes.md): CPU TLB mode (mapped memory is physical),
the builder's image at its physical addresses, and the MMU turned on from guest code
(`msr tcr_el1/ttbr0_el1/ttbr1_el1/mair_el1/sctlr_el1; dsb; isb`) on a code page that TTBR0 maps
at its own address. Accesses: `ldr`/`str` (EL1), `ldtr`/`sttr` (EL1 making EL0 accesses, Arm ARM
C6.2 LDTR), `blr` (EL1 fetch) and `eret` to EL0t (EL0 fetch). Every 8-byte slot of a data page
holds `movz x0, #id; movk x0, #id >> 16, lsl #16` for an id unique to that slot, so a load returns
the slot's two instructions and a fetch leaves its id in x0: either says which PA was used.

Facts about the emulated CPU (unicorn 2.1.4 = QEMU 5.0 TCG, target/arm/helper.c
get_phys_addr_lpae(); each deviation is pinned by a test at the end of this file):
* unicorn resets SCR_EL3.RW (and HCR_EL2.RW) to 0, so QEMU's walker (arm_el_is_aa64(env, 1)
  false) reads the tables in the AArch32 LPAE format: TTBCR.T0SZ is TCR bits 2:0 and the input is
  32 bits, which is why only some 4K 30/39-bit spaces worked before. Setting SCR_EL3.RW | NS and
  HCR_EL2.RW makes EL1 an AArch64 regime: then every granule, TxSZ 16..39 and both TTBRs work,
  with the default and the UC_CPU_ARM64_MAX models alike;
* QEMU 5.0 clamps TxSZ to 16..39 (no FEAT_LVA/FEAT_TTST) and has no FEAT_LPA/FEAT_LPA2 (TCR.DS
  is ignored: a 52-bit table is walked from level 0), and it drops descriptor OA bits above 47
  without an address size fault (TCR.IPS is not checked): the random tables use 25..48-bit
  inputs and OAs below 2^48 with TCR.IPS = 48 bits (52-bit formats and address size faults are
  covered against the specification in tests/test_arm64_mode.py);
* it takes bits[1:0] = 0b01 as a block at every level above the last (also 4K level 0, 16K
  level 1, 64K level 1, which the architecture makes translation faults): the random tables put
  blocks only where D8.3 allows them; the deviation is pinned by test_emulator_blocks_at_every_level;
* it ignores the contiguous bit (a TLB hint), so the random contiguous runs are consistent ones;
* the exception is not delivered (no ESR_EL1/FAR_EL1, so the fault's kind and level are not
  visible): the interrupt hook sees 3 (prefetch abort) or 4 (data abort); after an `eret` to EL0
  a PSTATE write does not bring the CPU back to EL1 (QEMU's cached flags stay EL0's), so a fresh
  CPU follows every EL0 fetch, and runs stop by instruction count (an `until` address reached at
  EL0 raises a spurious undefined-instruction exception).

translate() leaves the access flag and the access permissions to the caller, so the prediction
applies them to the leaf and the effective permission word (D8.4, PAN and WXN off, TCR.HA 0):
AF = 0 faults; EL1 writes need !AP[2]; EL0 data needs AP[1] (and !AP[2] to write); EL1 fetches need !PXN
and not EL0-writable (EL0-writable memory is always PXN); EL0 fetches need !UXN.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import pytest

unicorn = pytest.importorskip("unicorn")

import builders_arm64  # noqa: F401  (registers the arm64 entry formats)
from builders import PageTableBuilder
from builders_arm64 import (
    AP_TABLE_NO_EL0,
    AP_TABLE_RDONLY,
    PTE_AF,
    PTE_CONT,
    PTE_NG,
    PTE_PXN,
    PTE_RDONLY,
    PTE_SHARED,
    PTE_USER,
    PTE_UXN,
    PTE_VALID,
    PXN_TABLE,
    UXN_TABLE,
    attr,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unicorn import UC_ARCH_ARM64, UC_HOOK_INTR, UC_MODE_ARM, Uc, UcError
from unicorn import arm64_const as A

from pagewalk.arch import arm64
from pagewalk.arch.arm64 import PTE_DBM, contiguous_entries, encode_oa
from pagewalk.translate import translate

K = 1 << 10
TOP = 1 << 64
CODE = 0x10000  # code page: VA == PA through TTBR0, 64K aligned for every granule
TABLES = 0x0100_0000  # the tested tables
CODE_TABLES = 0x0800_0000  # TTBR0 tables of the code when TTBR1 is tested
PA_MIN = 1 << 32  # leaves point at or above this PA (the tables and the code are below)
PA_BITS = 48  # TCR.IPS = 0b101; QEMU 5.0 has no 52-bit OAs
PREFETCH_ABORT, DATA_ABORT = 3, 4
SCR_EL3 = (1, 1, 3, 6, 0)  # CP_REG (CRn, CRm, op0, op1, op2)
HCR_EL2 = (1, 1, 3, 4, 0)
SCR_NS, SCR_RW, HCR_RW = 1 << 0, 1 << 10, 1 << 31
TG0 = {4 * K: 0b00, 64 * K: 0b01, 16 * K: 0b10}  # D19 TCR_EL1.TG0
TG1 = {16 * K: 0b01, 4 * K: 0b10, 64 * K: 0b11}  # TCR_EL1.TG1 (a different encoding)
TCR_EPD1 = 1 << 23
TCR_IPS_48 = 0b101 << 32


def _ins(*words: int) -> bytes:
    return b"".join(struct.pack("<I", w) for w in words)


# A64 encodings (Arm ARM C6): MSR <sysreg>, Xt = 0xd5100000 | o0<<19 | op1<<16 | CRn<<12 | CRm<<8 | op2<<5 | Rt
SETUP = _ins(
    0xD5182042,  # msr tcr_el1, x2
    0xD5182003,  # msr ttbr0_el1, x3
    0xD5182026,  # msr ttbr1_el1, x6
    0xD518A204,  # msr mair_el1, x4
    0xD5181005,  # msr sctlr_el1, x5
    0xD5033F9F,  # dsb sy
    0xD5033FDF,  # isb
)
STUBS = {  # access -> (offset in the code page, instructions); x1 = VA, x7 = value to store
    "r1": (0x100, _ins(0xF9400020)),  # ldr x0, [x1]
    "w1": (0x110, _ins(0xF9000027)),  # str x7, [x1]
    "r0": (0x120, _ins(0xF8400820)),  # ldtr x0, [x1]
    "w0": (0x130, _ins(0xF8000827)),  # sttr x7, [x1]
    "x1": (0x140, _ins(0xD63F0020)),  # blr x1
    "x0": (0x150, _ins(0xD5184021, 0xD518401F, 0xD69F03E0)),  # msr elr_el1, x1; msr spsr_el1, xzr; eret
}
ACCESSES = tuple(STUBS)


def slot_words(sid: int) -> int:
    """The 8 bytes of a data slot: `movz x0, #sid[15:0]; movk x0, #sid[31:16], lsl #16`."""
    movz = 0xD2800000 | ((sid & 0xFFFF) << 5)
    movk = 0xF2A00000 | (((sid >> 16) & 0xFFFF) << 5)
    return movz | (movk << 32)


class Machine:
    """One arm64 CPU over the tested tables (and the code's TTBR0 tables), MMU on, at EL1h."""

    def __init__(self, b: PageTableBuilder, code: PageTableBuilder | None, tcr: int, data_pas: set[int],
                 *, el1_aarch64: bool = True) -> None:
        self.args = (b, code, tcr, data_pas, el1_aarch64)
        self.granule = b.mode.extra["granule"]
        self.stores = 0
        self._boot()

    def _boot(self) -> None:
        """A fresh CPU with the MMU on, at EL1h (writing PSTATE does not take the CPU back from
        EL0: QEMU's cached translation flags stay those of EL0)."""
        b, code, tcr, data_pas, el1_aarch64 = self.args
        self.at_el0 = False
        uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        uc.ctl_set_tlb_mode(unicorn.UC_TLB_CPU)
        uc.mem_map(CODE, 64 * K)
        uc.mem_write(CODE, SETUP)
        for off, words in STUBS.values():
            uc.mem_write(CODE + off, words)
        for img in (b, code):
            if img is not None:
                lo, hi = img.base & ~0xFFFF, -(-img.end // 0x10000) * 0x10000
                uc.mem_map(lo, hi - lo)
                uc.mem_write(img.base, bytes(img.image))
        # data pages: every predicted PA's page; each slot's id is (page number << 13) | slot
        self.page_ids: dict[int, int] = {}
        g = self.granule
        for pa in sorted(data_pas):
            page = pa & ~(g - 1)
            if page in self.page_ids:
                continue
            self.page_ids[page] = len(self.page_ids) + 1
            uc.mem_map(page, g)
            base = self.page_ids[page] << 13
            uc.mem_write(page, b"".join(struct.pack("<Q", slot_words(base | k)) for k in range(g // 8)))
        self.intr: list[int] = []

        def on_intr(u: Uc, intno: int, _data: object) -> None:
            self.intr.append(intno)
            u.emu_stop()

        uc.hook_add(UC_HOOK_INTR, on_intr)
        # EL1 (and EL2) in AArch64 state: without SCR_EL3.RW QEMU walks with the AArch32 LPAE format
        if el1_aarch64:
            uc.reg_write(A.UC_ARM64_REG_CP_REG, (*SCR_EL3, SCR_RW | SCR_NS))
            uc.reg_write(A.UC_ARM64_REG_CP_REG, (*HCR_EL2, HCR_RW))
        ttbr0 = code.root if code is not None else b.root
        ttbr1 = b.root if code is not None else 0
        for reg, value in ((A.UC_ARM64_REG_X2, tcr), (A.UC_ARM64_REG_X3, ttbr0), (A.UC_ARM64_REG_X6, ttbr1),
                           (A.UC_ARM64_REG_X4, (1 << 64) - 1), (A.UC_ARM64_REG_X5, 1)):  # MAIR: all Normal WB; SCTLR.M
            uc.reg_write(reg, value)
        uc.emu_start(CODE, CODE + len(SETUP))
        assert not self.intr, f"the MMU set-up faulted ({self.intr})"
        self.uc = uc

    def slot_value(self, pa: int) -> int:
        """What the 8-byte slot at `pa` (8-aligned) holds."""
        g = self.granule
        return slot_words((self.page_ids[pa & ~(g - 1)] << 13) | ((pa & (g - 1)) >> 3))

    def access(self, kind: str, va: int) -> tuple[str, int]:
        """("fault", exception number) or ("ok", value): the loaded word, the fetched slot's id, or
        the PA the store wrote (found by reading back the predicted one, see check())."""
        if self.at_el0:
            self._boot()
        uc = self.uc
        self.intr.clear()
        uc.reg_write(A.UC_ARM64_REG_X1, va)
        uc.reg_write(A.UC_ARM64_REG_X0, 0)
        self.stores += 1
        uc.reg_write(A.UC_ARM64_REG_X7, 0xA5A5_0000_0000_0000 | self.stores)
        off, words = STUBS[kind]
        # stop by instruction count: the stub, then the slot's movz/movk for fetches (an `until`
        # address at EL0 ends in a spurious undefined-instruction exception in unicorn 2.1.4)
        count = len(words) // 4 + (2 if kind[0] == "x" else 0)
        self.at_el0 = kind == "x0"
        try:
            uc.emu_start(CODE + off, CODE + 0xFF0, count=count)
        except UcError as e:
            return "error", int(e.errno)
        if self.intr:
            return "fault", self.intr[0]
        return "ok", uc.reg_read(A.UC_ARM64_REG_X0)


def allowed(kind: str, perm: int) -> bool:
    """Whether an access is permitted by the effective permission word (D8.4.1, PAN and WXN off)."""
    user, ro = bool(perm & PTE_USER), bool(perm & PTE_RDONLY)
    return {
        "r1": True,
        "w1": not ro,
        "r0": user,
        "w0": user and not ro,
        "x1": not perm & PTE_PXN and not (user and not ro),  # EL0-writable memory is PXN at EL1
        "x0": not perm & PTE_UXN,
    }[kind]


def predict(mem, mode, root: int, kind: str, va: int) -> int | None:
    """translate()'s PA for the access, or None where it must fault (translation, AF, permission)."""
    t = translate(mem, mode, root, va)
    if not t.ok:
        return None
    if not t.steps[-1].entry & PTE_AF:
        return None  # access flag fault (TCR.HA = 0)
    return t.pa if allowed(kind, t.perm) else None


# -- random tables -------------------------------------------------------------------------------

MODES = [  # (granule, input size): 1 to 4 levels, partial and full top tables
    (4 * K, 48), (4 * K, 39), (4 * K, 36), (4 * K, 30),
    (16 * K, 48), (16 * K, 47), (16 * K, 40), (16 * K, 36),
    (64 * K, 48), (64 * K, 42), (64 * K, 36), (64 * K, 29),
]

_leaf_attrs = st.tuples(
    st.sampled_from([PTE_AF] * 5 + [0]),
    st.sampled_from([0, PTE_USER]),
    st.sampled_from([0, PTE_RDONLY]),
    st.sampled_from([0, PTE_PXN]),
    st.sampled_from([0, PTE_UXN]),
    st.sampled_from([0, PTE_NG, PTE_SHARED, PTE_DBM, PTE_NG | PTE_SHARED]),
    st.integers(0, 7).map(attr),
).map(sum)
_table_attrs = st.sampled_from([0, 0, AP_TABLE_RDONLY, AP_TABLE_NO_EL0, PXN_TABLE, UXN_TABLE,
                                AP_TABLE_RDONLY | AP_TABLE_NO_EL0 | PXN_TABLE | UXN_TABLE])


def _tcr(mode, upper: bool) -> int:
    g = mode.extra["granule"]
    tsz = 64 - mode.va_bits
    hpd = bool(mode.extra["hpd"])
    tbi = mode.tbi
    if upper:  # TTBR0: the code's fixed 4K 39-bit space
        return (25 | TG0[4 * K] << 14 | tsz << 16 | TG1[g] << 30 | TCR_IPS_48
                | (arm64.TCR_HPD1 if hpd else 0) | (arm64.TCR_TBI1 if tbi else 0))
    return (tsz | TG0[g] << 14 | 25 << 16 | TCR_EPD1 | TG1[4 * K] << 30 | TCR_IPS_48
            | (arm64.TCR_HPD0 if hpd else 0) | (arm64.TCR_TBI0 if tbi else 0))


def _code_page(mode) -> int:
    """The code page's descriptor: EL1 RW, EL1-executable, UXN."""
    return encode_oa(CODE) | PTE_VALID | 2 | PTE_AF | PTE_UXN | attr(0)


@st.composite
def tables(draw, granule: int, va_bits: int, upper: bool):
    """Random leaves at every level that allows them (some invalid, reserved, without AF, in
    contiguous runs), random hierarchical controls on tables, and probes (access, VA)."""
    hpd = draw(st.booleans())
    tbi = draw(st.booleans())
    mode = arm64.make_mode(granule, va_bits, upper=upper, pa_bits=PA_BITS, hpd=hpd, tbi=tbi)
    b = PageTableBuilder(mode, base=TABLES)
    n = len(mode.levels)
    last = n - 1
    code = None
    protected: set[tuple[int, int]] = set()
    if upper:
        code = PageTableBuilder(arm64.make_mode(4 * K, 39, upper=False, pa_bits=PA_BITS), base=CODE_TABLES)
        t, i = code.slot(CODE, 2, create=True)
        code.set_entry(t, i, _code_page(code.mode))
    else:
        for lvl in range(n):
            protected.add(b.slot(CODE, lvl, create=True))
        t, i = b.slot(CODE, last)
        b.set_entry(t, i, _code_page(mode))
    leaf_levels = sorted(set(mode.extra["block_levels"]) | {last})
    probes: list[tuple[str, int]] = []
    base = mode.canonical_va(0)
    for _ in range(draw(st.integers(2, 7))):
        level = draw(st.sampled_from(leaf_levels))
        lvl = mode.levels[level]
        size = lvl.entry_span
        va = base
        for j in range(level + 1):
            ent = mode.levels[j].entries
            idx = draw(st.sampled_from(sorted({0, 1, 2, ent // 2, ent - 1} & set(range(ent)))) | st.integers(0, ent - 1))
            va += idx << mode.levels[j].shift
        try:
            table, idx = b.slot(va, level, create=True)
        except (ValueError, KeyError):
            continue  # a leaf above this VA already
        ncont = contiguous_entries(granule, mode.extra["start_level"] + level)
        cont = ncont and draw(st.integers(0, 3)) == 0
        first, count = ((idx // ncont) * ncont, ncont) if cont else (idx, 1)
        if any((table, k) in protected for k in range(first, first + count)):
            continue
        span_pa = size * count
        pa0 = draw(st.integers(max(1, PA_MIN // span_pa), (1 << PA_BITS) // span_pa - 1)) * span_pa
        flags = draw(_leaf_attrs) | (PTE_CONT if cont else 0)
        kind = draw(st.sampled_from(["ok"] * 6 + ["invalid", "reserved"]))
        type_bits = 0b11 if level == last else 0b01
        if kind == "invalid":
            type_bits = 0b10 if level < last else 0b00
        elif kind == "reserved" and level == last:
            type_bits = 0b01
        for k in range(count):
            b.set_entry(table, first + k, encode_oa(pa0 + k * size) | flags | type_bits)
        va_first = va - (idx - first) * size
        for _ in range(draw(st.integers(1, 3))):
            off = draw(st.integers(0, span_pa // 8 - 1)) * 8
            access = draw(st.sampled_from(ACCESSES))
            if access[0] == "x" and (off + 8) % granule == 0:
                off -= 8  # the CPU fetches ahead: keep the slot's successor in the same (mapped) page
            probes.append((access, va_first + off))
        probes.append((draw(st.sampled_from(ACCESSES)), (va_first + span_pa) % TOP))  # often unmapped
        # hierarchical controls on the table entries above the leaf (never on the code's path)
        for j in range(level):
            t, i = b.slot(va, j)
            if (t, i) not in protected:
                b.set_entry(t, i, b.entry(t, i) | draw(_table_attrs))
    if tbi:  # tagged data addresses: bits 63:56 are ignored
        probes = [(k, (va & ((1 << 56) - 1)) | (draw(st.integers(0, 255)) << 56) if k[0] in "rw" else va)
                  for k, va in probes]
    return b, code, probes


@pytest.mark.parametrize("upper", [False, True], ids=["ttbr0", "ttbr1"])
@pytest.mark.parametrize("granule,va_bits", MODES, ids=[f"{g >> 10}k-{v}bit" for g, v in MODES])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_emulated_cpu_accesses_where_translate_says(granule, va_bits, upper, data):
    """For random tables and EL0/EL1 reads, writes and fetches, the CPU faults exactly where
    translate() (plus AF and access permissions) says, and otherwise uses translate()'s PA."""
    b, code, probes = data.draw(tables(granule, va_bits, upper))
    mode = b.mode
    # every page a translation reaches is mapped, so that a disagreement shows as a wrong value
    # rather than an unmapped access; probes that reach the code page (below PA_MIN) are dropped
    pas: set[int] = set()
    expect = []
    with tempfile.TemporaryDirectory() as tmp:
        mem = b.memory(Path(tmp))
        for kind, va in probes:
            t = translate(mem, mode, b.root, va)
            if t.ok and t.pa < PA_MIN:
                continue
            if t.ok:
                pas.add(t.pa)
            expect.append((kind, va, predict(mem, mode, b.root, kind, va)))
        mem.close()
    m = Machine(b, code, _tcr(mode, upper), pas)
    for kind, va, pa in expect:
        got = m.access(kind, va)
        where = f"{mode.name} {kind} va {va:#x}"
        if pa is None:
            want = PREFETCH_ABORT if kind[0] == "x" else DATA_ABORT
            assert got == ("fault", want), f"{where}: cpu {got} but translate() says it faults"
            continue
        assert got[0] == "ok", f"{where}: cpu {got} but translate() says PA {pa:#x}"
        if kind[0] == "r":
            assert got[1] == m.slot_value(pa & ~7), f"{where}: cpu read {got[1]:#x}, not the slot at {pa:#x}"
        elif kind[0] == "x":
            assert slot_words(got[1]) == m.slot_value(pa), f"{where}: cpu ran slot {got[1]:#x}, not {pa:#x}"
        else:
            stored = struct.unpack("<Q", m.uc.mem_read(pa & ~7, 8))[0]
            assert stored == 0xA5A5_0000_0000_0000 | m.stores, f"{where}: cpu did not store at {pa:#x}"
            m.uc.mem_write(pa & ~7, struct.pack("<Q", m.slot_value(pa & ~7)))


# -- the emulator's own behaviour, pinned ----------------------------------------------------------


def _one_page_machine(granule: int, va_bits: int, scr: bool):
    """A TTBR0 space with the code page and one data page at VA 0x40000 (PA 2^32); (machine or the set-up fault)."""
    mode = arm64.make_mode(granule, va_bits, upper=False, pa_bits=PA_BITS)
    b = PageTableBuilder(mode, base=TABLES)
    last = len(mode.levels) - 1
    t, i = b.slot(CODE, last, create=True)
    b.set_entry(t, i, _code_page(mode))
    va = 4 * 64 * K
    t, i = b.slot(va, last, create=True)
    b.set_entry(t, i, encode_oa(PA_MIN) | 3 | PTE_AF | attr(0))
    try:
        return Machine(b, None, _tcr(mode, False), {PA_MIN}, el1_aarch64=scr), va
    except AssertionError as e:
        return str(e), va


def test_reset_state_needs_scr_el3_rw():
    """With unicorn's reset SCR_EL3.RW = 0 a 4K 48-bit TTBR0 space faults on the first fetch (AArch32
    LPAE walk of a 32-bit input); with SCR_EL3.RW and HCR_EL2.RW it reads where translate() says."""
    broken, _ = _one_page_machine(4 * K, 48, scr=False)
    assert isinstance(broken, str) and f"[{PREFETCH_ABORT}]" in broken
    m, va = _one_page_machine(4 * K, 48, scr=True)
    assert m.access("r1", va + 0x18) == ("ok", m.slot_value(PA_MIN + 0x18))


@pytest.mark.parametrize("granule,va_bits,level", [(4 * K, 48, 0), (16 * K, 48, 1), (64 * K, 48, 0)])
def test_emulator_blocks_at_every_level(tmp_path, granule, va_bits, level):
    """bits[1:0] = 0b01 where D8.3 has no block (4K level 0, 16K level 1, 64K level 1): translate()
    reports a translation fault, QEMU 5.0 maps a block of that level's size (a known emulator deviation)."""
    mode = arm64.make_mode(granule, va_bits, upper=False, pa_bits=PA_BITS)
    b = PageTableBuilder(mode, base=TABLES)
    last = len(mode.levels) - 1
    t, i = b.slot(CODE, last, create=True)
    b.set_entry(t, i, _code_page(mode))
    size = mode.levels[level].entry_span
    va = (mode.levels[level].entries - 1) * size  # the last entry of the level: away from the code
    t, i = b.slot(va, level, create=True)
    b.set_entry(t, i, encode_oa(0) | 1 | PTE_AF | attr(0))  # a "block" at PA 0: the code page is inside
    tr = translate(b.memory(tmp_path), mode, b.root, va + CODE)
    assert not tr.ok and "0b01" in tr.fault
    m = Machine(b, None, _tcr(mode, False), set())
    assert m.access("r1", va + CODE) == ("ok", struct.unpack("<Q", SETUP[:8])[0])


def test_emulator_has_no_address_size_fault(tmp_path):
    """An output address beyond TCR.IPS (40 bits here): translate() reports an address size fault,
    QEMU 5.0 reads the address anyway (it only masks descriptors to 48 bits)."""
    mode = arm64.make_mode(4 * K, 39, upper=False, pa_bits=40)
    b = PageTableBuilder(mode, base=TABLES)
    t, i = b.slot(CODE, 2, create=True)
    b.set_entry(t, i, _code_page(mode))
    va, pa = 0x4000_0000, 1 << 44
    t, i = b.slot(va, 2, create=True)
    b.set_entry(t, i, encode_oa(pa) | 3 | PTE_AF | attr(0))
    tr = translate(b.memory(tmp_path), mode, b.root, va)
    assert not tr.ok and "address size fault" in tr.fault
    tcr = _tcr(mode, False) & ~(7 << 32) | (0b010 << 32)  # IPS = 40 bits
    m = Machine(b, None, tcr, {pa})
    assert m.access("r1", va + 8) == ("ok", m.slot_value(pa + 8))


def test_emulator_has_no_52_bit_inputs(tmp_path):
    """FEAT_LPA2 (TCR.DS, T0SZ 12): translate() walks the 5-level 52-bit table; QEMU 5.0 clamps T0SZ
    to 16 and ignores DS, so it starts the walk at level 0 with the level -1 table: even the code
    page's first fetch is a prefetch abort."""
    mode = arm64.make_mode(4 * K, 52, upper=False, ds=True, pa_bits=52)
    b = PageTableBuilder(mode, base=TABLES)
    t, i = b.slot(CODE, 4, create=True)
    b.set_entry(t, i, _code_page(mode))
    va = 1 << 50
    t, i = b.slot(va, 4, create=True)
    b.set_entry(t, i, encode_oa(PA_MIN, ds=True) | 3 | PTE_AF | attr(0))
    tr = translate(b.memory(tmp_path), mode, b.root, va)
    assert tr.ok and tr.pa == PA_MIN
    tcr = (12 | TG0[4 * K] << 14 | 25 << 16 | TCR_EPD1 | TG1[4 * K] << 30 | (0b110 << 32) | arm64.TCR_DS)
    with pytest.raises(AssertionError, match=rf"set-up faulted \(\[{PREFETCH_ABORT}\]\)"):
        Machine(b, None, tcr, {PA_MIN})
