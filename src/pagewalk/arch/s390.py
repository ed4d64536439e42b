"""s390x dynamic address translation (DAT): region-first/second/third, segment and page tables.

Hardware: z/Architecture Principles of Operation (SA22-7832-13), chapter 3 "Storage", section
"Dynamic Address Translation": "Translation Control" (the ASCE in CR1 / CR7 / CR13: table origin
bits 0-51, designation type DT bits 60-61, table length TL bits 62-63), "Translation Tables"
(region-table entry: origin 0-51, P 54, TF 56-57, I 58, TT 60-61, TL 62-63; region-third entry
with FC=1 (EDAT-2): 2 GiB frame address 0-32, FC 53, P 54, IEP 55; segment-table entry:
page-table origin 0-52, FC 53, P 54, I 58, CS 59, TT 60-61 = 00; with FC=1 (EDAT-1): 1 MiB frame
address 0-43, IEP 55; page-table entry: frame 0-51, bit 52 must be zero, I 53, P 54, IEP 55) and
"Translation Process" (the ASCE-type and table-length checks on the VA's leftmost index bits, the
table lookups with TF/TL, invalid bits and translation-specification exceptions). Bits are
numbered IBM style, 0 = most significant: bit n of an entry is the value 1 << (63 - n).
QEMU's target/s390x/mmu_helper.c (mmu_translate_asce()) implements the same process; the CPU
modelled here has EDAT-1, EDAT-2 and instruction-execution protection
installed and enabled (CR0 bits 40 and 43; their absence is a factory argument), the DAT-
protection bit of region entries honoured with EDAT-1, a private-space ASCE's common-segment /
common-region checks not modelled (the kernel's ASCE is not private).

The VA's index fields: region-first 0-10 (shift 53), region-second 11-21 (42), region-third 22-32
(31), segment 33-43 (20), page 44-51 (12, 256 entries), byte 52-63. Tables above the page level
have 2048 entries but are "partial": TL and TF give the quarters (512 entries) present; the two
leftmost bits of a VA's index outside [TF, TL] are a translation exception (the region-first,
-second, -third or segment translation exception of the table's level). `index_window()` gives
those windows, used by translate() and by the whole-table walk.

Linux's view follows arch/s390/include/asm/pgtable.h (v6.1/v6.12) with runtime folding: the ASCE
type says which levels exist; the first one is pgd, p4d or pud (region-first, -second, -third
ASCE); pgd_offset() picks the shift from the table type of the first entry, the folded levels
below pass the pointer through (p4d_offset()/pud_offset() with a lower table type). Per level:

* pgd (region-first table): none = I bit; bad = bits outside _REGION_ENTRY_BITS; no leaves.
* p4d (region-second): none = value _REGION2_ENTRY_EMPTY (0x28); bad = TT above R2 or bits
  outside _REGION_ENTRY_BITS.
* pud (region-third): none = _REGION3_ENTRY_EMPTY (0x24); leaf = TT R3 with
  _REGION3_ENTRY_LARGE (FC); present = origin != 0 (walk_pud_range() does not test pud_bad()).
* pmd (segment): none = _SEGMENT_ENTRY_EMPTY (0x20); leaf = _SEGMENT_ENTRY_LARGE (FC); else a
  page table at bits 0-52 (pmd_present() is "not empty").
* pte: every slot is reported; _PAGE_INVALID (0x400) makes it "I".

An entry whose table type is lower than its table's (a folded entry inside a real table: the
kernel would walk the same table again one level down) is not modelled: it is skipped (neither
reported nor descended into); Linux never writes one.
"""

from __future__ import annotations

import numpy as np

from ..mode import HwKind, Kind, Level, PagingMode

U64 = np.uint64

# asm/pgtable.h (v6.1), with the PoP bit number in the comment
_ASCE_ORIGIN = ~0xFFF & (2**64 - 1)  # bits 0-51
_ASCE_PRIVATE_SPACE = 0x100  # P, bit 55
_ASCE_REAL_SPACE = 0x20  # R, bit 58
_ASCE_TYPE_MASK = 0x0C  # DT, bits 60-61
_ASCE_TABLE_LENGTH = 0x03  # TL, bits 62-63

