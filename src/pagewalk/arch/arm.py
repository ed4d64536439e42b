"""32-bit ARM (VMSAv7) stage-1 translation: the short-descriptor and the long-descriptor (LPAE)
formats, as the MMU and as Linux's arch/arm/mm/dump.c walker see them.

Architecture: ARM Architecture Reference Manual ARMv7-A/R (DDI 0406C.d):
B3.5 "Short-descriptor translation table format": B3.5.1 descriptors (first level: bits[1:0]
0b00 fault, 0b01 page table (PXN bit 2, NS bit 3, Domain bits 8:5, base 31:10), 0b1x section
(PXN bit 0 where the PXN extension exists, B 2, C 3, XN 4, Domain 8:5, AP[1:0] 11:10, TEX 14:12,
AP[2] 15, S 16, nG 17, bit 18 supersection, NS 19; section base 31:20; supersection base 31:24
with PA[35:32] in bits 23:20 and PA[39:36] in bits 8:5); second level: 0b00 fault, 0b01 large
page (B 2, C 3, AP[1:0] 5:4, AP[2] 9, S 10, nG 11, TEX 14:12, XN 15, base 31:16), 0b1x small
page (XN 0, B 2, C 3, AP[1:0] 5:4, TEX 8:6, AP[2] 9, S 10, nG 11, base 31:12)); B3.5.4 TTBCR.N
selects TTBR0 below 2^(32-N) (its first-level table then has 4096 >> N entries) and TTBR1 above;
B3.7.1 AP[2:0] and, with SCTLR.AFE, AP[0] as the Access flag; B3.12.3 domains (DACR).
B3.6 "Long-descriptor translation table format" (LPAE): 8-byte descriptors, bits[1:0] x0 invalid,
0b01 block at the first (1 GiB) and second (2 MiB) level, 0b11 table (levels 1, 2) or page
(level 3); output address bits 39:12 (bits 47:40 set: Address size fault); AttrIndx 4:2, NS 5,
AP[2:1] 7:6, SH 9:8, AF 10 (clear: Access flag fault), nG 11, PXN 53, XN 54; table descriptors
PXNTable 59, XNTable 60, APTable 62:61, NSTable 63 (B3.6.1); TTBCR.T0SZ 2:0, T1SZ 18:16, EAE 31:
a region of 2^(32-TxSZ) bytes starts at the first level when TxSZ is 0 or 1, else at the second
(B3.6.6).

Linux's view (arch/arm/include/asm/pgtable-2level*.h, pgtable-3level*.h, arch/arm/mm/dump.c of
v6.1): with short descriptors the kernel's pgd has 2048 8-byte entries (two hardware first-level
entries each), the pmd is folded onto the first of the two, and a "pte" page holds two 256-entry
Linux (software) tables at offsets 0 and 1024 before the two hardware tables at 2048 and 3072.
dump.c's walk_pmd() notes pmd[0] when it is none, a section (pmd_large: bit 1) or not present;
otherwise it walks the 512 Linux PTEs of pmd[0]'s page over the whole 2 MiB; then it notes pmd[1]
when that is a section. Here that is the first-level table read as 4096 entries whose classify()
looks at pairs: an even entry is a hole, a leaf or a table pointing at the Linux table at page
offset 0; the odd entry after a table points at offset 1024 (whatever pmd[1] holds), after
anything else it is a leaf when it is a section, else no event (SKIP). With LPAE the pgd's 4
entries are walked as tables when non-zero (pud_none() only), a pmd is noted when none,
pmd_large() (bits[1:0] = 0b01) or !pmd_present() (bit 0 clear), and PTEs are the hardware's own.
"""

from __future__ import annotations


import numpy as np

from ..bits import mask
from ..mode import HwKind, Kind, Level, PagingMode

U64 = np.uint64
TOP = 1 << 32


def _u(v: int) -> np.uint64:
    return np.uint64(v)


# -- short-descriptor hardware bits (B3.5.1) -----------------------------------------------------
SD_TYPE_MASK = 3
SD_L1_TABLE = 1
SD_L1_PXN_TABLE = 1 << 2
SD_SECT_PXN = 1 << 0
SD_SECT_B, SD_SECT_C, SD_SECT_XN = 1 << 2, 1 << 3, 1 << 4
SD_DOMAIN_SHIFT = 5
SD_SECT_AP0, SD_SECT_AP1, SD_SECT_AP2 = 1 << 10, 1 << 11, 1 << 15
SD_SECT_S, SD_SECT_NG, SD_SECT_SUPER, SD_SECT_NS = 1 << 16, 1 << 17, 1 << 18, 1 << 19
SD_L2_LARGE = 1
SD_L2_SMALL = 2
SD_SMALL_XN, SD_LARGE_XN = 1 << 0, 1 << 15
SD_L2_AP0, SD_L2_AP1, SD_L2_AP2 = 1 << 4, 1 << 5, 1 << 9
SD_L2_S, SD_L2_NG = 1 << 10, 1 << 11

