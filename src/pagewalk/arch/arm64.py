"""arm64 (AArch64) VMSAv8-64 stage-1 translation of the EL1&0 regime, as the MMU and as Linux see it.

Architecture: Arm Architecture Reference Manual for A-profile (DDI 0487, K.a numbering):
D8.1 "Address translation" (TTBR0/TTBR1 selection by VA[55], TBI), D8.2 "Translation table walk"
(granule, input size from TxSZ, start level: each level resolves granule_shift - 3 bits, the
start level is the one that covers the rest; FEAT_LPA2 adds level -1 for 4K with 52-bit inputs),
D8.3 "Translation table descriptor formats" (bits[1:0]: 0b11 table / page, 0b01 block, bit 0
clear invalid; output address fields, incl. FEAT_LPA: OA[51:48] in bits[15:12] for 64K, and
FEAT_LPA2 (TCR_ELx.DS = 1): OA[51:50] in bits[9:8] for 4K/16K, where SH moves into the TCR),
D8.4 "Memory access control" (AP[2:1], PXN/UXN, hierarchical APTable/PXNTable/UXNTable,
TCR_ELx.HPDn disabling them), and D19 TCR_EL1 (T0SZ 5:0, TG0 15:14, T1SZ 21:16, TG1 31:30,
IPS 34:32, TBI0 37, TBI1 38, HA 39, HPD0 41, HPD1 42, DS 59) / TTBRn_EL1 (ASID 63:48, BADDR,
with BADDR[51:48] in bits[5:2] when the OA is 52 bits, CnP bit 0).

Kernel view (which entries ptdump's walker sees as holes, leaves, tables): Linux
arch/arm64/include/asm/pgtable.h and pgtable-hwdef.h. v6.12: p?d_none() = value 0;
pgd_bad()/p4d_bad() = bit 1 clear (the walker's p?d_none_or_clear_bad() makes them holes);
pmd_leaf()/pud_leaf() = p?d_present() && !p?d_table(), with pte_present() = VALID or
PTE_PRESENT_INVALID (= nG, bit 11, when VALID is clear); pud_table() is always true with 64K
pages (no PUD blocks). v6.1 is the same except pte_present() = VALID or PTE_PROT_NONE (bit 58),
and pmd_present() also accepts PMD_PRESENT_INVALID (bit 59). Folded levels: with n hardware
levels the kernel's level types are, from the bottom, pte, pmd, pud, p4d, pgd; the top hardware
level keeps its type (p4d_none/pud_none... semantics) but its holes are reported at depth 0
(real_depth() with PTRS_PER_* == 1, or the runtime folding of v6.9+ LPA2 kernels, whose
note_page() maps levels 1 and 2 back to 0).
"""

from __future__ import annotations


import numpy as np

from ..bits import mask
from ..errors import MemoryReadError
from ..mode import HwKind, Kind, Level, PagingMode

U64 = np.uint64
TOP = 1 << 64

# Descriptor bits (D8.3; arch/arm64/include/asm/pgtable-hwdef.h, pgtable-prot.h)
PTE_VALID = 1 << 0
PTE_TABLE_BIT = 1 << 1  # PTE_TYPE_PAGE / PMD_TYPE_TABLE = 0b11, PMD_TYPE_SECT = 0b01
PTE_ATTRINDX_SHIFT = 2
PTE_ATTRINDX_MASK = 7 << 2
PTE_NS = 1 << 5
PTE_USER = 1 << 6  # AP[1]
PTE_RDONLY = 1 << 7  # AP[2]
PTE_SHARED = 3 << 8  # SH[1:0]; OA[51:50] with TCR.DS = 1
PTE_AF = 1 << 10
PTE_NG = 1 << 11  # also PTE_PRESENT_INVALID (v6.10+) when VALID is clear
PTE_GP = 1 << 50  # BTI guarded page
PTE_DBM = 1 << 51  # Linux PTE_WRITE
PTE_CONT = 1 << 52
PTE_PXN = 1 << 53
PTE_UXN = 1 << 54
PTE_DIRTY = 1 << 55  # software
PTE_SPECIAL = 1 << 56
PTE_DEVMAP = 1 << 57
PTE_PROT_NONE = 1 << 58  # v6.1, only when !VALID
PMD_PRESENT_INVALID = 1 << 59  # v6.1, only when !VALID
# Table descriptors (D8.3.1, D8.4.2): hierarchical controls
PXN_TABLE = 1 << 59
UXN_TABLE = 1 << 60
AP_TABLE_NO_EL0 = 1 << 61  # APTable[0]: no access from EL0 below this entry
AP_TABLE_RDONLY = 1 << 62  # APTable[1]: no write access at any EL below this entry
NS_TABLE = 1 << 63

