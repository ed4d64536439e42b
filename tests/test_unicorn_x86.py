"""An emulated x86-64 MMU (unicorn) judges translate(): same PA, same faults, for random tables.

Recipe of /work/shared/reference/unicorn-mmu-notes.md: CPU TLB mode (mapped memory is physical),
the builder's image at its physical addresses, CR3 = root, CR4 = PAE (+ LA57), EFER = LME|LMA|NXE,
CR0 = PG|PE|WP, and `mov rax, [rbx]` from an identity-mapped code page, in supervisor mode.
Every data page holds its own physical address in each 8-byte word, so a load says where it read.

Facts about the emulated MMU this file relies on (checked with unicorn 2.1.4, QEMU 5.0 TCG):
* MAXPHYADDR is 40: address bits 40..51 of a present entry are reserved (TCG_PHYS_ADDR_BITS), so
  translate() is run with `_make_mode(n, pa_bits=40)`;
* LA57 works with the default CPU model: CR4 bit 12 gives 5-level paging;
* after a fault delivered to the interrupt hook the CPU's exception state is not reset (the next
  fault becomes a #DF, then a triple fault), so a fresh engine is made after every fault.
"""

from __future__ import annotations

import tempfile

import pytest

unicorn = pytest.importorskip("unicorn")

from builders import X86_A, X86_D, X86_G, X86_NX, X86_P, X86_PCD, X86_PSE, X86_PWT, X86_RW, X86_US, PageTableBuilder  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from unicorn_x86 import CODE, X86Machine  # noqa: E402

from pagewalk.arch.x86 import _make_mode  # noqa: E402
from pagewalk.translate import translate  # noqa: E402

TOP = 1 << 64
KB4, MB2, GB1 = 4096, 2 << 20, 1 << 30
CR4_PAE, CR4_LA57 = 1 << 5, 1 << 12
EFER_LME, EFER_LMA, EFER_NXE = 1 << 8, 1 << 10, 1 << 11
PF, GP = 14, 13
PA_BITS = 40
MODES = {4: _make_mode(4, pa_bits=PA_BITS), 5: _make_mode(5, pa_bits=PA_BITS)}
X86_PAT_LARGE = 1 << 12
MAGIC = 0x5A5A_1234_C0DE_0001


def Machine(b: PageTableBuilder, la57: bool) -> X86Machine:
    """One x86-64 CPU over a builder's image: 4- or 5-level, NX on; each data word holds its own PA."""
    return X86Machine(b, long_mode=True, cr4=CR4_PAE | (CR4_LA57 if la57 else 0),
                      efer=EFER_LME | EFER_LMA | EFER_NXE, word_of=lambda pa: pa)


# -- random tables -------------------------------------------------------------------------------

# Regions in other top-level slots than CODE, so random entries never touch the code's path.
REGIONS = {
    4: [0x7FFF_C000_0000, 0xFFFF_8880_0000_0000, 0xFFFF_C900_0000_0000, 0xFFFF_FFFF_8000_0000],
    5: [0x00FF_FFFF_C000_0000, 0xFF11_0000_0000_0000, 0xFFFF_8880_0000_0000, 0xFFFF_FFFF_8000_0000],
}
_leaf_flags = st.lists(
    st.sampled_from([X86_RW, X86_US, X86_PWT, X86_PCD, X86_A, X86_D, X86_G, X86_NX, 1 << 9, 1 << 59, 1 << 62, -1]),
    max_size=5,
).map(lambda bits: (X86_P | sum(b for b in set(bits) if b > 0), -1 in bits))
_mapping = st.tuples(
    st.sampled_from([KB4, KB4, MB2, MB2, GB1]),
    st.integers(0, 3),  # region
    st.integers(0, 7),  # slot in the region
    st.integers(1, (1 << (PA_BITS - 21)) - 1),  # PA in 2M units, at least 2M
    _leaf_flags,
)
# Raw edits on a mapping's path: (which mapping, level from the top, what)
_RAW_WHAT = ["clear_p", "ps", "pa_high", "large_low", "ro", "user", "nx", "loop_root", "loop_up"]
_raw = st.tuples(st.integers(0, 31), st.integers(0, 4), st.sampled_from(_RAW_WHAT), st.integers(0, 11))