# Linux's 2-level software PTE bits (arch/arm/include/asm/pgtable-2level.h)
L_PTE_PRESENT = 1 << 0
L_PTE_YOUNG = 1 << 1
L_PTE_DIRTY = 1 << 6
L_PTE_RDONLY_2L = 1 << 7
L_PTE_USER_2L = 1 << 8
L_PTE_XN_2L = 1 << 9
L_PTE_SHARED_2L = 1 << 10
L_PTE_MT_MASK_2L = 0xF << 2
# Section bits of dump.c's section_bits[] (pgtable-2level-hwdef.h, ARMv6+)
PMD_SECT_XN_2L = SD_SECT_XN
PMD_SECT_AP_WRITE = SD_SECT_AP0
PMD_SECT_AP_READ = SD_SECT_AP1
PMD_SECT_APX = SD_SECT_AP2
PMD_SECT_S_2L = SD_SECT_S
PMD_DOMAIN_MASK = 0xF << SD_DOMAIN_SHIFT
# pg_level[].mask as ptdump_initialize() ORs it (dump.c): pmd (section_bits) and pte (pte_bits)
SECT_MASK_2L = PMD_SECT_APX | PMD_SECT_AP_READ | PMD_SECT_AP_WRITE | PMD_SECT_XN_2L | PMD_SECT_S_2L
PTE_MASK_2L = L_PTE_USER_2L | L_PTE_RDONLY_2L | L_PTE_XN_2L | L_PTE_SHARED_2L | L_PTE_MT_MASK_2L

# -- long-descriptor (LPAE) bits (B3.6.1; pgtable-3level-hwdef.h, pgtable-3level.h) -----------------
LD_VALID = 1 << 0
LD_TABLE_BIT = 1 << 1
LD_ATTRINDX_MASK = 7 << 2
LD_NS = 1 << 5
LD_AP1 = 1 << 6  # PMD_SECT_USER / L_PTE_USER
LD_AP2 = 1 << 7  # PMD_SECT_AP2 (read only)
LD_SH = 3 << 8  # PMD_SECT_S / L_PTE_SHARED
LD_AF = 1 << 10
LD_NG = 1 << 11
LD_PXN = 1 << 53
LD_XN = 1 << 54  # PMD_SECT_XN / L_PTE_XN
L_PTE_DIRTY_3L = 1 << 55
L_PTE_SPECIAL = 1 << 56
L_PTE_NONE = 1 << 57
L_PTE_RDONLY_3L = 1 << 58  # also L_PMD_SECT_RDONLY (software)
LD_PXN_TABLE = 1 << 59
LD_XN_TABLE = 1 << 60
LD_AP_TABLE0 = 1 << 61  # no PL0 access below
LD_AP_TABLE1 = 1 << 62  # no write access below
LD_NS_TABLE = 1 << 63
LD_OA = mask(39, 12)
LD_OA_HIGH = mask(47, 40)
PHYS_MASK_3L = (1 << 40) - 1
SECT_MASK_3L = LD_AP1 | L_PTE_RDONLY_3L | LD_AP2 | LD_XN | LD_SH
PTE_MASK_3L = LD_AP1 | L_PTE_RDONLY_3L | LD_XN | LD_SH | LD_ATTRINDX_MASK

# -- the permission word of translate() and the runs (arch-defined, see perm()) ----------------
PERM_XN = 1 << 0
PERM_PXN = 1 << 1
PERM_AP0, PERM_AP1, PERM_AP2 = 1 << 2, 1 << 3, 1 << 4
PERM_DOMAIN_SHIFT = 5
PERM_DOMAIN = 0xF << PERM_DOMAIN_SHIFT
PERM_NO_PL0 = 1 << 9  # LPAE APTable[0] below a table
PERM_NO_WRITE = 1 << 10  # LPAE APTable[1] below a table

# TTBCR (B4.1.153)
TTBCR_N_MASK = 7
TTBCR_PD0, TTBCR_PD1 = 1 << 4, 1 << 5
TTBCR_T1SZ_SHIFT = 16
TTBCR_EAE = 1 << 31
SCTLR_M = 1 << 0
SCTLR_TRE = 1 << 28
SCTLR_AFE = 1 << 29

# hw_classify() fault reasons
(_SD_FAULT_SECT, _SD_FAULT_PAGE, _SD_RESERVED, _AF, _LD_INVALID, _LD_RESERVED, _LD_ADDR_SIZE) = range(1, 8)
_REASONS = {
    _SD_FAULT_SECT: "translation fault, section (first-level bits[1:0] = 0b00)",
    _SD_FAULT_PAGE: "translation fault, page (second-level bits[1:0] = 0b00)",
    _SD_RESERVED: "translation fault (first-level bits[1:0] = 0b11 without the PXN extension)",
    _AF: "access flag fault (AF clear)",
    _LD_INVALID: "translation fault (descriptor bit 0, valid, is clear)",
    _LD_RESERVED: "translation fault (bits[1:0] = 0b01: no block descriptor at this level)",
    _LD_ADDR_SIZE: "address size fault (output address bits 47:40 not zero)",
}


