"""x86-64 paging: 4-level and 5-level (LA57), as the MMU and as Linux's generic walker see it.

Entry bits: Intel SDM Vol. 3A §4.5 (tables 4-15 to 4-20) and arch/x86/include/asm/pgtable_types.h.
The kernel's view (which entries are none, bad, leaves, tables) follows arch/x86/include/asm/
pgtable.h as of v6.12: p4d_none()/pud_none()/pmd_none() ignore the Accessed and Dirty bits
(_PAGE_KNL_ERRATUM_MASK), pgd_bad()/p4d_bad() turn an entry with stray flag bits into a hole,
pud_leaf()/pmd_leaf() test PSE alone, pmd_present() accepts PRESENT, PROTNONE (= GLOBAL) or PSE.
"""

from __future__ import annotations

import numpy as np

from ..bits import mask
from ..mode import HwKind, Kind, Level, PagingMode

_PAGE_PRESENT = 1 << 0
_PAGE_RW = 1 << 1
_PAGE_USER = 1 << 2
_PAGE_PWT = 1 << 3
_PAGE_PCD = 1 << 4
_PAGE_ACCESSED = 1 << 5
_PAGE_DIRTY = 1 << 6
_PAGE_PSE = 1 << 7  # PAT on a 4 KiB PTE
_PAGE_GLOBAL = 1 << 8  # PROTNONE when PRESENT is clear
_PAGE_PAT_LARGE = 1 << 12
_PAGE_NX = 1 << 63
_PKEY_SHIFT = 59  # protection key, bits 62:59 of leaf entries (SDM §4.6.2)

_PHYSICAL_MASK_SHIFT = 52  # __PHYSICAL_MASK_SHIFT
PTE_PFN_MASK = mask(_PHYSICAL_MASK_SHIFT - 1, 12)
PTE_FLAGS_MASK = ((1 << 64) - 1) ^ PTE_PFN_MASK
_KNL_ERRATUM_MASK = _PAGE_DIRTY | _PAGE_ACCESSED
_KERNPG_TABLE = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY
PERM_BITS = _PAGE_USER | _PAGE_RW | _PAGE_NX

U64 = np.uint64


def _u(v: int) -> np.uint64:
    return np.uint64(v)


# Reason codes of hw_classify() faults.
_NOT_PRESENT, _RESERVED_PS, _RESERVED_PA, _RESERVED_LARGE = 1, 2, 3, 4
_REASONS = {
    _NOT_PRESENT: "not present (P=0)",
    _RESERVED_PS: "reserved bit set (PS must be 0 at this level)",
    _RESERVED_PA: "reserved bit set (address bits above MAXPHYADDR)",
    _RESERVED_LARGE: "reserved bit set (bits below the large page's alignment)",
}


