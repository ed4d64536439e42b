"""An emulated RISC-V MMU (unicorn) judges translate(): same PA, same faults, for random Sv tables.

Recipe of /work/shared/reference/unicorn-mmu-notes.md: CPU TLB mode (mapped memory is physical),
the builder's image at its physical addresses, satp = MODE << 60 | root PPN (Sv32: bit 31),
PRIV = 1 (S-mode), and `ld a0, 0(a1)` (`lw` on RV32) from a code page mapped at its own address.
Every data page holds its own physical address in each word, so a load says where it read.

Facts about the emulated MMU (unicorn 2.1.4 = QEMU 5.0 TCG) this file relies on:
* it predates Svnapot/Svpbmt and the rule that D/A/U in a non-leaf entry are reserved: bits
  63:54 go into its PPN and D/A/U on pointers are ignored, so the random tables use neither
  (those faults are covered by tests/test_riscv_mode.py against the specification);
* it sets A/D itself (no fault for A=0), faults on V=0, W without R, misaligned superpages and a
  pointer at the last level, as translate() does;
* loads also need R (MXR off) and, in S-mode with SUM off, U clear: permissions translate() leaves
  to the caller, so the prediction applies them to the leaf translate() found.
"""

from __future__ import annotations

import struct

import pytest

unicorn = pytest.importorskip("unicorn")

import builders_riscv  # noqa: F401
from builders import PageTableBuilder
from builders_riscv import RV_A, RV_D, RV_G, RV_R, RV_U, RV_V, RV_W, RV_X, ppn_bits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unicorn import UC_ARCH_RISCV, UC_MODE_RISCV32, UC_MODE_RISCV64, Uc, UcError
from unicorn import riscv_const as R

from pagewalk.arch.riscv import SV32, SV39, SV48, SV57
from pagewalk.translate import translate

KB4 = 4096
CODE = 0x2000_0000  # code page, mapped at VA == PA in the low half
LD = 0x0005B503  # ld a0, 0(a1)
LW = 0x0005A503  # lw a0, 0(a1)
SATP_MODE = {"sv39": 8, "sv48": 9, "sv57": 10}
DATA_BASE = 0x4000_0000  # leaves point at and above this PA (1 GiB aligned)
# leaf permission sets: valid ones, and the reserved W-only / W+X encodings
LEAF_FLAGS = [RV_R, RV_R | RV_W, RV_R | RV_X, RV_R | RV_W | RV_X, RV_X, RV_W, RV_W | RV_X]


def _tlb_cpu() -> int:
    return getattr(unicorn, "UC_TLB_CPU", 0)