class ArmMode(PagingMode):
    """A PagingMode whose VAs are `va_base + offset` (a TTBR1 region is the top of the 4 GiB)."""

    _fields = PagingMode._fields + ("va_base",)
    _compare = PagingMode._compare + ("va_base",)

    def __init__(self, *args: object, va_base: int = 0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._set(va_base=va_base)

    def canonical_va(self, rel: int) -> int:
        return self.va_base + rel

    def table_offset(self, va: int) -> int:
        return (va - self.va_base) & ((1 << self.va_bits) - 1)

    def is_canonical(self, va: int) -> bool:
        return self.va_base <= va < self.va_base + (1 << self.va_bits)


# -- short descriptors -----------------------------------------------------------------------------


def _sd_l1_out(e: np.ndarray) -> np.ndarray:
    """Output address of first-level entries: page-table base, section or supersection base."""
    table = e & _u(0xFFFFFC00)
    sect = e & _u(0xFFF00000)
    sup = (e & _u(0xFF000000)) | (((e >> _u(20)) & _u(0xF)) << _u(32)) | (((e >> _u(5)) & _u(0xF)) << _u(36))
    t = e & _u(3)
    return np.where(t == _u(SD_L1_TABLE), table, np.where((e & _u(SD_SECT_SUPER)) != 0, sup, sect))


def _sd_l2_out(e: np.ndarray) -> np.ndarray:
    return np.where((e & _u(3)) == _u(SD_L2_LARGE), e & _u(0xFFFF0000), e & _u(0xFFFFF000))


def short_mode(n: int = 0, *, linux: bool = True, pxn: bool = True, afe: bool = False, upper: bool = False,
               dacr: int | None = None) -> ArmMode:
    """The short-descriptor mode of one TTBR: TTBR0 with TTBCR.N = `n` (first-level table of
    4096 >> n entries, VAs below 2^(32-n)), or with `upper` TTBR1 (always 4096 entries; the
    hardware uses it only from 2^(32-n) up). `linux` picks classify(): dump.c's walk over the
    Linux tables (see the module doc) or the MMU's own tables (for extract and the builders).
    `pxn`: the PXN extension (bits[1:0] = 0b11 is a section with PXN; Cortex-A15 has it);
    `afe`: SCTLR.AFE, AP[0] is an Access flag whose clear value faults; `dacr`, when known, lets
    `translate` say what the domain's DACR field does with the AP bits."""
    if not 0 <= n <= 7:
        raise ValueError(f"TTBCR.N {n} is not 0..7")
    bits = 12 if upper else 12 - n
    levels = (
        Level(name="pgd", shift=20, bits=bits, klevel=3, hole_depth=3),
        Level(name="pte", shift=12, bits=8, klevel=4, hole_depth=4),
    )

    def hw_classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(HwKind, PA or reason): B3.5.1 descriptor types, the Access flag with SCTLR.AFE."""
        e = e.astype(U64, copy=False)
        t = e & _u(3)
        kind = np.full(e.shape, HwKind.FAULT, dtype=np.uint8)
        reason = np.zeros(e.shape, dtype=U64)
        if level == 0:
            out = _sd_l1_out(e)
            kind[t == _u(1)] = HwKind.TABLE
            sect = (t == _u(2)) | ((t == _u(3)) & pxn)
            kind[sect] = HwKind.LEAF
            if afe:
                noaf = sect & ((e & _u(SD_SECT_AP0)) == 0)
                kind[noaf] = HwKind.FAULT
                reason[noaf] = _AF
            reason[(t == _u(3)) & (not pxn)] = _SD_RESERVED
            reason[t == _u(0)] = _SD_FAULT_SECT
        else:
            out = _sd_l2_out(e)
            page = t != _u(0)
            kind[page] = HwKind.LEAF
            if afe:
                noaf = page & ((e & _u(SD_L2_AP0)) == 0)
                kind[noaf] = HwKind.FAULT
                reason[noaf] = _AF
            reason[~page] = _SD_FAULT_PAGE
        return kind, np.where(kind == HwKind.FAULT, reason, out)

    def classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = e.astype(U64, copy=False)
        if not linux:
            return _hw_as_walk(hw_classify, level, e, last=1)
        if level == 1:
            # every Linux PTE slot is a note_page(level 5) event; the PA is pte & PAGE_MASK
            return np.full(e.shape, Kind.LEAF, dtype=np.uint8), e & _u(0xFFFFF000)
        return _linux_short_l1(e)

    def perm(level: int, e: np.ndarray) -> np.ndarray:
        """AP[2:0], XN, PXN and the domain as the permission word (PERM_*): a page table gives
        its domain and PXN, a section or page its access bits."""
        e = e.astype(U64, copy=False)
        t = e & _u(3)
        if level == 0:
            dom = ((e >> _u(SD_DOMAIN_SHIFT)) & _u(0xF)) << _u(PERM_DOMAIN_SHIFT)
            table = np.where((e & _u(SD_L1_PXN_TABLE)) != 0, _u(PERM_PXN), _u(0)) | dom
            sect = (
                np.where((e & _u(SD_SECT_XN)) != 0, _u(PERM_XN), _u(0))
                | np.where(((e & _u(SD_SECT_PXN)) != 0) & pxn, _u(PERM_PXN), _u(0))
                | np.where((e & _u(SD_SECT_AP0)) != 0, _u(PERM_AP0), _u(0))
                | np.where((e & _u(SD_SECT_AP1)) != 0, _u(PERM_AP1), _u(0))
                | np.where((e & _u(SD_SECT_AP2)) != 0, _u(PERM_AP2), _u(0))
                | np.where((e & _u(SD_SECT_SUPER)) != 0, _u(0), dom)  # supersections are domain 0
            )
            return np.where(t == _u(1), table, np.where(t == _u(0), _u(0), sect))
        xn = np.where(t == _u(1), e & _u(SD_LARGE_XN), e & _u(SD_SMALL_XN)) != 0
        return np.where(
            t == _u(0),
            _u(0),
            np.where(xn, _u(PERM_XN), _u(0))
            | np.where((e & _u(SD_L2_AP0)) != 0, _u(PERM_AP0), _u(0))
            | np.where((e & _u(SD_L2_AP1)) != 0, _u(PERM_AP1), _u(0))
            | np.where((e & _u(SD_L2_AP2)) != 0, _u(PERM_AP2), _u(0)),
        )

    def perm_combine(parent: np.ndarray, child: np.ndarray) -> np.ndarray:
        """A page table contributes domain and PXN, its pages AP and XN: the union (B3.7)."""
        return parent | child

    half = "ttbr1" if upper else f"ttbr0-n{n}"
    return ArmMode(
        name=f"arm-short-{half}{'' if linux else '-hw'}",
        arch="arm",
        levels=levels,
        entry_bytes=4,
        byteorder="<",
        va_bits=32 if upper else 32 - n,
        canonical=False,
        pa_bits=40,
        classify=classify,
        hw_classify=hw_classify,
        perm=perm,
        perm_combine=perm_combine,
        perm_top=0,
        ptdump_key_mask=SECT_MASK_2L | PTE_MASK_2L,
        root_align=1 << (14 - (0 if upper else n)),
        fault_reason=lambda code: _REASONS.get(code, "fault"),
        describe=lambda level_name, entry: describe_short(level_name, entry, pxn=pxn),
        extra={"format": "short", "linux": linux, "leaf_pa": leaf_pa, "perm_text": lambda p: perm_text_short(p, dacr), "n": n,
               "upper": upper, "afe": afe, "pxn": pxn, "dacr": dacr, "arch_bits": arch_bits},
        va_base=(TOP - (1 << 32)) if upper else 0,
    )


def _linux_short_l1(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dump.c's walk_pmd() over first-level entries read in pairs (pmd[0], pmd[1]).

    A whole table (even length) is paired; a lone entry is taken as a pmd[0].
    """
    kind = np.full(e.shape, Kind.HOLE, dtype=np.uint8)
    out = e & _u(0xFFFFF000)
    if e.ndim == 0 or e.shape[-1] % 2 or e.shape[-1] < 2:
        big = (e & _u(2)) != 0
        kind[:] = np.where(e == 0, np.uint8(Kind.HOLE), np.where(big, np.uint8(Kind.LEAF), np.uint8(Kind.TABLE)))
        return kind, out
    p0 = e[..., 0::2]
    p1 = e[..., 1::2]
    k0 = np.where(p0 == 0, np.uint8(Kind.HOLE), np.where((p0 & _u(2)) != 0, np.uint8(Kind.LEAF), np.uint8(Kind.TABLE)))
    table0 = k0 == Kind.TABLE
    k1 = np.where(table0, np.uint8(Kind.TABLE), np.where((p1 & _u(2)) != 0, np.uint8(Kind.LEAF), np.uint8(Kind.SKIP)))
    kind[..., 0::2] = k0
    kind[..., 1::2] = k1
    base = p0 & _u(0xFFFFF000)  # pmd_page_vaddr(): the page holding both Linux tables
    out[..., 0::2] = base
    out[..., 1::2] = np.where(table0, base + _u(1024), p1 & _u(0xFFFFF000))
    return kind, out


def _hw_as_walk(hw_classify, level: int, e: np.ndarray, last: int) -> tuple[np.ndarray, np.ndarray]:
    """A walker that follows the MMU's tables: faults are holes, every last-level slot an event."""
    hk, out = hw_classify(level, e)
    if level == last:
        return np.full(e.shape, Kind.LEAF, dtype=np.uint8), np.where(hk == HwKind.LEAF, out, _u(0))
    kind = np.where(hk == HwKind.TABLE, np.uint8(Kind.TABLE),
                    np.where(hk == HwKind.LEAF, np.uint8(Kind.LEAF), np.uint8(Kind.HOLE)))
    kind = np.where((e != 0) & (hk == HwKind.FAULT), np.uint8(Kind.SKIP), kind)
    return kind.astype(np.uint8), np.where(hk == HwKind.FAULT, _u(0), out)


def leaf_pa(mode: PagingMode, level: int, entry, va):
    """The PA of `va` through the leaf `entry` (B3.5.1, B3.6.1): sections, supersections (16 MiB)
    and large pages (64 KiB, repeated 16 times in the table) take their low bits from the VA.
    Works on ints and on arrays (translate_many())."""
    e = np.asarray(entry, dtype=U64)
    v = np.asarray(va, dtype=U64)
    if mode.extra["format"] == "short":
        if level == 0:
            sup = (e & _u(SD_SECT_SUPER)) != 0
            span = np.where(sup, _u(1 << 24), _u(1 << 20))
            base = _sd_l1_out(e)
        else:
            large = (e & _u(3)) == _u(SD_L2_LARGE)
            span = np.where(large, _u(1 << 16), _u(1 << 12))
            base = _sd_l2_out(e)
    else:
        span = np.full(e.shape, _u(mode.levels[level].entry_span))
        base = e & _u(LD_OA)
    out = (base & ~(span - _u(1))) | (v & (span - _u(1)))
    return int(out) if out.ndim == 0 else out


# -- long descriptors (LPAE) ------------------------------------------------------------------------


def lpae_mode(tsz: int = 0, *, upper: bool = False, linux: bool = True) -> ArmMode:
    """The long-descriptor mode of one TTBR with TxSZ = `tsz` (B3.6.6): a 2^(32-tsz)-byte region
    at the bottom (TTBR0) or top (`upper`, TTBR1) of the 4 GiB; first-level start for tsz 0-1
    (2^(2-tsz) entries), second-level start otherwise. `linux`: dump.c's walker (see the module
    doc), else the MMU's own view (faults are holes)."""
    if not 0 <= tsz <= 7:
        raise ValueError(f"TxSZ {tsz} is not 0..7")
    va_bits = 32 - tsz
    names = ("pgd", "pmd", "pte")
    shifts = (30, 21, 12)
    first = 0 if va_bits > 30 else 1
    levels = []
    for j in range(first, 3):
        bits = 9 if j else va_bits - 30
        if j == 1 and first == 1:
            bits = va_bits - 21
        levels.append(Level(name=names[j], shift=shifts[j], bits=bits, klevel=2 + j, hole_depth=2 + j))
    nlev = len(levels)
    last = nlev - 1

    def arm_level(level: int) -> int:
        return level + first + 1  # 1 first, 2 second, 3 third (B3.6)

    def hw_classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = e.astype(U64, copy=False)
        t = e & _u(3)
        kind = np.full(e.shape, HwKind.FAULT, dtype=np.uint8)
        reason = np.full(e.shape, _u(_LD_RESERVED))
        lv = arm_level(level)
        out = e & _u(LD_OA)
        if lv == 3:
            leaf = t == _u(3)
        else:
            kind[t == _u(3)] = HwKind.TABLE
            leaf = t == _u(1)
            out = np.where(leaf, e & _u(mask(39, shifts[lv - 1])), out)
        kind[leaf] = HwKind.LEAF
        noaf = leaf & ((e & _u(LD_AF)) == 0)
        kind[noaf] = HwKind.FAULT
        reason[noaf] = _AF
        big = (e & _u(LD_OA_HIGH)) != 0
        bad = big & (kind != HwKind.FAULT)
        kind[bad] = HwKind.FAULT
        reason[bad] = _LD_ADDR_SIZE
        inval = (e & _u(LD_VALID)) == 0
        kind[inval] = HwKind.FAULT
        reason[inval] = _LD_INVALID
        return kind, np.where(kind == HwKind.FAULT, reason, out)

    def classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = e.astype(U64, copy=False)
        if not linux:
            return _hw_as_walk(hw_classify, level, e, last=last)
        table_pa = e & _u(PHYS_MASK_3L & ~0xFFF)  # p?d_page_vaddr(): PHYS_MASK & (s32)PAGE_MASK
        if level == last:
            return np.full(e.shape, Kind.LEAF, dtype=np.uint8), table_pa
        if arm_level(level) == 1:  # pgd: pud_none() only; anything else is walked as a pmd table
            return np.where(e == 0, np.uint8(Kind.HOLE), np.uint8(Kind.TABLE)).astype(np.uint8), table_pa
        noted = ((e & _u(3)) == _u(1)) | ((e & _u(LD_VALID)) == 0)  # pmd_large() || !pmd_present()
        kind = np.where(e == 0, np.uint8(Kind.HOLE), np.where(noted, np.uint8(Kind.LEAF), np.uint8(Kind.TABLE)))
        return kind.astype(np.uint8), np.where(noted, e & _u(mask(39, 21)), table_pa)

    def perm(level: int, e: np.ndarray) -> np.ndarray:
        """AP[2:1] (as PERM_AP2/AP1), PXN, XN; tables their APTable/PXNTable/XNTable (B3.6.1)."""
        e = e.astype(U64, copy=False)
        leafp = (
            np.where((e & _u(LD_AP1)) != 0, _u(PERM_AP1), _u(0))
            | np.where((e & _u(LD_AP2)) != 0, _u(PERM_AP2), _u(0))
            | np.where((e & _u(LD_PXN)) != 0, _u(PERM_PXN), _u(0))
            | np.where((e & _u(LD_XN)) != 0, _u(PERM_XN), _u(0))
        )
        if level == last:
            return leafp
        tablep = (
            np.where((e & _u(LD_AP_TABLE0)) != 0, _u(PERM_NO_PL0), _u(0))
            | np.where((e & _u(LD_AP_TABLE1)) != 0, _u(PERM_NO_WRITE), _u(0))
            | np.where((e & _u(LD_PXN_TABLE)) != 0, _u(PERM_PXN), _u(0))
            | np.where((e & _u(LD_XN_TABLE)) != 0, _u(PERM_XN), _u(0))
        )
        return np.where((e & _u(3)) == _u(3), tablep, leafp)

    def perm_combine(parent: np.ndarray, child: np.ndarray) -> np.ndarray:
        """Hierarchical controls only take rights away: the union of restrictions (B3.6.1)."""
        return parent | child

    half = "ttbr1" if upper else "ttbr0"
    return ArmMode(
        name=f"arm-lpae-{va_bits}bit-{nlev}level-{half}{'' if linux else '-hw'}",
        arch="arm",
        levels=tuple(levels),
        entry_bytes=8,
        byteorder="<",
        va_bits=va_bits,
        canonical=False,
        pa_bits=40,
        classify=classify,
        hw_classify=hw_classify,
        perm=perm,
        perm_combine=perm_combine,
        perm_top=0,
        ptdump_key_mask=SECT_MASK_3L | PTE_MASK_3L,
        root_align=max(8, levels[0].entries * 8),
        fault_reason=lambda code: _REASONS.get(code, "fault"),
        describe=describe_lpae,
        extra={"format": "lpae", "linux": linux, "leaf_pa": leaf_pa, "perm_text": perm_text_lpae, "tsz": tsz,
               "upper": upper, "first_level": first + 1, "arch_bits": arch_bits},
        va_base=(TOP - (1 << va_bits)) if upper else 0,
    )



# -- what the bits mean to the analyses --------------------------------------------------------------

def _type_not_fault(e: np.ndarray) -> np.ndarray:
    """Short descriptors whose type bits[1:0] are not 0b00 (B3.5.1)."""
    return (np.asarray(e, dtype=U64) & _u(SD_TYPE_MASK)) != 0


def arch_bits(mode: PagingMode):
    """The analyses' ArchBits (pagewalk.analysis.mappings) of an arm mode, imported only when an
    analysis runs.

    The permission word is perm()'s, folded by perm_combine(): PERM_AP2/AP1/AP0, XN, PXN (B3.7.1
    table B3-8: PL1 may write when AP[2] is clear and AP[0] set, PL0 may access when AP[1] is
    set; LPAE: AP[2:1] with APTable, B3.6.1). With short descriptors read as Linux walks them,
    the second level holds Linux's *software* PTEs (pgtable-2level.h: L_PTE_RDONLY, L_PTE_USER,
    L_PTE_XN; the hardware copy 2048 bytes further is derived from them by
    cpu_v7_set_pte_ext()), so that level's rights are tested on the entry itself, as dump.c's
    W+X check tests them (pte_bits[]: "ro" L_PTE_RDONLY, "NX" L_PTE_XN), the kernel's execution
    also under the page table's PXN (user page tables get PMD_PXNTABLE when the CPU has PXN:
    mmu.c, user_pmd_table). Global: nG clear
    (section bit 17, page bit 11, LPAE bit 11); a Linux PTE is made nG only for user pages
    below TASK_SIZE (set_pte_at()), taken here as "L_PTE_USER clear".
    """
    from ..analysis.mappings import ArchBits, Bit

    if mode.extra["format"] == "lpae":
        return ArchBits(
            valid=Bit(LD_VALID, LD_VALID),
            user=Bit(PERM_AP1 | PERM_NO_PL0, PERM_AP1),
            read=Bit(0, 0),
            write=Bit(PERM_AP2 | PERM_NO_WRITE, 0),
            kexec=Bit(PERM_XN | PERM_PXN, 0),
            uexec=Bit(PERM_XN | PERM_AP1 | PERM_NO_PL0, PERM_AP1),
            glob=Bit(LD_NG, 0),
            status_mask=LD_AF | L_PTE_DIRTY_3L,
            memtype_mask=LD_ATTRINDX_MASK,
        )
    last = len(mode.levels) - 1
    hw = {
        # valid: descriptor type not 0b00 (B3.5.1: a fault entry); a valid one may still fault
        # (Access flag, 0b11 without the PXN extension)
        "valid": Bit(SD_TYPE_MASK, 0, at=tuple((lv, _type_not_fault) for lv in range(last + 1))),
        "user": Bit(PERM_AP1, PERM_AP1),
        "read": Bit(0, 0),
        # with SCTLR.AFE, AP[0] is the Access flag and AP[2] alone says read-only (B3.7.1)
        "write": Bit(PERM_AP2, 0) if mode.extra["afe"] else Bit(PERM_AP2 | PERM_AP0, PERM_AP0),
        "kexec": Bit(PERM_XN | PERM_PXN, 0),
        "uexec": Bit(PERM_XN | PERM_AP1, PERM_AP1),
        "glob": Bit(SD_SECT_NG, 0, at=((last, Bit(SD_L2_NG, 0)),)),
    }
    if mode.extra["linux"]:  # the second level is Linux's software PTE table
        def sw(bit: Bit, own: Bit) -> Bit:
            return Bit(bit.mask, bit.value, entry=bit.entry, at=tuple(a for a in bit.at if a[0] != last) + ((last, own),))

        hw.update(
            valid=sw(hw["valid"], Bit(L_PTE_PRESENT, L_PTE_PRESENT, entry=True)),
            user=sw(hw["user"], Bit(L_PTE_USER_2L, L_PTE_USER_2L, entry=True)),
            write=sw(hw["write"], Bit(L_PTE_RDONLY_2L, 0, entry=True)),
            kexec=sw(hw["kexec"], Bit(L_PTE_XN_2L, 0, entry=True, also=Bit(PERM_PXN, 0))),
            uexec=sw(hw["uexec"], Bit(L_PTE_XN_2L | L_PTE_USER_2L, L_PTE_USER_2L, entry=True)),
            glob=sw(hw["glob"], Bit(L_PTE_USER_2L, 0, entry=True)),
        )
    return ArchBits(**hw, status_mask=0, memtype_mask=0)


# -- registers ---------------------------------------------------------------------------------------

def ttbr_short_base(ttbr: int, n: int = 0, upper: bool = False) -> int:
    """The first-level table address in a short-descriptor TTBR (B4.1.154): bits 31:14-N (TTBR1: 31:14)."""
    low = 14 if upper else 14 - n
    return ttbr & mask(31, low)


def ttbr_lpae_base(ttbr: int, tsz: int) -> int:
    """The table address in a 64-bit TTBR (B4.1.155): BADDR bits 39:x, x = 5 - TxSZ for a
    first-level start, 14 - TxSZ for a second-level one; the ASID (55:48) dropped."""
    x = 5 - tsz if tsz <= 1 else 14 - tsz
    return ttbr & mask(39, x)


def is_lpae(ttbcr: int) -> bool:
    return bool(ttbcr & TTBCR_EAE)


# -- text ------------------------------------------------------------------------------------------

_AP_TEXT = {0: ("none", "none"), 1: ("RW", "none"), 2: ("RW", "ro"), 3: ("RW", "RW"), 4: ("reserved", "reserved"),
            5: ("ro", "none"), 6: ("ro", "ro"), 7: ("ro", "ro")}


_DACR_TEXT = {0: "no access: domain fault", 1: "client", 2: "reserved: domain fault", 3: "manager: AP not checked"}


def perm_text_short(perm: int, dacr: int | None = None) -> str:
    """Access rights of a short-descriptor translation (AP[2:0], B3.7.1 table B3-8), XN, PXN and
    the domain, whose DACR field (B4.1.43) decides whether AP is checked at all.

    >>> perm_text_short(PERM_AP0 | PERM_XN)
    'domain 0: PL1 RW, PL0 none, XN'
    >>> perm_text_short(PERM_AP0 | 3 << PERM_DOMAIN_SHIFT, dacr=0x51)
    'domain 3 (client): PL1 RW, PL0 none'
    """
    ap = (2 if perm & PERM_AP1 else 0) | (1 if perm & PERM_AP0 else 0) | (4 if perm & PERM_AP2 else 0)
    pl1, pl0 = _AP_TEXT[ap]
    dom = (perm >> PERM_DOMAIN_SHIFT) & 0xF
    field = f" ({_DACR_TEXT[(dacr >> (2 * dom)) & 3]})" if dacr is not None else ""
    out = f"domain {dom}{field}: PL1 {pl1}, PL0 {pl0}"
    if perm & PERM_XN:
        out += ", XN"
    elif perm & PERM_PXN:
        out += ", PXN"
    return out


def perm_text_lpae(perm: int) -> str:
    """Access rights of an LPAE translation: AP[2:1] folded with APTable, PXN, XN (B3.7.1).

    >>> perm_text_lpae(PERM_AP2 | PERM_XN)
    'PL1 ro, PL0 none, XN'
    """
    ro = bool(perm & (PERM_AP2 | PERM_NO_WRITE))
    pl0 = bool(perm & PERM_AP1) and not perm & PERM_NO_PL0
    out = f"PL1 {'ro' if ro else 'RW'}, PL0 {('ro' if ro else 'RW') if pl0 else 'none'}"
    if perm & PERM_XN:
        out += ", XN"
    elif perm & PERM_PXN:
        out += ", PXN"
    return out


def describe_short(level_name: str, entry: int, pxn: bool = True) -> str:
    """Decoded fields of a short descriptor for `translate` (B3.5.1)."""
    t = entry & 3
    if level_name == "pgd":
        if t == 0:
            return "fault"
        if t == 1:
            return f"PAGE TABLE domain={(entry >> 5) & 0xF}" + (" PXN" if entry & SD_L1_PXN_TABLE else "") + (
                " NS" if entry & 8 else "")
        if t == 3 and not pxn:
            return "reserved"
        sup = bool(entry & SD_SECT_SUPER)
        ap = ((entry >> 15) & 1) << 2 | (entry >> 10) & 3
        parts = ["SUPERSECTION" if sup else f"SECTION domain={(entry >> 5) & 0xF}", f"AP={ap:03b}",
                 f"TEX={(entry >> 12) & 7:03b}", f"C={(entry >> 3) & 1}", f"B={(entry >> 2) & 1}"]
        for bit, n in ((SD_SECT_XN, "XN"), (SD_SECT_S, "S"), (SD_SECT_NG, "nG"), (SD_SECT_NS, "NS")):
            if entry & bit:
                parts.append(n)
        if t == 3:
            parts.append("PXN")
        return " ".join(parts)
    if t == 0:
        return "fault"
    large = t == 1
    ap = ((entry >> 9) & 1) << 2 | (entry >> 4) & 3
    tex = (entry >> 12) & 7 if large else (entry >> 6) & 7
    parts = ["LARGE PAGE" if large else "SMALL PAGE", f"AP={ap:03b}", f"TEX={tex:03b}", f"C={(entry >> 3) & 1}",
             f"B={(entry >> 2) & 1}"]
    if entry & (SD_LARGE_XN if large else SD_SMALL_XN):
        parts.append("XN")
    for bit, n in ((SD_L2_S, "S"), (SD_L2_NG, "nG")):
        if entry & bit:
            parts.append(n)
    return " ".join(parts)


def describe_lpae(level_name: str, entry: int) -> str:
    """Decoded fields of a long descriptor for `translate` (B3.6.1)."""
    if not entry & LD_VALID:
        return "invalid"
    last = level_name == "pte"
    if entry & LD_TABLE_BIT and not last:
        parts = ["TABLE"]
        for bit, n in ((LD_NS_TABLE, "NSTable"), (LD_AP_TABLE1, "APTable=ro"), (LD_AP_TABLE0, "APTable=noPL0"),
                       (LD_PXN_TABLE, "PXNTable"), (LD_XN_TABLE, "XNTable")):
            if entry & bit:
                parts.append(n)
        return " ".join(parts)
    if not entry & LD_TABLE_BIT and last:
        return "reserved (bits[1:0] = 0b01 at the third level)"
    parts = ["PAGE" if last else "BLOCK"]
    parts.append(("PL0+PL1 " if entry & LD_AP1 else "PL1 ") + ("ro" if entry & LD_AP2 else "RW"))
    parts.append(f"AttrIndx={(entry >> 2) & 7}")
    parts.append({0: "SH=non", 1: "SH=res", 2: "SH=outer", 3: "SH=inner"}[(entry >> 8) & 3])
    for bit, n in ((LD_PXN, "PXN"), (LD_XN, "XN"), (LD_NS, "NS"), (LD_AF, "AF"), (LD_NG, "nG"),
                   (L_PTE_DIRTY_3L, "dirty"), (L_PTE_RDONLY_3L, "L_PTE_RDONLY")):
        if entry & bit:
            parts.append(n)
    return " ".join(parts)


SHORT = short_mode(0)  # Linux's kernel table (swapper_pg_dir), TTBCR.N = 0
SHORT_HW = short_mode(0, linux=False)
LPAE = lpae_mode(0)  # swapper_pg_dir: 4-entry pgd, 3 levels over 4 GiB
LPAE_HW = lpae_mode(0, linux=False)