def _make_mode(levels_n: int, pa_bits: int = 52) -> PagingMode:
    names = ("pgd", "p4d", "pud", "pmd", "pte") if levels_n == 5 else ("pgd", "pud", "pmd", "pte")
    shifts = (48, 39, 30, 21, 12)[5 - levels_n :]
    levels = []
    for i, (name, shift) in enumerate(zip(names, shifts)):
        klevel = 5 - levels_n + i
        # real_depth(): with 4 levels the p4d is folded (PTRS_PER_P4D == 1), so top-level holes
        # are reported at depth 0, "pgd"; everything below keeps its own depth.
        hole_depth = 0 if i == 0 else klevel
        levels.append(Level(name=name, shift=shift, bits=9, klevel=klevel, hole_depth=hole_depth))
    top_kind = "pgd" if levels_n == 5 else "p4d"
    leaf_levels = {levels_n - 3: 30, levels_n - 2: 21}  # hw level index -> page shift (1G, 2M)
    pa_high = ((1 << 52) - 1) ^ ((1 << pa_bits) - 1)  # address bits the CPU does not implement

    def classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = e.astype(U64, copy=False)
        kind = np.full(e.shape, Kind.TABLE, dtype=np.uint8)
        flags = e & _u(PTE_FLAGS_MASK)
        addr = e & _u(PTE_PFN_MASK)
        if level == levels_n - 1:  # PTE: every slot is reported
            kind[:] = Kind.LEAF
            return kind, addr
        none = (e & ~_u(_KNL_ERRATUM_MASK)) == 0
        if level == 0 and top_kind == "pgd":
            none = e == 0
            bad = (flags & ~_u(_PAGE_USER | _PAGE_NX)) != _u(_KERNPG_TABLE)
            kind[none | bad] = Kind.HOLE
            return kind, addr
        if level == 0 or (level == 1 and levels_n == 5):  # p4d
            bad = (flags & ~_u(_KERNPG_TABLE | _PAGE_USER | _PAGE_NX)) != 0
            kind[none | bad] = Kind.HOLE
            return kind, addr
        leaf = (e & _u(_PAGE_PSE)) != 0
        if level == levels_n - 3:  # pud
            present = (e & _u(_PAGE_PRESENT)) != 0
        else:  # pmd
            present = (e & _u(_PAGE_PRESENT | _PAGE_GLOBAL | _PAGE_PSE)) != 0
        kind[~present] = Kind.SKIP
        kind[leaf] = Kind.LEAF
        kind[none] = Kind.HOLE
        if level in leaf_levels:
            shift = leaf_levels[level]
            addr = np.where(leaf, e & _u(mask(51, shift)), addr)
        return kind, addr

    def hw_classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(HwKind, PA or reason code): the MMU's view, SDM §4.5.4."""
        e = e.astype(U64, copy=False)
        present = (e & _u(_PAGE_PRESENT)) != 0
        ps = (e & _u(_PAGE_PSE)) != 0
        kind = np.full(e.shape, HwKind.TABLE, dtype=np.uint8)
        out = e & _u(PTE_PFN_MASK)
        reason = np.zeros(e.shape, dtype=U64)
        last = level == levels_n - 1
        if last:
            kind[:] = HwKind.LEAF
        elif level in leaf_levels:
            shift = leaf_levels[level]
            kind[ps] = HwKind.LEAF
            out = np.where(ps, e & _u(mask(51, shift)), out)
            low = (e & _u(mask(shift - 1, 13))) != 0  # bits between PAT (12) and the page base
            bad_large = ps & low
            kind[bad_large] = HwKind.FAULT
            reason[bad_large] = _RESERVED_LARGE
        else:
            kind[ps] = HwKind.FAULT
            reason[ps] = _RESERVED_PS
        if pa_high:
            badpa = (e & _u(pa_high)) != 0
            kind[badpa] = HwKind.FAULT
            reason[badpa] = _RESERVED_PA
        kind[~present] = HwKind.FAULT
        reason[~present] = _NOT_PRESENT
        return kind, np.where(kind == HwKind.FAULT, reason, out)

    def perm(level: int, e: np.ndarray) -> np.ndarray:
        return e.astype(U64, copy=False) & _u(PERM_BITS)

    def perm_combine(parent: np.ndarray, child: np.ndarray) -> np.ndarray:
        """effective_prot() of arch/x86/mm/dump_pagetables.c: U and RW must be set at every
        level, NX at any one (SDM §4.6.1)."""
        return (parent & child & _u(_PAGE_USER | _PAGE_RW)) | ((parent | child) & _u(_PAGE_NX))

    return PagingMode(
        name=f"x86_64-{levels_n}level",
        arch="x86_64",
        levels=tuple(levels),
        entry_bytes=8,
        byteorder="<",
        va_bits=48 if levels_n == 4 else 57,
        canonical=True,
        pa_bits=pa_bits,
        classify=classify,
        hw_classify=hw_classify,
        perm=perm,
        perm_combine=perm_combine,
        perm_top=_PAGE_USER | _PAGE_RW,
        ptdump_key_mask=PTE_FLAGS_MASK,
        fault_reason=lambda code: _REASONS.get(code, "fault"),
        describe=describe,
    )


def describe(level_name: str, entry: int) -> str:
    """Decoded flags of one entry for `translate`: names of the set bits, SDM §4.5 order."""
    bits = []
    if not entry & _PAGE_PRESENT:
        return "not present"
    bits.append("P")
    bits.append("RW" if entry & _PAGE_RW else "RO")
    bits.append("US" if entry & _PAGE_USER else "S")
    for b, n in ((_PAGE_PWT, "PWT"), (_PAGE_PCD, "PCD"), (_PAGE_ACCESSED, "A"), (_PAGE_DIRTY, "D")):
        if entry & b:
            bits.append(n)
    if level_name == "pte":
        if entry & _PAGE_PSE:
            bits.append("PAT")
    elif entry & _PAGE_PSE:
        bits.append("PS")
        if entry & _PAGE_PAT_LARGE:
            bits.append("PAT")
    if entry & _PAGE_GLOBAL:
        bits.append("G")
    bits.append("XD" if entry & _PAGE_NX else "X")
    pkey = (entry >> _PKEY_SHIFT) & 0xF
    if pkey and (level_name == "pte" or entry & _PAGE_PSE):
        bits.append(f"PKEY={pkey}")
    return " ".join(bits)


X86_64_4LEVEL = _make_mode(4)
X86_64_5LEVEL = _make_mode(5)

CR4_PAE = 1 << 5
CR4_PKE = 1 << 22
CR4_LA57 = 1 << 12
CR3_PCID_MASK = 0xFFF
CR3_PTI_USER = 1 << 12  # kernel_to_user_pgdp(): the user copy is the page after the kernel PGD


def mode_for(cr4: int | None) -> PagingMode:
    """The x86-64 mode CR4 selects (LA57 = bit 12 means 5-level paging)."""
    return X86_64_5LEVEL if cr4 is not None and cr4 & CR4_LA57 else X86_64_4LEVEL


def root_from_cr3(cr3: int) -> int:
    """The PGD physical address in CR3 (PCID in bits 11:0 dropped; SDM §4.5.2)."""
    return cr3 & PTE_PFN_MASK