_REGION_ENTRY_ORIGIN = ~0xFFF & (2**64 - 1)  # bits 0-51
_REGION_ENTRY_PROTECT = 0x200  # P, bit 54
_REGION_ENTRY_NOEXEC = 0x100  # IEP, bit 55 (region-third with FC=1)
_REGION_ENTRY_OFFSET = 0xC0  # TF, bits 56-57
_REGION_ENTRY_INVALID = 0x20  # I, bit 58
_REGION_ENTRY_TYPE_MASK = 0x0C  # TT, bits 60-61
_REGION_ENTRY_LENGTH = 0x03  # TL, bits 62-63
_REGION_ENTRY_TYPE_R1, _REGION_ENTRY_TYPE_R2, _REGION_ENTRY_TYPE_R3 = 0x0C, 0x08, 0x04
_REGION2_ENTRY_EMPTY = _REGION_ENTRY_TYPE_R2 | _REGION_ENTRY_INVALID
_REGION3_ENTRY_EMPTY = _REGION_ENTRY_TYPE_R3 | _REGION_ENTRY_INVALID
_REGION_ENTRY_BITS = 0xFFFFFFFFFFFFF22F
_REGION3_ENTRY_ORIGIN_LARGE = ~0x7FFFFFFF & (2**64 - 1)  # 2 GiB frame, bits 0-32
_REGION3_ENTRY_LARGE = 0x400  # FC, bit 53
_REGION3_ENTRY_CR = 0x10  # CR, bit 59 (common region)

_SEGMENT_ENTRY_ORIGIN = ~0x7FF & (2**64 - 1)  # page-table origin, bits 0-52
_SEGMENT_ENTRY_ORIGIN_LARGE = ~0xFFFFF & (2**64 - 1)  # 1 MiB frame, bits 0-43
_SEGMENT_ENTRY_LARGE = 0x400  # FC, bit 53
_SEGMENT_ENTRY_PROTECT = 0x200  # P, bit 54
_SEGMENT_ENTRY_NOEXEC = 0x100  # IEP, bit 55 (FC=1)
_SEGMENT_ENTRY_INVALID = 0x20  # I, bit 58
_SEGMENT_ENTRY_CS = 0x10  # CS, bit 59 (common segment)
_SEGMENT_ENTRY_TYPE_MASK = 0x0C  # TT, bits 60-61: 00 for a segment-table entry
_SEGMENT_ENTRY_EMPTY = _SEGMENT_ENTRY_INVALID

_PAGE_ORIGIN = ~0xFFF & (2**64 - 1)  # page-frame real address, bits 0-51
_PAGE_LARGE = 0x800  # bit 52: must be zero (translation-specification exception)
_PAGE_INVALID = 0x400  # I, bit 53
_PAGE_PROTECT = 0x200  # P, bit 54
_PAGE_NOEXEC = 0x100  # IEP, bit 55
_PAGE_SW_BITS = 0xFF  # Linux's software bits (present, young, dirty, read, write, ...)

QUARTER = 512  # TF/TL count in units of 512 entries (one 4 KiB block of a 2048-entry table)
PTRS_PER_PTE = 256

# DT / TT values: 3 region-first, 2 region-second, 1 region-third, 0 segment
DT_NAMES = {3: "region-first", 2: "region-second", 1: "region-third", 0: "segment"}
_ROLES = ("pgd", "p4d", "pud", "pmd", "pte")
_SHIFTS = (53, 42, 31, 20, 12)
_KLEVELS = {"pgd": 0, "p4d": 1, "pud": 2, "pmd": 3, "pte": 4}

# hw_classify() reason codes; fault_reason() explains them
(_R1_TRANS, _R2_TRANS, _R3_TRANS, _SEG_TRANS, _PAGE_TRANS, _TRANS_SPEC) = range(1, 7)
_REASONS = {
    _R1_TRANS: "region-first-translation exception (invalid, or outside the table's TF/TL)",
    _R2_TRANS: "region-second-translation exception (invalid, or outside the table's TF/TL)",
    _R3_TRANS: "region-third-translation exception (invalid, or outside the table's TF/TL)",
    _SEG_TRANS: "segment-translation exception (invalid, or outside the table's TF/TL)",
    _PAGE_TRANS: "page-translation exception (I bit set)",
    _TRANS_SPEC: "translation-specification exception (wrong table type, or bit 52 of a PTE set)",
}
_TRANS_FAULT = {"pgd": _R1_TRANS, "p4d": _R2_TRANS, "pud": _R3_TRANS, "pmd": _SEG_TRANS, "pte": _PAGE_TRANS}
_TT = {"pgd": _REGION_ENTRY_TYPE_R1, "p4d": _REGION_ENTRY_TYPE_R2, "pud": _REGION_ENTRY_TYPE_R3, "pmd": 0}


