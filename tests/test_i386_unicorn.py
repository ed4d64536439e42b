"""An emulated 32-bit x86 MMU (unicorn, UC_MODE_32) judges translate() for PAE and 2-level paging.

Recipe as for x86-64 (/work/shared/reference/unicorn-mmu-notes.md): CPU TLB mode (mapped memory
is physical), the builder's image at its physical addresses, CR3 = root, CR4 = PAE (with
EFER.NXE) or PSE (or neither), CR0 = PG|PE|WP, and `mov eax, [ebx]` / `mov [ebx], ecx` from an
identity-mapped code page in supervisor mode. Every data page holds (PA >> 2) in each 4-byte word.

Facts about the emulated MMU this file relies on (checked with unicorn 2.1.4, QEMU 5.0 TCG):
* MAXPHYADDR is 40, in 32-bit mode too: PAE address bits 40..51 are reserved (so translate() runs
  with `make_mode("pae", pa_bits=40)`) and PSE-36 4 MiB pages reach PAs above 4 GiB;
* PDPTE bits 2:1 and 8:5 are not checked (the SDM reserves them); XD in a PDPTE faults;
* after a fault the CPU's exception state is not reset, so a fresh engine is made after every fault.
"""

from __future__ import annotations

import tempfile

import pytest

unicorn = pytest.importorskip("unicorn")

from builders import X86_A, X86_D, X86_G, X86_NX, X86_P, X86_PCD, X86_PSE, X86_PWT, X86_RW, X86_US, PageTableBuilder  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from unicorn_x86 import CODE, X86Machine  # noqa: E402

from pagewalk.arch.x86 import make_mode  # noqa: E402
from pagewalk.translate import translate  # noqa: E402

TOP32 = 1 << 32
KB4, MB2, MB4 = 4096, 2 << 20, 4 << 20
CR4_PSE, CR4_PAE = 1 << 4, 1 << 5
EFER_NXE = 1 << 11
PF = 14
PA_BITS = 40
MODES = {"pae": make_mode("pae", pa_bits=PA_BITS), "2level": make_mode("2level"), "nopse": make_mode("2level", pse=False)}
CR4 = {"pae": CR4_PAE, "2level": CR4_PSE, "nopse": 0}
BIG = {"pae": MB2, "2level": MB4, "nopse": MB4}
MAGIC = 0xC0DE_0001


def _word(pa: int) -> int:
    return (pa >> 2) & 0xFFFFFFFF


def Machine(b: PageTableBuilder, name: str) -> X86Machine:
    """One 32-bit x86 CPU over a builder's image in paging mode `name`; each data word holds (PA >> 2)."""
    return X86Machine(b, long_mode=False, cr4=CR4[name], efer=EFER_NXE if name == "pae" else 0, word_of=_word)


def new_builder(name: str, linux_pdptes: bool) -> PageTableBuilder:
    b = PageTableBuilder(MODES[name])
    if name == "pae" and linux_pdptes:  # PA | _PAGE_PRESENT, as Linux writes them
        for i in range(4):
            b.set_entry(b.root, i, b.alloc_table() | X86_P)
    b.map(CODE, CODE, KB4, X86_P)
    return b


REGIONS = [0x0804_8000, 0x6000_0000, 0xC000_0000, 0xF800_0000]
_leaf_flags = st.lists(
    st.sampled_from([X86_RW, X86_US, X86_PWT, X86_PCD, X86_A, X86_D, X86_G, X86_NX, 1 << 9, 1 << 11]), max_size=5
).map(lambda bits: X86_P | sum(set(bits)))
_mapping = st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 7), st.integers(1, (1 << (PA_BITS - 22)) - 1), _leaf_flags)
_RAW_WHAT = ["clear_p", "ps", "pa_high", "large_low", "ro", "user", "nx", "loop_root"]
_raw = st.tuples(st.integers(0, 31), st.integers(0, 2), st.sampled_from(_RAW_WHAT), st.integers(0, 22))