def build(n: int, mappings, raws) -> tuple[PageTableBuilder, list[tuple[int, int]]]:
    """A builder with the code page, random leaves and random raw edits; returns (builder, [(va, size)])."""
    mode = MODES[n]
    b = PageTableBuilder(mode)
    b.map(CODE, CODE, KB4, X86_P)
    done = []
    for size, region, slot, pa2m, (flags, pat) in mappings:
        va = (REGIONS[n][region] & ~(size - 1)) + slot * size
        pa = max(GB1, (pa2m * MB2) & ~(size - 1))
        if pat:
            flags |= X86_PSE if size == KB4 else X86_PAT_LARGE
        try:
            b.map(va, pa, size, flags)
            done.append((va, size))
        except ValueError:
            pass
    nlev = len(mode.levels)
    code_slots = {b.slot(CODE, lv) for lv in range(nlev)}
    for k, level, what, bit in raws:
        if not done:
            break
        va, size = done[k % len(done)]
        leaf_level = b.level_for(size)
        level = min(level, leaf_level)
        try:
            t, i = b.slot(va, level)
            parent = b.slot(va, level - 1)[0] if level else None
            e = b.entry(t, i)
        except (KeyError, ValueError):  # an earlier edit cut the path (or sent it out of the image)
            continue
        if (t, i) in code_slots:  # an earlier loop led back into the code's tables
            continue
        if what == "clear_p":
            e &= ~X86_P
        elif what == "ps":  # PS on an upper entry: reserved at the top, a (misaligned?) leaf lower down
            e |= X86_PSE
        elif what == "pa_high":  # address bits above MAXPHYADDR
            e |= 1 << (PA_BITS + bit)
        elif what == "large_low" and 0 < leaf_level < nlev - 1 and level == leaf_level:
            e |= 1 << (13 + bit)  # bits below a large page's alignment
        elif what == "ro":
            e &= ~X86_RW
        elif what == "user":
            e ^= X86_US
        elif what == "nx":
            e |= X86_NX
        elif what in ("loop_root", "loop_up") and 0 < level < nlev - 1:
            target = b.root if what == "loop_root" else parent
            e = b.make_table_entry(target)
        b.set_entry(t, i, e)
    return b, done


_probe_offsets = st.lists(st.integers(0, (1 << 30) - 8), min_size=1, max_size=4)


def _probes(n: int, done, offsets, wild) -> list[int]:
    out = []
    for va, size in done:
        for off in offsets:
            out.append(va + (off % size & ~7))
        out.append((va + size) % TOP)  # the next page or leaf: often unmapped
        out.append((va - 8) % TOP)
    for region, slot in wild:
        out.append((REGIONS[n][region % 4] + (slot << 12)) % TOP)
    half = 1 << (47 if n == 4 else 56)
    out += [half, TOP - half - 8]  # just outside both canonical halves
    return out[:24]


def _judge(m: Machine, mode, root: int, va: int, mem) -> None:
    tr = translate(mem, mode, root, va)
    if tr.ok:
        m.add_page(tr.pa)
    got = m.load(va)
    if not tr.ok:
        assert got[0] == "fault", (hex(va), tr.fault, got)
        if "canonical" in tr.fault:
            assert got[1] == GP, (hex(va), got)
        else:
            assert got[1] == PF and got[2] == va, (hex(va), tr.fault, got)
        return
    assert got[0] == "ok", (hex(va), hex(tr.pa), got)
    assert got[1] == m.phys_word(tr.pa), (hex(va), hex(tr.pa), hex(got[1]))
    if tr.pa & ~(KB4 - 1) in m.extra:  # a marker page: the word is the address it was read from
        assert got[1] == tr.pa, (hex(va), hex(tr.pa), hex(got[1]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.sampled_from([4, 5]),
    mappings=st.lists(_mapping, min_size=1, max_size=8),
    raws=st.lists(_raw, max_size=4),
    offsets=_probe_offsets,
    wild=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 20)), max_size=4),
)
def test_supervisor_loads_match_translate(n, mappings, raws, offsets, wild):
    """A supervisor load through each VA reads the PA translate() gives, or faults (#PF at the VA, #GP if non-canonical) when it faults."""
    mode = MODES[n]
    b, done = build(n, mappings, raws)
    with tempfile.TemporaryDirectory() as d:
        mem = b.memory(d)
        code = translate(mem, mode, b.root, CODE)
        assert code.ok and code.pa == CODE
        m = Machine(b, la57=(n == 5))
        for va in _probes(n, done, offsets, wild):
            _judge(m, mode, b.root, va, mem)
        mem.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.sampled_from([4, 5]),
    mappings=st.lists(_mapping, min_size=1, max_size=6),
    raws=st.lists(_raw, max_size=4),
    offsets=_probe_offsets,
)
def test_supervisor_stores_match_effective_rw(n, mappings, raws, offsets):
    """With CR0.WP a supervisor store succeeds exactly where translate() maps the VA and the folded permission has RW."""
    mode = MODES[n]
    b, done = build(n, mappings, raws)
    with tempfile.TemporaryDirectory() as d:
        mem = b.memory(d)
        m = Machine(b, la57=(n == 5))
        for va in _probes(n, done, offsets, []):
            tr = translate(mem, mode, b.root, va)
            if tr.ok:
                if tr.pa & ~(KB4 - 1) == CODE or tr.pa < m.image_end:
                    continue  # never overwrite the code or the tables
                m.add_page(tr.pa)
            got = m.store(va, MAGIC)
            if tr.ok and tr.perm & X86_RW:
                assert got[0] == "ok", (hex(va), hex(tr.pa), got)
                assert m.phys_word(tr.pa) == MAGIC
            else:
                assert got[0] == "fault" and got[1] in (PF, GP), (hex(va), tr.fault, hex(tr.perm), got)
        mem.close()