def _u(v: int) -> np.uint64:
    return np.uint64(v)


def make_mode(dt: int = 1, asce_tl: int = 3, *, edat1: bool = True, edat2: bool = True, iep: bool = True) -> PagingMode:
    """The DAT mode of an ASCE with designation type `dt` (3 R1 .. 0 segment) and length `asce_tl`.

    >>> m = make_mode(1)
    >>> m.name, [lvl.name for lvl in m.levels], m.va_bits
    ('s390x-region3', ['pud', 'pmd', 'pte'], 42)
    """
    if dt not in DT_NAMES or not 0 <= asce_tl <= 3:
        raise ValueError(f"ASCE designation type {dt} / table length {asce_tl} out of range")
    roles = _ROLES[3 - dt :]
    levels = tuple(
        Level(name=r, shift=_SHIFTS[_ROLES.index(r)], bits=8 if r == "pte" else 11, klevel=_KLEVELS[r],
              hole_depth=_KLEVELS[r])
        for r in roles
    )
    va_bits = 64 if dt == 3 else _SHIFTS[_ROLES.index(roles[0])] + 11

    def classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Linux's walker (module docstring): Kind and next-table / output PA."""
        e = e.astype(U64, copy=False)
        role = roles[level]
        if role == "pte":
            return np.full(e.shape, Kind.LEAF, dtype=np.uint8), e & _u(_PAGE_ORIGIN)
        kind = np.full(e.shape, Kind.TABLE, dtype=np.uint8)
        tt = e & _u(_REGION_ENTRY_TYPE_MASK)
        if role == "pmd":
            addr = e & _u(_SEGMENT_ENTRY_ORIGIN)
            leaf = (e & _u(_SEGMENT_ENTRY_LARGE)) != 0
            addr = np.where(leaf, e & _u(_SEGMENT_ENTRY_ORIGIN_LARGE), addr)
            kind[leaf] = Kind.LEAF
            kind[e == _u(_SEGMENT_ENTRY_EMPTY)] = Kind.HOLE
            return kind, addr
        addr = e & _u(_REGION_ENTRY_ORIGIN)
        own = _u(_TT[role])
        bad_bits = (e & ~_u(_REGION_ENTRY_BITS)) != 0
        folded = tt < own
        if role == "pgd":
            kind[((e & _u(_REGION_ENTRY_INVALID)) != 0) | bad_bits] = Kind.HOLE
        elif role == "p4d":
            kind[(e == _u(_REGION2_ENTRY_EMPTY)) | (tt > own) | bad_bits] = Kind.HOLE
        else:  # pud
            leaf = (tt == own) & ((e & _u(_REGION3_ENTRY_LARGE)) != 0)
            addr = np.where(leaf, e & _u(_REGION3_ENTRY_ORIGIN_LARGE), addr)
            kind[(addr == 0) & ~leaf] = Kind.SKIP  # !pud_present()
            kind[leaf] = Kind.LEAF
            kind[e == _u(_REGION3_ENTRY_EMPTY)] = Kind.HOLE
        kind[folded] = Kind.SKIP
        return kind, addr

    def hw_classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The CPU ("Translation Process", mmu_translate_asce()): (HwKind, PA or reason code).

        The TF/TL window of the table itself is checked by the caller through index_window().
        """
        e = e.astype(U64, copy=False)
        role = roles[level]
        reason = np.zeros(e.shape, dtype=U64)
        if role == "pte":
            kind = np.full(e.shape, HwKind.LEAF, dtype=np.uint8)
            out = e & _u(_PAGE_ORIGIN)
            spec = (e & _u(_PAGE_LARGE)) != 0
            kind[spec] = HwKind.FAULT
            reason[spec] = _TRANS_SPEC
            inv = (e & _u(_PAGE_INVALID)) != 0
            kind[inv] = HwKind.FAULT
            reason[inv] = _PAGE_TRANS
            return kind, np.where(kind == HwKind.FAULT, reason, out)
        kind = np.full(e.shape, HwKind.TABLE, dtype=np.uint8)
        fc = (e & _u(_SEGMENT_ENTRY_LARGE)) != 0
        if role == "pmd":
            out = e & _u(_SEGMENT_ENTRY_ORIGIN)
            if edat1:
                kind[fc] = HwKind.LEAF
                out = np.where(fc, e & _u(_SEGMENT_ENTRY_ORIGIN_LARGE), out)
        else:
            out = e & _u(_REGION_ENTRY_ORIGIN)
            if role == "pud" and edat2:
                kind[fc] = HwKind.LEAF
                out = np.where(fc, e & _u(_REGION3_ENTRY_ORIGIN_LARGE), out)
        spec = (e & _u(_REGION_ENTRY_TYPE_MASK)) != _u(_TT[role])
        kind[spec] = HwKind.FAULT
        reason[spec] = _TRANS_SPEC
        inv = (e & _u(_REGION_ENTRY_INVALID)) != 0  # the I bit is tested before the type
        kind[inv] = HwKind.FAULT
        reason[inv] = _TRANS_FAULT[role]
        return kind, np.where(kind == HwKind.FAULT, reason, out)

    def perm(level: int, e: np.ndarray) -> np.ndarray:
        """DAT protection (P) of every level (region entries with EDAT-1), IEP of the leaf only."""
        e = e.astype(U64, copy=False)
        role = roles[level]
        if role == "pte":
            return e & _u(_PAGE_PROTECT | (_PAGE_NOEXEC if iep else 0))
        if role != "pmd" and not edat1:
            return np.zeros(e.shape, dtype=U64)
        p = e & _u(_PAGE_PROTECT)
        leafy = (role == "pmd" and edat1) or (role == "pud" and edat2)
        if leafy and iep:
            fc = (e & _u(_SEGMENT_ENTRY_LARGE)) != 0
            p = np.where(fc, e & _u(_PAGE_PROTECT | _PAGE_NOEXEC), p)
        return p

    def perm_combine(parent: np.ndarray, child: np.ndarray) -> np.ndarray:
        """P of any level on the path protects the page ("Translation Process"); IEP only comes from leaves."""
        return parent | child

    def index_window(level: int, parent: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi) of the indexes present in the level-`level` tables that `parent` entries
        (None: the ASCE) point to: TL/TF in quarters of 512 entries ("Translation Process"); page tables
        and tables below a segment-table entry are whole."""
        if level == 0:
            return np.array([0], dtype=U64), np.array([(asce_tl + 1) * QUARTER], dtype=U64)
        p = np.asarray(parent, dtype=U64)
        if roles[level] == "pte":
            return np.zeros(p.shape, dtype=U64), np.full(p.shape, PTRS_PER_PTE, dtype=U64)
        lo = ((p & _u(_REGION_ENTRY_OFFSET)) >> _u(6)) * _u(QUARTER)
        hi = ((p & _u(_REGION_ENTRY_LENGTH)) + _u(1)) * _u(QUARTER)
        return lo, hi

    def window_fault(level: int) -> str:
        """The exception a VA outside a table's TF/TL raises ("Translation Process")."""
        return _REASONS[_TRANS_FAULT[roles[level]]]

    name = f"s390x-{'segment' if dt == 0 else 'region' + str(4 - dt)}"
    return PagingMode(
        name=name,
        arch="s390x",
        levels=levels,
        entry_bytes=8,
        byteorder=">",
        va_bits=va_bits,
        canonical=False,
        pa_bits=64,
        classify=classify,
        hw_classify=hw_classify,
        perm=perm,
        perm_combine=perm_combine,
        perm_top=0,
        ptdump_key_mask=_PAGE_INVALID | _PAGE_PROTECT | _PAGE_NOEXEC,
        fault_reason=lambda code: _REASONS.get(code, "fault"),
        describe=lambda level_name, entry: describe(level_name, entry),
        extra={"perm_text": perm_text, "index_window": index_window, "window_fault": window_fault,
               "dt": dt, "asce_tl": asce_tl, "edat1": edat1, "edat2": edat2, "iep": iep,
               "table_bytes": {r: (PTRS_PER_PTE if r == "pte" else 2048) * 8 for r in roles}, "arch_bits": arch_bits},
    )