PERM_BITS = PTE_USER | PTE_RDONLY | PTE_PXN | PTE_UXN

# ptdump's pg_level[].mask: the OR of every prot_bits row's mask (arch/arm64/mm/ptdump.c)
PTDUMP_KEY_MASK = (
    PTE_VALID | PTE_USER | PTE_RDONLY | PTE_PXN | PTE_SHARED | PTE_AF | PTE_NG | PTE_CONT
    | PTE_TABLE_BIT | PTE_UXN | PTE_GP | PTE_ATTRINDX_MASK
)

# TCR_EL1 fields (D19.2, TCR_EL1)
TCR_T0SZ_SHIFT, TCR_T1SZ_SHIFT = 0, 16
TCR_TG0_SHIFT, TCR_TG1_SHIFT = 14, 30
TCR_IPS_SHIFT = 32
TCR_TBI0, TCR_TBI1 = 1 << 37, 1 << 38
TCR_HA = 1 << 39
TCR_HPD0, TCR_HPD1 = 1 << 41, 1 << 42
TCR_DS = 1 << 59
TG0_GRANULE = {0: 4096, 1: 65536, 2: 16384}
TG1_GRANULE = {1: 16384, 2: 4096, 3: 65536}
IPS_BITS = {0: 32, 1: 36, 2: 40, 3: 42, 4: 44, 5: 48, 6: 52}

# Linux's MAIR_EL1 layouts: the MT_* AttrIndx values of arch/arm64/include/asm/memory.h and the
# MAIR_ATTR_* values proc.S's MAIR_EL1_SET gives them. (first version, {AttrIndx: MT_ name}), newest
# first: v5.13 dropped MT_NORMAL_WT and MT_DEVICE_GRE and moved the device types to 3 and 4; v5.10
# (MTE) made MT_NORMAL index 0; before, the device types came first.
MAIR_ATTR = {"NORMAL": 0xFF, "NORMAL_TAGGED": 0xFF, "NORMAL_NC": 0x44, "NORMAL_WT": 0xBB,
             "DEVICE_nGnRnE": 0x00, "DEVICE_nGnRE": 0x04, "DEVICE_GRE": 0x0C}
LINUX_MT_LAYOUTS: tuple[tuple[tuple[int, int], dict[int, str]], ...] = (
    ((5, 13), {0: "NORMAL", 1: "NORMAL_TAGGED", 2: "NORMAL_NC", 3: "DEVICE_nGnRnE", 4: "DEVICE_nGnRE"}),
    ((5, 10), {0: "NORMAL", 1: "NORMAL_TAGGED", 2: "NORMAL_NC", 3: "NORMAL_WT", 4: "DEVICE_nGnRnE",
               5: "DEVICE_nGnRE", 6: "DEVICE_GRE"}),
    ((0, 0), {0: "DEVICE_nGnRnE", 1: "DEVICE_nGnRE", 2: "DEVICE_GRE", 3: "NORMAL_NC", 4: "NORMAL", 5: "NORMAL_WT"}),
)
LINUX_MT = LINUX_MT_LAYOUTS[0][1]
LINUX_MAIR = 0x000000040044FFFF  # v5.13+: idx0 0xff, idx1 0xff (0xf0 once MTE is on), idx2 0x44, idx3 0x00, idx4 0x04