@pytest.mark.parametrize("n", [4, 5])
def test_handpicked_pages_and_faults(tmp_path, n):
    """Fixed cases: 4K/2M/1G leaves, PAT bits, a hole, PS at the top, reserved PA and alignment bits."""
    mode = MODES[n]
    b = PageTableBuilder(mode)
    b.map(CODE, CODE, KB4, X86_P)
    k = 0xFFFF_FFFF_8000_0000
    b.map(k, 0x4000_0000, MB2, X86_P | X86_PAT_LARGE | X86_G)
    b.map(k + MB2, 0x5000_3000, KB4, X86_P | X86_PSE | X86_NX)
    b.map(0x7F80_0000_0000, 0x80_0000_0000, GB1, X86_P | X86_US)
    b.map(k + 4 * MB2, 0x60_0000, MB2, X86_P)
    t, i = b.slot(k + 4 * MB2, len(mode.levels) - 2)
    b.set_entry(t, i, b.entry(t, i) | (1 << 16))  # reserved: below the 2M alignment
    b.map(k + 6 * MB2, 0x7000, KB4, X86_P)
    t, i = b.slot(k + 6 * MB2, len(mode.levels) - 1)
    b.set_entry(t, i, b.entry(t, i) | (1 << 44))  # reserved: above MAXPHYADDR
    ps_va = 0x7F00_0000_0000 if n == 4 else 0x00F0_0000_0000_0000  # not in the code's top-level slot
    b.map(ps_va, 0x9000, KB4, X86_P)
    b.set_entry(b.root, b.index(ps_va, 0), b.entry(b.root, b.index(ps_va, 0)) | X86_PSE)
    mem = b.memory(tmp_path)
    m = Machine(b, la57=(n == 5))
    cases = {
        k + 0x1238: ("ok", 0x4000_1238),
        k + MB2 + 0xFF8: ("ok", 0x5000_3FF8),
        0x7F80_0000_0000 + 0x3FFF_FFF8: ("ok", 0x80_3FFF_FFF8),
        k + 2 * MB2: ("fault", "not present (P=0)"),
        k + 4 * MB2: ("fault", "reserved bit set (bits below the large page's alignment)"),
        k + 6 * MB2: ("fault", "reserved bit set (address bits above MAXPHYADDR)"),
        ps_va: ("fault", "reserved bit set (PS must be 0 at this level)"),
    }
    for va, (kind, want) in cases.items():
        tr = translate(mem, mode, b.root, va)
        if kind == "ok":
            assert tr.pa == want
        else:
            assert tr.fault.endswith(want)
        _judge(m, mode, b.root, va, mem)


def test_la57_is_emulated(tmp_path):
    """The emulator really walks 5 levels with CR4.LA57: a VA only 5-level paging can map loads its marker."""
    mode = MODES[5]
    b = PageTableBuilder(mode)
    b.map(CODE, CODE, KB4, X86_P)
    va = 0xFF11_0000_0000_0000  # not canonical with 4 levels
    b.map(va, 0x4000_0000, KB4, X86_P)
    m = Machine(b, la57=True)
    _judge(m, mode, b.root, va + 0x10, b.memory(tmp_path))
    assert m.load(va + 0x10) == ("ok", 0x4000_0010)