def arch_bits(mode: PagingMode):
    """The analyses' ArchBits (pagewalk.analysis.mappings), imported only when an analysis runs.

    PoP "Translation Tables": the invalid bit is I (bit 58, 0x20) in region and segment entries
    but bit 53 (0x400) in a page-table entry, where 0x400 one level up is FC, the large-frame
    bit: the valid test is per level. The permission word is perm()'s (P of every level on the
    path, IEP of the leaf, folded by perm_combine()): writable when DAT-protection is off,
    executable when IEP is off. There is no user bit: user mode runs in its own address space
    (the kernel's ASCE is not the user's), so "user" is never set; no global bit either (TLB
    entries are tagged by the ASCE). Reference and change bits live in the storage keys, not in
    the entries: no status bits.
    """
    from ..analysis.mappings import NEVER, ArchBits, Bit

    def table_entry_valid(e: np.ndarray) -> np.ndarray:
        # I clear; an all-zero entry (never written by Linux, whose empty entries have I set) is
        # taken as empty like everywhere else, not as a valid entry of the wrong table type
        e = np.asarray(e, dtype=U64)
        return ((e & _u(_REGION_ENTRY_INVALID)) == 0) & (e != _u(0))

    n = len(mode.levels)
    return ArchBits(
        valid=Bit(_REGION_ENTRY_INVALID, 0,
                  at=(*((lv, table_entry_valid) for lv in range(n - 1)), (n - 1, Bit(_PAGE_INVALID, 0)))),
        user=NEVER,
        read=Bit(0, 0),
        write=Bit(_PAGE_PROTECT, 0),
        kexec=Bit(_PAGE_NOEXEC, 0),
        uexec=NEVER,
        glob=NEVER,
        status_mask=0,
        kernel_va_start=0,
    )