# D8.6.1 "The Contiguous bit": how many adjacent, index-aligned entries one contiguous run spans,
# by granule and Arm lookup level (Linux: CONT_PTES / CONT_PMDS, arch/arm64/Kconfig
# ARM64_CONT_PTE_SHIFT 4/7/5 and ARM64_CONT_PMD_SHIFT 4/5/5 for 4K/16K/64K pages)
CONTIGUOUS_ENTRIES = {4096: {1: 16, 2: 16, 3: 16}, 16384: {2: 32, 3: 128}, 65536: {2: 32, 3: 32}}
# contiguous_check() problem bits
CONT_MISSING, CONT_ATTRS, CONT_OA, CONT_ALIGN = 1, 2, 4, 8
CONT_PROBLEMS = {
    CONT_MISSING: "not every entry of the run is a valid leaf with the contiguous bit",
    CONT_ATTRS: "the entries' attributes or permissions differ",
    CONT_OA: "the output addresses are not consecutive",
    CONT_ALIGN: "the output address is not aligned to the run's size",
}
# Attribute bits that must be equal across a run: AttrIndx, NS, AP[2:1], SH, nG (bits 11:2) and
# GP, DBM, CONT, PXN, UXN (54:50); not AF (hardware access flag, per entry) nor the software bits
_CONT_ATTR_MASK = (mask(11, 2) & ~PTE_AF) | mask(54, 50)


def contiguous_entries(granule: int, arm_level: int) -> int:
    """Entries in one contiguous run at Arm lookup level `arm_level` (0 where the granule has none)."""
    return CONTIGUOUS_ENTRIES.get(granule, {}).get(arm_level, 0)


def contiguous_problem_text(bits: int) -> str:
    """The CONT_* problem bits in words."""
    return "; ".join(t for b, t in CONT_PROBLEMS.items() if bits & b)

# hw_classify() fault reasons
_INVALID, _RESERVED, _ADDR_SIZE = 1, 2, 3
_REASONS = {
    _INVALID: "translation fault (descriptor bit 0, valid, is clear)",
    _RESERVED: "translation fault (bits[1:0] = 0b01: no block descriptor at this level)",
    _ADDR_SIZE: "address size fault (output address beyond TCR_EL1.IPS)",
}


def _u(v: int) -> np.uint64:
    return np.uint64(v)