def build(name: str, linux_pdptes: bool, mappings, raws) -> tuple[PageTableBuilder, list[tuple[int, int]]]:
    """A builder with the code page, random leaves and random raw edits; returns (builder, [(va, size)])."""
    mode = MODES[name]
    b = new_builder(name, linux_pdptes)
    wide = mode.entry_bytes == 8
    done = []
    for big, region, slot, pa4m, flags in mappings:
        size = BIG[name] if big else KB4
        va = (REGIONS[region] & ~(size - 1)) + slot * size
        pa = pa4m * MB4 if wide or big else (pa4m * MB4) % TOP32  # 32-bit PTEs hold 32-bit PAs
        if not wide:
            flags &= 0xFFF
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
            e = b.entry(t, i)
        except (KeyError, ValueError):
            continue
        if (t, i) in code_slots:
            continue
        if what == "clear_p":
            e &= ~X86_P
        elif what == "ps":
            e |= X86_PSE
        elif what == "pa_high":  # PAE: bits 62:40 (reserved); 2-level: PSE-36's bit 21 (reserved) or PA bits
            e |= (1 << (PA_BITS + bit)) if wide else (1 << (13 + bit % 9))
        elif what == "large_low" and level == leaf_level < nlev - 1:
            e |= 1 << (13 + bit % 9)
        elif what == "ro":
            e &= ~X86_RW
        elif what == "user":
            e ^= X86_US
        elif what == "nx" and wide:
            e |= X86_NX
        elif what == "loop_root" and 0 < level < nlev - 1:
            e = b.make_table_entry(b.root)
        b.set_entry(t, i, e)
    return b, done


def _probes(done, offsets, wild) -> list[int]:
    out = []
    for va, size in done:
        for off in offsets:
            out.append(va + (off % size & ~3))
        out.append((va + size) % TOP32)
        out.append((va - 4) % TOP32)
    for region, slot in wild:
        out.append((REGIONS[region % 4] + (slot << 12)) % TOP32)
    return out[:24]


def _missing(tr) -> bool:
    """The walk needs a table outside the image (a 4 MiB PDE read as a table pointer without CR4.PSE)."""
    return not tr.ok and "not in the image" in tr.fault


def _judge(m: Machine, mode, root: int, va: int, mem) -> None:
    tr = translate(mem, mode, root, va)
    if _missing(tr):
        return
    if tr.ok:
        m.add_page(tr.pa)
    got = m.load(va)
    if not tr.ok:
        assert got[0] == "fault", (hex(va), tr.fault, got)
        assert got[1] == PF and got[2] == va, (hex(va), tr.fault, got)
        return
    assert got[0] == "ok", (hex(va), hex(tr.pa), got)
    assert got[1] == m.phys_word(tr.pa), (hex(va), hex(tr.pa), hex(got[1]))
    if tr.pa & ~(KB4 - 1) in m.extra:
        assert got[1] == _word(tr.pa), (hex(va), hex(tr.pa), hex(got[1]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["pae", "2level", "nopse"]),
    linux_pdptes=st.booleans(),
    mappings=st.lists(_mapping, min_size=1, max_size=8),
    raws=st.lists(_raw, max_size=4),
    offsets=st.lists(st.integers(0, (1 << 22) - 4), min_size=1, max_size=4),
    wild=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 16)), max_size=4),
)
def test_supervisor_loads_match_translate(name, linux_pdptes, mappings, raws, offsets, wild):
    """A supervisor load through each VA reads the PA translate() gives, or raises #PF at that VA when translate() faults."""
    mode = MODES[name]
    b, done = build(name, linux_pdptes, mappings, raws)
    with tempfile.TemporaryDirectory() as d:
        mem = b.memory(d)
        code = translate(mem, mode, b.root, CODE)
        assert code.ok and code.pa == CODE
        m = Machine(b, name)
        for va in _probes(done, offsets, wild):
            _judge(m, mode, b.root, va, mem)
        mem.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["pae", "2level"]),
    linux_pdptes=st.booleans(),
    mappings=st.lists(_mapping, min_size=1, max_size=6),
    raws=st.lists(_raw, max_size=4),
    offsets=st.lists(st.integers(0, (1 << 22) - 4), min_size=1, max_size=4),
)
def test_supervisor_stores_match_effective_rw(name, linux_pdptes, mappings, raws, offsets):
    """With CR0.WP a supervisor store succeeds exactly where translate() maps the VA and the folded permission has RW (a PDPTE never restricts)."""
    mode = MODES[name]
    b, done = build(name, linux_pdptes, mappings, raws)
    with tempfile.TemporaryDirectory() as d:
        mem = b.memory(d)
        m = Machine(b, name)
        for va in _probes(done, offsets, []):
            tr = translate(mem, mode, b.root, va)
            if _missing(tr):
                continue
            if tr.ok:
                if tr.pa & ~(KB4 - 1) == CODE or tr.pa < m.image_end:
                    continue  # never overwrite the code or the tables
                m.add_page(tr.pa)
            got = m.store(va, MAGIC)
            if tr.ok and tr.perm & X86_RW:
                assert got[0] == "ok", (hex(va), hex(tr.pa), got)
                assert m.phys_word(tr.pa) == MAGIC
            else:
                assert got[0] == "fault" and got[1] == PF, (hex(va), tr.fault, hex(tr.perm), got)
        mem.close()