def emulate_load(b: PageTableBuilder, va: int, data_pages: set[int]) -> int | None:
    """The word the CPU loads at `va` through b's tables in S-mode, or None when it faults."""
    rv32 = b.mode is SV32
    uc = Uc(UC_ARCH_RISCV, UC_MODE_RISCV32 if rv32 else UC_MODE_RISCV64)
    uc.ctl_set_tlb_mode(_tlb_cpu())
    end = -(-b.end // KB4) * KB4
    uc.mem_map(0, end)
    uc.mem_write(b.base, bytes(b.image))
    uc.mem_map(CODE, KB4)
    uc.mem_write(CODE, struct.pack("<I", LW if rv32 else LD))
    word = "<I" if rv32 else "<Q"
    step = 4 if rv32 else 8
    for page in data_pages:
        if page < end or page == CODE:
            continue
        uc.mem_map(page, KB4)
        uc.mem_write(page, b"".join(struct.pack(word, (page + k) & (0xFFFFFFFF if rv32 else (1 << 64) - 1))
                                    for k in range(0, KB4, step)))
    satp = (1 << 31) | (b.root >> 12) if rv32 else (SATP_MODE[b.mode.name] << 60) | (b.root >> 12)
    uc.reg_write(R.UC_RISCV_REG_SATP, satp)
    uc.reg_write(R.UC_RISCV_REG_PRIV, 1)
    uc.reg_write(R.UC_RISCV_REG_A1, va)
    try:
        uc.emu_start(CODE, CODE + 4)
    except UcError:
        return None
    return uc.reg_read(R.UC_RISCV_REG_A0)


def predict(b: PageTableBuilder, mem, va: int) -> int | None:
    """translate()'s PA for `va`, or None where the load must fault (translation or permission)."""
    t = translate(mem, b.mode, b.root, va)
    if not t.ok:
        return None
    leaf = t.steps[-1].entry
    if not leaf & RV_R or leaf & RV_U:
        return None
    return t.pa


@st.composite
def tables(draw, mode):
    """A builder with random leaves at every level, some reserved encodings, and probe VAs."""
    b = PageTableBuilder(mode)
    b.map(CODE, CODE, KB4, RV_V | RV_R | RV_X | RV_A | RV_G)
    n = len(mode.levels)
    probes: list[int] = []
    used: set[tuple[int, int]] = set()
    for k in range(draw(st.integers(3, 10))):
        level = draw(st.integers(1 if mode is not SV39 else 0, n - 1))  # Sv48/57 roots: no leaves for Linux
        size = mode.levels[level].entry_span
        top = mode.levels[0]
        hi = draw(st.sampled_from([0, top.entries - 1, top.entries // 2 - 1, 1, top.entries // 2]))
        idx = draw(st.integers(0, 15))
        va = mode.canonical_va((hi << top.shift) + (0 if level == 0 else idx * size))
        if mode is not SV32 and hi == 0 and level == 0:
            continue
        key = (va, level)
        if key in used or (hi == 0 and va <= CODE < va + size) or (va >> 22) == (CODE >> 22):
            continue
        pa = DATA_BASE + draw(st.integers(0, 7)) * max(size, KB4) if size <= (1 << 30) else size
        flags = draw(st.sampled_from(LEAF_FLAGS)) | RV_V | draw(st.sampled_from([0, RV_U, RV_A, RV_A | RV_D, RV_G]))
        try:
            b.map(va, pa, size, flags | RV_R)  # map with a valid encoding, then rewrite the flags
        except ValueError:
            continue
        used.add(key)
        table, i = b.slot(va, level)
        entry = ppn_bits(pa) | flags
        corrupt = draw(st.sampled_from(["none", "none", "invalid", "misaligned", "pointer-at-last"]))
        if corrupt == "invalid":
            entry &= ~RV_V
        elif corrupt == "misaligned" and level < n - 1:
            entry |= ppn_bits(KB4)
        elif corrupt == "pointer-at-last" and level == n - 1:
            entry = ppn_bits(pa) | RV_V
        b.set_entry(table, i, entry)
        off = draw(st.integers(0, size // KB4 - 1)) * KB4 + draw(st.integers(0, KB4 // 8 - 1)) * 8
        probes.append(va + off)
        probes.append(va + size if mode.is_canonical(va + size) else va)  # often unmapped
    return b, probes


@pytest.mark.parametrize("mode", [SV39, SV48, SV57, SV32], ids=lambda m: m.name)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_emulated_cpu_loads_where_translate_says(tmp_path, mode, data):
    """For random tables, the CPU faults exactly where translate() (plus R/U rules) says, else reads its PA."""
    b, probes = data.draw(tables(mode))
    mem = b.memory(tmp_path)
    expect = {va: predict(b, mem, va) for va in probes}
    pages = {pa & ~(KB4 - 1) for pa in expect.values() if pa is not None}
    for va, pa in expect.items():
        got = emulate_load(b, va, pages)
        mask = 0xFFFFFFFF if mode is SV32 else (1 << 64) - 1
        assert got == (None if pa is None else pa & mask), f"{mode.name} va {va:#x}: cpu {got!r} vs translate {pa!r}"