class Arm64Mode(PagingMode):
    """A PagingMode whose VAs are `va_base + offset`: TTBR1's region is the top 2^va_bits of the
    address space (VA bits 63:va_bits all ones, or bits 55:va_bits with TBI), not a sign-extended
    pair of halves; TTBR0's is the bottom."""

    _fields = PagingMode._fields + ("va_base", "tbi")
    _compare = PagingMode._compare + ("va_base", "tbi")

    def __init__(self, *args: object, va_base: int = 0, tbi: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._set(va_base=va_base, tbi=tbi)

    def canonical_va(self, rel: int) -> int:
        return self.va_base + rel

    def table_offset(self, va: int) -> int:
        return va & ((1 << self.va_bits) - 1)

    def is_canonical(self, va: int) -> bool:
        """Whether this half translates `va`: VA[55] selects the TTBR, and the bits above the
        input size must all equal it (bits 63:56 are not checked with TBI; D8.1.3)."""
        top_bit = 56 if self.tbi else 64
        upper = (va >> self.va_bits) & ((1 << (top_bit - self.va_bits)) - 1)
        want = (1 << (top_bit - self.va_bits)) - 1 if self.va_base else 0
        return upper == want and va < TOP


def levels_for(granule: int, va_bits: int) -> int:
    """Number of lookup levels for an input size (D8.2.6): each level resolves log2(granule) - 3
    bits above the page offset; the start level is 4 - levels (-1 with FEAT_LPA2, 4K, > 48 bits).

    >>> levels_for(4096, 48), levels_for(4096, 52), levels_for(16384, 47), levels_for(65536, 42)
    (4, 5, 3, 2)
    """
    g = granule.bit_length() - 1
    stride = g - 3
    return -(-(va_bits - g) // stride)


def make_mode(
    granule: int = 4096,
    va_bits: int = 48,
    *,
    upper: bool = True,
    ds: bool = False,
    pa_bits: int = 48,
    hpd: bool = False,
    tbi: bool = False,
    kernel: str = "6.12",
) -> Arm64Mode:
    """The stage-1 mode of one TTBR half: `granule` 4K/16K/64K, `va_bits` = 64 - TxSZ, `ds` =
    TCR_EL1.DS (FEAT_LPA2), `pa_bits` from TCR_EL1.IPS (52 with 64K enables the FEAT_LPA
    descriptor format), `hpd` = TCR_EL1.HPDn, `kernel` the Linux series whose walker semantics
    classify() follows ("6.1" or "6.12")."""
    if granule not in (4096, 16384, 65536):
        raise ValueError(f"granule {granule:#x} is not 4K, 16K or 64K")
    g = granule.bit_length() - 1
    stride = g - 3
    max_va = 52 if (ds or granule == 65536) else 48
    if not 16 <= va_bits <= max_va:
        raise ValueError(f"{va_bits}-bit input size is not valid for a {granule >> 10}K granule (16..{max_va}{'' if ds else ', 52 needs TCR.DS'})")
    if ds and granule == 65536:
        raise ValueError("TCR.DS (FEAT_LPA2) applies to the 4K and 16K granules only")
    n = levels_for(granule, va_bits)
    start = 4 - n  # Arm level number of the root
    lpa64 = granule == 65536 and pa_bits == 52
    oa_hi = 49 if ds else 47  # highest OA bit held in place
    names_bottom_up = ("pte", "pmd", "pud", "p4d", "pgd")
    levels = []
    for i in range(n):
        shift = g + stride * (n - 1 - i)
        bits = stride if i else va_bits - (g + stride * (n - 1))
        ktype = 4 - (n - 1 - i)  # pte 4, pmd 3, pud 2, p4d 1, pgd 0
        name = "pgd" if i == 0 else names_bottom_up[n - 1 - i]
        levels.append(Level(name=name, shift=shift, bits=bits, klevel=ktype, hole_depth=0 if i == 0 else ktype))
    last = n - 1
    # Block descriptors by Arm level (D8.3.1 table "Properties of the address lookup levels")
    block_levels = {4096: {1, 2} | ({0} if ds else set()), 16384: {2} | ({1} if ds else set()),
                    65536: {2} | ({1} if lpa64 else set())}[granule]
    block_hw = {lvl - start for lvl in block_levels if 0 <= lvl - start < last}
    pa_limit = mask(51, pa_bits) if pa_bits < 52 else 0
    old_present = kernel == "6.1"  # pte_present() with PTE_PROT_NONE (before v6.10)

    def oa(e: np.ndarray, shift: int) -> np.ndarray:
        """Output (or next-table) address of descriptors aligned to 1 << shift (D8.3.1)."""
        a = e & _u(mask(oa_hi, shift))
        if ds:
            a |= ((e >> _u(8)) & _u(3)) << _u(50)
        elif lpa64:
            a |= ((e >> _u(12)) & _u(0xF)) << _u(48)
        return a

    def present(e: np.ndarray, ktype: int) -> np.ndarray:
        valid = (e & _u(PTE_VALID)) != 0
        if old_present:
            extra = PTE_PROT_NONE | (PMD_PRESENT_INVALID if ktype == 3 else 0)
            return valid | ((e & _u(extra)) != 0)
        return valid | ((e & _u(PTE_NG)) != 0)

    def classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The kernel walker's view (mm/pagewalk.c with arm64's p?d_* helpers; see the module doc)."""
        e = e.astype(U64, copy=False)
        ktype = levels[level].klevel
        kind = np.full(e.shape, Kind.TABLE, dtype=np.uint8)
        if level == last:
            kind[:] = Kind.LEAF
            return kind, oa(e, g)
        none = e == 0
        is_table = (e & _u(3)) == _u(3)
        if ktype <= 1:  # pgd / p4d: none or bad (bit 1 clear) is a hole; never a leaf
            kind[none | ((e & _u(PTE_TABLE_BIT)) == 0)] = Kind.HOLE
            return kind, oa(e, g)
        pres = present(e, ktype)
        if ktype == 2 and granule == 65536:
            leaf = np.zeros(e.shape, bool)  # pud_table() is always true with 64K pages
        else:
            leaf = pres & ~is_table
        kind[~pres] = Kind.SKIP
        kind[leaf] = Kind.LEAF
        kind[none] = Kind.HOLE
        shift = levels[level].shift
        return kind, np.where(leaf, oa(e, shift), oa(e, g))

    def hw_classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(HwKind, PA or reason): the MMU's view, D8.3 descriptor formats."""
        e = e.astype(U64, copy=False)
        t = e & _u(3)
        kind = np.full(e.shape, HwKind.FAULT, dtype=np.uint8)
        reason = np.full(e.shape, _u(_RESERVED))
        shift = levels[level].shift
        if level == last:
            page = t == _u(3)
            kind[page] = HwKind.LEAF
            out = oa(e, g)
        else:
            table = t == _u(3)
            kind[table] = HwKind.TABLE
            out = oa(e, g)
            if level in block_hw:
                block = t == _u(1)
                kind[block] = HwKind.LEAF
                out = np.where(block, oa(e, shift), out)
        if pa_limit:
            big = (out & _u(pa_limit)) != 0
            bad = big & (kind != HwKind.FAULT)
            kind[bad] = HwKind.FAULT
            reason[bad] = _ADDR_SIZE
        inval = (e & _u(PTE_VALID)) == 0
        kind[inval] = HwKind.FAULT
        reason[inval] = _INVALID
        return kind, np.where(kind == HwKind.FAULT, reason, out)

    def perm(level: int, e: np.ndarray) -> np.ndarray:
        """Permission word: USER (AP[1]) is an allowance, RDONLY/PXN/UXN are restrictions.

        A table descriptor contributes its hierarchical controls (D8.4.2): APTable[0] takes EL0
        access away, APTable[1] write access, PXNTable/UXNTable add PXN/UXN; with TCR.HPDn they
        are ignored. Block and page descriptors contribute their own AP[2:1], PXN and UXN.
        """
        e = e.astype(U64, copy=False)
        leaf_perm = e & _u(PERM_BITS)
        if level == last:
            return leaf_perm
        if hpd:
            table_perm = np.full(e.shape, _u(PTE_USER))
        else:
            table_perm = (
                np.where((e & _u(AP_TABLE_NO_EL0)) != 0, _u(0), _u(PTE_USER))
                | np.where((e & _u(AP_TABLE_RDONLY)) != 0, _u(PTE_RDONLY), _u(0))
                | np.where((e & _u(PXN_TABLE)) != 0, _u(PTE_PXN), _u(0))
                | np.where((e & _u(UXN_TABLE)) != 0, _u(PTE_UXN), _u(0))
            )
        return np.where((e & _u(3)) == _u(3), table_perm, leaf_perm)

    def perm_combine(parent: np.ndarray, child: np.ndarray) -> np.ndarray:
        return (parent & child & _u(PTE_USER)) | ((parent | child) & _u(PTE_RDONLY | PTE_PXN | PTE_UXN))

    def contiguous_check(level: int, tables: np.ndarray) -> np.ndarray:
        """CONT_* problem bits of every contiguous run slot of `tables` ((n, entries) raw values of
        hardware level `level`), shape (n, entries // run): 0 where no entry of the run has the
        contiguous bit set in a block or page descriptor, or the run is consistent. D8.6.1: a run
        is `run` index-aligned entries that must all be valid leaves with the bit set, identical
        attributes and permissions (AF excepted, and AP[2] with DBM: hardware dirty state is per
        entry) and consecutive output addresses aligned to the run's size; anything else is
        CONSTRAINED UNPREDICTABLE (TLB conflict aborts, or either entry's translation)."""
        e = np.asarray(tables).astype(U64, copy=False)
        n, count = e.shape
        run = contiguous_entries(granule, start + level)
        if not run or count % run:
            return np.zeros((n, count // run if run else 0), np.uint8)
        e = e.reshape(n, count // run, run)
        kind, out = hw_classify(level, e)
        leaf = kind == HwKind.LEAF
        cont = leaf & ((e & _u(PTE_CONT)) != 0)
        any_cont = cont.any(axis=2)  # (bit 52 of a table descriptor is ignored, D8.3.1)
        all_cont = cont.all(axis=2)
        attr_mask = _CONT_ATTR_MASK & ~(PTE_SHARED if ds else 0)
        attrs = e & _u(attr_mask)
        attrs = np.where((e & _u(PTE_DBM)) != 0, attrs & _u(~PTE_RDONLY & (TOP - 1)), attrs)
        size = levels[level].entry_span
        oa = np.where(leaf, out, _u(0))
        want = oa[..., :1] + np.arange(run, dtype=U64) * _u(size)
        prob = np.zeros(any_cont.shape, np.uint8)
        prob[any_cont & ~all_cont] |= CONT_MISSING
        prob[any_cont & (attrs != attrs[..., :1]).any(axis=2)] |= CONT_ATTRS
        prob[all_cont & (oa != want).any(axis=2)] |= CONT_OA
        prob[all_cont & ((oa[..., 0] % _u(size * run)) != 0)] |= CONT_ALIGN
        return prob

    def describe_entry(level_name: str, entry: int) -> str:
        # extra["mair"] = (MAIR_EL1, source) and extra["kernel_version"] are set by the kernel
        # module's resolve() when it knows them
        return describe(level_name, entry, granule=granule, ds=ds, mair=extra.get("mair"),
                        kernel_version=extra.get("kernel_version"))

    extra: dict = {}
    half = "ttbr1" if upper else "ttbr0"
    name = f"arm64-{granule >> 10}k-{va_bits}bit{'-lpa2' if ds else ''}{'-lpa' if lpa64 else ''}-{n}level-{half}"
    return Arm64Mode(
        name=name,
        arch="arm64",
        levels=tuple(levels),
        entry_bytes=8,
        byteorder="<",
        va_bits=va_bits,
        canonical=False,
        pa_bits=pa_bits,
        classify=classify,
        hw_classify=hw_classify,
        perm=perm,
        perm_combine=perm_combine,
        perm_top=PTE_USER,
        ptdump_key_mask=PTDUMP_KEY_MASK,
        root_align=max(64, levels[0].entries * 8),
        fault_reason=lambda code: _REASONS.get(code, "fault"),
        describe=describe_entry,
        extra=_update(extra, {
            "perm_text": lambda p: perm_text(p),
            "granule": granule,
            "ds": ds,
            "lpa": lpa64,
            "upper": upper,
            "start_level": start,
            "block_levels": sorted(block_hw),
            "kernel": kernel,
            "hpd": hpd,
            "contiguous_check": contiguous_check,
            "leaf_check": lambda mem, level, table_pa, index: _leaf_contiguous_note(
                mem, contiguous_check, granule, start + level, level, table_pa, index),
        }),
        va_base=(TOP - (1 << va_bits)) if upper else 0,
        tbi=tbi,
    )


def _update(d: dict, more: dict) -> dict:
    """`d` itself, updated (the mode's describe() reads later additions to its extra dict)."""
    d.update(more)
    return d


def _leaf_contiguous_note(mem, check, granule: int, arm_level: int, level: int, table_pa: int, index: int) -> str | None:
    """translate()'s note on a leaf whose contiguous run (D8.6.1) is inconsistent, None otherwise
    (also when the run's entries are not in the image)."""
    run = contiguous_entries(granule, arm_level)
    if not run:
        return None
    first = index - index % run
    try:
        raw = mem.read(table_pa + first * 8, run * 8)
    except MemoryReadError:
        return None
    entries = np.frombuffer(raw, dtype="<u8").reshape(1, run)
    bits = int(check(level, entries)[0, 0])
    if not bits:
        return None
    return (f"contiguous run of {run} entries [{first}..{first + run - 1}] is inconsistent: "
            f"{contiguous_problem_text(bits)} (D8.6.1: CONSTRAINED UNPREDICTABLE)")


def encode_oa(pa: int, *, ds: bool = False, lpa: bool = False) -> int:
    """Descriptor bits holding output address `pa` (the inverse of the OA fields, D8.3.1)."""
    if ds:
        return (pa & mask(49, 12)) | (((pa >> 50) & 3) << 8)
    if lpa:
        return (pa & mask(47, 16)) | (((pa >> 48) & 0xF) << 12)
    return pa & mask(47, 12)


def describe(
    level_name: str, entry: int, *, granule: int = 4096, ds: bool = False,
    mair: tuple[int, str] | None = None, kernel_version: str | None = None,
) -> str:
    """Decoded fields of one descriptor for `translate` (D8.3): type, then attributes; AttrIndx
    through `mair` (MAIR_EL1 value, source) when known, Linux's layout for `kernel_version` else."""
    if not entry & PTE_VALID:
        return "invalid"
    last = level_name == "pte"
    if entry & PTE_TABLE_BIT and not last:
        parts = ["TABLE"]
        if entry & NS_TABLE:
            parts.append("NSTable")
        if entry & AP_TABLE_RDONLY:
            parts.append("APTable=ro")
        if entry & AP_TABLE_NO_EL0:
            parts.append("APTable=noEL0")
        if entry & PXN_TABLE:
            parts.append("PXNTable")
        if entry & UXN_TABLE:
            parts.append("UXNTable")
        return " ".join(parts)
    if not entry & PTE_TABLE_BIT and last:
        return "reserved (bits[1:0] = 0b01 at the last level)"
    parts = ["PAGE" if last else "BLOCK"]
    parts.append(("EL0+EL1 " if entry & PTE_USER else "EL1 ") + ("ro" if entry & PTE_RDONLY else "RW"))
    parts.append("PXN" if entry & PTE_PXN else "px")
    parts.append("UXN" if entry & PTE_UXN else "ux")
    idx = (entry >> PTE_ATTRINDX_SHIFT) & 7
    parts.append(attr_text(idx, mair, linux_mair(kernel_version)))
    if not ds:
        parts.append({0: "SH=non", 1: "SH=res", 2: "SH=outer", 3: "SH=inner"}[(entry >> 8) & 3])
    for bit, n in ((PTE_NS, "NS"), (PTE_AF, "AF"), (PTE_NG, "nG"), (PTE_DBM, "DBM"), (PTE_CONT, "CONT"), (PTE_GP, "GP")):
        if entry & bit:
            parts.append(n)
    return " ".join(parts)


def _cacheability(n: int) -> str:
    """One half of a Normal MAIR attribute (D19 MAIR_EL1, Attr<n>[7:4] outer / [3:0] inner):
    0b0100 Non-cacheable; else 0b00RW WT transient, 0b01RW WB transient, 0b10RW WT, 0b11RW WB,
    R/W the read/write-allocate hints."""
    if n == 0b0100:
        return "NC"
    kind = ("WT-transient", "WB-transient", "WT", "WB")[n >> 2]
    alloc = ("R" if n & 2 else "") + ("W" if n & 1 else "")
    return f"{kind}-{alloc}A" if alloc else f"{kind}-noalloc"


def mair_attr_text(mair: int, idx: int) -> str:
    """The memory type MAIR_EL1 gives AttrIndx `idx` (D19 MAIR_EL1 Attr<n> encodings): Device
    (0b0000dd00: nGnRnE, nGnRE, nGRE, GRE; 0b0000dd01 the same with XS=0, FEAT_XS), Normal with
    inner and outer cacheability, Tagged Normal (0xf0, FEAT_MTE2), the FEAT_XS Normal 0x40/0xa0;
    other encodings are reserved (UNPREDICTABLE)."""
    a = (mair >> (8 * idx)) & 0xFF
    outer, inner = a >> 4, a & 0xF
    if outer == 0:
        name = ("nGnRnE", "nGnRE", "nGRE", "GRE")[inner >> 2]
        xs = {0: "", 1: " XS=0 (FEAT_XS)"}.get(inner & 3)
        return f"Device-{name}{xs}" if xs is not None else f"reserved Device encoding {a:#04x}"
    if a == 0xF0:
        return "Normal-Tagged WB-RWA (FEAT_MTE2)"
    if a in (0x40, 0xA0):
        return f"Normal {'NC' if a == 0x40 else 'WT-RA'} XS=0 (FEAT_XS)"
    if inner == 0:
        return f"reserved Normal encoding {a:#04x}"
    if outer == inner:
        return f"Normal {_cacheability(inner)}"
    return f"Normal inner {_cacheability(inner)} outer {_cacheability(outer)}"


def linux_mair(version: str | None) -> tuple[dict[int, str], int, str]:
    """Linux's MAIR_EL1 layout for kernel `version` ("6.1.0-...", None = the newest): the MT_*
    names by AttrIndx, the MAIR_EL1 value MAIR_EL1_SET builds, and a label saying which it is."""
    want = (99, 99)
    if version:
        parts = version.split(".")
        try:
            want = (int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0) if len(parts) > 1 else 0)
        except ValueError:
            pass
    for first, names in LINUX_MT_LAYOUTS:
        if want >= first:
            break
    mair = 0
    for idx, name in names.items():
        mair |= MAIR_ATTR[name] << (8 * idx)
    since = f"v{first[0]}.{first[1]}+" if first != (0, 0) else "before v5.10"
    return names, mair, f"Linux {since} MAIR layout"


def attr_text(idx: int, mair: tuple[int, str] | None, linux: tuple[dict[int, str], int, str]) -> str:
    """AttrIndx `idx` decoded through the MAIR_EL1 value given (`mair` = (value, where it came
    from)), else through Linux's layout (`linux` from linux_mair()); the text says which."""
    if mair is not None:
        value, source = mair
        return f"AttrIndx={idx}({mair_attr_text(value, idx)}; MAIR_EL1 from {source})"
    names, value, label = linux
    name = names.get(idx)
    if name is None:
        return f"AttrIndx={idx}(unused by Linux; {label})"
    kind = mair_attr_text(value, idx)
    if name == "NORMAL_TAGGED":
        kind = "Normal-Tagged with MTE, else Normal WB-RWA"
    return f"AttrIndx={idx}(MT_{name}: {kind}; {label})"


# -- registers ---------------------------------------------------------------------------------------

def ttbr_baddr(ttbr: int, pa52: bool) -> int:
    """The table address in TTBRn_EL1: ASID (63:48) and CnP (bit 0) dropped; with 52-bit OAs
    BADDR[51:48] sits in bits [5:2] (D19 TTBR1_EL1)."""
    if pa52:
        return (ttbr & mask(47, 6)) | (((ttbr >> 2) & 0xF) << 48)
    return ttbr & mask(47, 1)


def mode_from_tcr(tcr: int, upper: bool = True, kernel: str = "6.12") -> Arm64Mode:
    """The mode TCR_EL1 gives the TTBR1 (upper) or TTBR0 half."""
    if upper:
        tg = (tcr >> TCR_TG1_SHIFT) & 3
        granule = TG1_GRANULE.get(tg)
        tsz = (tcr >> TCR_T1SZ_SHIFT) & 0x3F
        hpd = bool(tcr & TCR_HPD1)
        tbi = bool(tcr & TCR_TBI1)
    else:
        tg = (tcr >> TCR_TG0_SHIFT) & 3
        granule = TG0_GRANULE.get(tg)
        tsz = (tcr >> TCR_T0SZ_SHIFT) & 0x3F
        hpd = bool(tcr & TCR_HPD0)
        tbi = bool(tcr & TCR_TBI0)
    if granule is None:
        raise ValueError(f"TCR_EL1 {tcr:#x}: reserved TG{1 if upper else 0} value {tg}")
    ds = bool(tcr & TCR_DS) and granule != 65536
    pa_bits = IPS_BITS.get((tcr >> TCR_IPS_SHIFT) & 7, 52)
    if pa_bits == 52 and not ds and granule != 65536:
        pa_bits = 48  # 52-bit OAs need DS with 4K/16K (IPS is treated as 48 bits otherwise)
    return make_mode(granule, 64 - tsz, upper=upper, ds=ds, pa_bits=pa_bits, hpd=hpd, tbi=tbi, kernel=kernel)


def perm_text(perm: int) -> str:
    """The effective permission word of a translation in words: EL0 access, write, execute at
    EL1 (PXN) and EL0 (UXN). (The CLI's x86 wording does not fit these bits.)"""
    return " ".join(
        (
            "EL0+EL1" if perm & PTE_USER else "EL1-only",
            "ro" if perm & PTE_RDONLY else "RW",
            "PXN" if perm & PTE_PXN else "EL1-exec",
            "UXN" if perm & PTE_UXN else "EL0-exec",
        )
    )