def test_handpicked_pages_and_faults(tmp_path):
    """Fixed cases: PSE-36 above 4 GiB, bit 21 reserved, PS ignored without CR4.PSE, PAE 2 MiB, XD and high bits in a PDPTE."""
    # 2-level with PSE: a 4 MiB page at PA 0x81_0040_0000 (bits 39:32 in PDE bits 20:13)
    b = new_builder("2level", True)
    b.set_entry(b.root, 0x100, 0x00400000 | X86_P | X86_PSE | (0x81 << 13))
    b.set_entry(b.root, 0x101, 0x00800000 | X86_P | X86_PSE | (1 << 21))
    mem = b.memory(tmp_path)
    m = Machine(b, "2level")
    t = translate(mem, MODES["2level"], b.root, 0x4000_0010)
    assert t.pa == 0x81_0040_0010 and t.page_size == MB4
    _judge(m, MODES["2level"], b.root, 0x4000_0010, mem)
    t = translate(mem, MODES["2level"], b.root, 0x4040_0000)
    assert t.fault.endswith("reserved bit set (bits below the large page's alignment)")
    _judge(m, MODES["2level"], b.root, 0x4040_0000, mem)
    # without CR4.PSE the same PDE is a page-table pointer
    m = Machine(b, "nopse")
    t = translate(mem, MODES["nopse"], b.root, 0x4000_0010)
    assert [s.kind for s in t.steps][0] == "table"
    _judge(m, MODES["nopse"], b.root, 0x4000_0010, mem)
    # PAE: a 2 MiB page; a PDPTE with XD; one with an address bit above MAXPHYADDR
    b = new_builder("pae", True)
    b.map(0xC000_0000, 0x3C0_0000, MB2, X86_P | X86_RW | X86_NX)
    b.map(0x4000_0000, 0x10_0000, KB4, X86_P)
    b.map(0x8000_0000, 0x10_0000, KB4, X86_P)
    b.set_entry(b.root, 1, b.entry(b.root, 1) | X86_NX)
    b.set_entry(b.root, 2, b.entry(b.root, 2) | (1 << 45))
    b.map(0xC040_0000, 0x20_0000, KB4, X86_P)
    t, i = b.slot(0xC040_0000, 2)
    b.set_entry(t, i, b.entry(t, i) | (1 << 55))  # PAE (unlike IA-32e paging) reserves bits 62:52
    mem = b.memory(tmp_path)
    m = Machine(b, "pae")
    cases = {
        0xC000_1238: ("ok", 0x3C0_1238),
        0x4000_0000: ("fault", "reserved bit set (address bits above MAXPHYADDR)"),
        0x8000_0000: ("fault", "reserved bit set (address bits above MAXPHYADDR)"),
        0xC020_0000: ("fault", "not present (P=0)"),
        0xC040_0000: ("fault", "reserved bit set (address bits above MAXPHYADDR)"),
    }
    for va, (kind, want) in cases.items():
        tr = translate(mem, MODES["pae"], b.root, va)
        if kind == "ok":
            assert tr.pa == want
        else:
            assert tr.fault.endswith(want)
        _judge(m, MODES["pae"], b.root, va, mem)