def decode_asce(asce: int, **features: bool) -> tuple[PagingMode | None, int]:
    """(mode, table origin) of an ASCE ("Translation Control"); mode None for a real-space ASCE (R=1).

    >>> m, origin = decode_asce(0x1290007)
    >>> m.name, hex(origin)
    ('s390x-region3', '0x1290000')
    """
    if asce & _ASCE_REAL_SPACE:
        return None, 0
    dt = (asce & _ASCE_TYPE_MASK) >> 2
    return make_mode(dt, asce & _ASCE_TABLE_LENGTH, **features), asce & _ASCE_ORIGIN


def perm_text(perm: int) -> str:
    """The effective rights for `translate`'s summary line (no user/kernel split on s390).

    >>> perm_text(0x300)
    'r--'
    """
    return "r" + ("-" if perm & _PAGE_PROTECT else "w") + ("-" if perm & _PAGE_NOEXEC else "x")


def describe(level_name: str, entry: int) -> str:
    """Decoded fields of one entry for `translate` (PoP names)."""
    out = []
    if level_name == "pte":
        out.append(f"PFRA={entry & _PAGE_ORIGIN:#x}")
        for bit, n in ((_PAGE_LARGE, "bit52"), (_PAGE_INVALID, "I"), (_PAGE_PROTECT, "P"), (_PAGE_NOEXEC, "IEP")):
            if entry & bit:
                out.append(n)
        if entry & _PAGE_SW_BITS:
            out.append(f"sw={entry & _PAGE_SW_BITS:#x}")
        return " ".join(out)
    tt = (entry & _REGION_ENTRY_TYPE_MASK) >> 2
    fc = entry & _SEGMENT_ENTRY_LARGE
    if level_name == "pmd":
        out.append(f"SFAA={entry & _SEGMENT_ENTRY_ORIGIN_LARGE:#x} FC" if fc else f"PTO={entry & _SEGMENT_ENTRY_ORIGIN:#x}")
    elif level_name == "pud" and fc:
        out.append(f"RFAA={entry & _REGION3_ENTRY_ORIGIN_LARGE:#x} FC")
    else:
        out.append(f"RTO/STO={entry & _REGION_ENTRY_ORIGIN:#x}")
        out.append(f"TF={(entry & _REGION_ENTRY_OFFSET) >> 6} TL={entry & _REGION_ENTRY_LENGTH}")
    out.append(f"TT={tt}")
    for bit, n in ((_REGION_ENTRY_INVALID, "I"), (_REGION_ENTRY_PROTECT, "P")):
        if entry & bit:
            out.append(n)
    if fc and entry & _SEGMENT_ENTRY_NOEXEC:
        out.append("IEP")
    if entry & _SEGMENT_ENTRY_CS:
        out.append("CS" if level_name == "pmd" else "CR")
    return " ".join(out)


REGION1 = make_mode(3)
REGION2 = make_mode(2)
REGION3 = make_mode(1)
SEGMENT = make_mode(0)
MODES = {m.name: m for m in (REGION1, REGION2, REGION3, SEGMENT)}
