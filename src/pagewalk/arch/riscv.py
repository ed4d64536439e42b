"""RISC-V paging: Sv32, Sv39, Sv48 and Sv57, as the MMU and as Linux's generic walker see them.

Hardware: RISC-V Privileged Architecture (ratified version 20240411), §10.1.11 (satp), §10.3
(Sv32; §10.3.1 PTE format, §10.3.2 the translation process), §10.4 (Sv39), §10.5 (Sv48), §10.6
(Sv57), and the Svnapot and Svpbmt extension chapters (§11 "Svnapot", §12 "Svpbmt" of that
edition). The MMU modelled here implements Svnapot and Svpbmt and updates A/D itself (Svadu), so a
clear A or D bit is not a fault; translations are not typed by access, so R/W/X/U permission
faults are left to the caller (the leaf's bits are in `Translation.perm`).

Linux's view follows arch/riscv/include/asm/pgtable.h, pgtable-64.h, pgtable-32.h and
pgtable-bits.h of v6.12 (runtime folding: one 5-level kernel runs Sv39, Sv48 or Sv57):

* pgd_none()/p4d_none(): value 0; pgd_bad()/p4d_bad(): V clear (both only where the level is
  real; folded levels are never none or bad). No pgd_leaf()/p4d_leaf(): a leaf there is walked
  into as a table.
* pud_none(): value 0; pud_leaf(): V and any of R/W/X; !pud_present() (V clear): not walked.
* pmd_none(): value 0; pmd_present(): V, PROT_NONE (= G) or, with THP (64-bit), any of R/W/X;
  pmd_leaf(): present and any of R/W/X; not present: not walked.
* pte_pfn(): PFN bits 53:10 (Sv32: 31:10); for a NAPOT PTE the lowest set PFN bit is cleared.

Which hardware level plays which kernel role: Sv57 pgd p4d pud pmd pte; Sv48 (p4d folded into
pgd) the root is walked as the p4d (holes at depth 1); Sv39 (p4d and pud folded) the root is the
pud (holes at depth 2, leaves reported at level 2, printed "PGD"); Sv32 (CONFIG_PGTABLE_LEVELS=2,
pmd folded) the root is the pmd with real_depth() 0.
"""

from __future__ import annotations

import numpy as np

from ..bits import mask
from ..mode import HwKind, Kind, Level, PagingMode

_PAGE_PRESENT = 1 << 0  # V
_PAGE_READ = 1 << 1
_PAGE_WRITE = 1 << 2
_PAGE_EXEC = 1 << 3
_PAGE_USER = 1 << 4
_PAGE_GLOBAL = 1 << 5
_PAGE_ACCESSED = 1 << 6
_PAGE_DIRTY = 1 << 7
_PAGE_SOFT = 3 << 8  # RSW
_PAGE_PROT_NONE = _PAGE_GLOBAL
_PAGE_LEAF = _PAGE_READ | _PAGE_WRITE | _PAGE_EXEC
_PAGE_PFN_SHIFT = 10
_PAGE_NAPOT = 1 << 63  # Svnapot N
_PAGE_NOCACHE_SVPBMT = 1 << 61  # PBMT = 1: NC
_PAGE_IO_SVPBMT = 1 << 62  # PBMT = 2: IO
_PAGE_MTMASK_SVPBMT = _PAGE_NOCACHE_SVPBMT | _PAGE_IO_SVPBMT
_RESERVED_64 = mask(60, 54)  # "Reserved for future standard use" (Sv39/48/57 PTE, §10.4)

PFN_MASK_64 = mask(53, 10)  # _PAGE_PFN_MASK, pgtable-64.h
PFN_MASK_32 = mask(31, 10)  # _PAGE_PFN_MASK, pgtable-32.h
PERM_BITS = _PAGE_READ | _PAGE_WRITE | _PAGE_EXEC | _PAGE_USER
# pte_bits[] of arch/riscv/mm/ptdump.c, OR-ed as ptdump_init() builds pg_level[].mask
PTDUMP_MASK_64 = _PAGE_NAPOT | _PAGE_MTMASK_SVPBMT | _PAGE_SOFT | 0xFF
PTDUMP_MASK_32 = _PAGE_SOFT | 0xFF

NAPOT_64K_BITS = 4  # Svnapot: the only defined size, ppn[0][3:0] = 1000b
U64 = np.uint64

# satp (§10.1.11): RV64 MODE 63:60, ASID 59:44, PPN 43:0; RV32 MODE 31, ASID 30:22, PPN 21:0
SATP_MODES_64 = {0: "bare", 8: "sv39", 9: "sv48", 10: "sv57"}


def _u(v: int) -> np.uint64:
    return np.uint64(v)


# Reason codes of hw_classify() faults (fault_reason() explains them).
(_NOT_VALID, _W_NO_R, _RESERVED, _PBMT_RESERVED, _NONLEAF_ADU, _NONLEAF_N_PBMT, _NAPOT_BAD, _MISALIGNED,
 _NO_LEAF) = range(1, 10)
_REASONS = {
    _NOT_VALID: "not valid (V=0)",
    _W_NO_R: "reserved encoding (W=1 with R=0)",
    _RESERVED: "reserved bits 60:54 set",
    _PBMT_RESERVED: "reserved encoding (PBMT=3)",
    _NONLEAF_ADU: "reserved bits set in a non-leaf entry (D, A or U)",
    _NONLEAF_N_PBMT: "reserved bits set in a non-leaf entry (N or PBMT)",
    _NAPOT_BAD: "reserved Svnapot encoding (N=1 only on a 4K leaf with ppn[3:0]=1000b)",
    _MISALIGNED: "misaligned superpage (low PPN bits not zero)",
    _NO_LEAF: "a pointer entry at the last level",
}


def _roles(levels_n: int) -> tuple[str, ...]:
    """The kernel role of each hardware level (see the module docstring)."""
    return {
        2: ("pmd32", "pte"),
        3: ("pud", "pmd", "pte"),
        4: ("p4d", "pud", "pmd", "pte"),
        5: ("pgd", "p4d", "pud", "pmd", "pte"),
    }[levels_n]


def _make_mode(levels_n: int) -> PagingMode:
    rv32 = levels_n == 2
    bits = 10 if rv32 else 9
    shifts = [12 + bits * (levels_n - 1 - i) for i in range(levels_n)]
    roles = _roles(levels_n)
    klevels = {"pgd": 0, "p4d": 1, "pud": 2, "pmd": 3, "pmd32": 3, "pte": 4}
    names = {2: ("pgd", "pte"), 3: ("pgd", "pmd", "pte"), 4: ("pgd", "pud", "pmd", "pte"),
             5: ("pgd", "p4d", "pud", "pmd", "pte")}[levels_n]
    levels = []
    for i in range(levels_n):
        role = roles[i]
        # real_depth(): folded levels (PTRS_PER_PMD == 1 on Sv32) report holes one level up,
        # down to 0; with runtime folding (64-bit) every depth is its own
        hole_depth = 0 if role == "pmd32" else klevels[role]
        levels.append(Level(name=names[i], shift=shifts[i], bits=bits, klevel=klevels[role], hole_depth=hole_depth))
    pfn_mask = PFN_MASK_32 if rv32 else PFN_MASK_64
    last = levels_n - 1

    def pfn_pa(e: np.ndarray) -> np.ndarray:
        return ((e & _u(pfn_mask)) >> _u(_PAGE_PFN_SHIFT)) << _u(12)

    def classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Linux v6.12's view (see the module docstring): Kind and next-table / output PA."""
        e = e.astype(U64, copy=False)
        role = roles[level]
        addr = pfn_pa(e)
        kind = np.full(e.shape, Kind.TABLE, dtype=np.uint8)
        if role == "pte":
            kind[:] = Kind.LEAF
            if not rv32:
                napot = (e & _u(_PAGE_NAPOT)) != 0
                pfn = addr >> _u(12)
                base = (pfn & (pfn - _u(1))) << _u(12)  # pte_pfn(): res & (res - 1)
                addr = np.where(napot & (pfn != 0), base, addr)
            return kind, addr
        v = (e & _u(_PAGE_PRESENT)) != 0
        rwx = (e & _u(_PAGE_LEAF)) != 0
        none = e == 0
        if role in ("pgd", "p4d"):
            kind[none | ~v] = Kind.HOLE  # p?d_none_or_clear_bad(); no p?d_leaf()
            return kind, addr
        if role == "pud":
            present = v
        elif role == "pmd":
            present = (e & _u(_PAGE_PRESENT | _PAGE_PROT_NONE | _PAGE_LEAF)) != 0  # THP pmd_present()
        else:  # pmd32
            present = (e & _u(_PAGE_PRESENT | _PAGE_PROT_NONE)) != 0
        kind[~present] = Kind.SKIP
        kind[present & rwx] = Kind.LEAF
        kind[none] = Kind.HOLE
        return kind, addr

    def hw_classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(HwKind, PA or reason code): the MMU's view, §10.3.2 steps 2-6, Svnapot, Svpbmt.

        For a NAPOT leaf the PA is the 64 KiB region's base: the hardware takes ppn[0][3:0] from
        the VA (see `leaf_pa()`), which a per-entry hook cannot see.
        """
        e = e.astype(U64, copy=False)
        out = pfn_pa(e)
        reason = np.zeros(e.shape, dtype=U64)
        v = (e & _u(_PAGE_PRESENT)) != 0
        r = (e & _u(_PAGE_READ)) != 0
        w = (e & _u(_PAGE_WRITE)) != 0
        leaf = (e & _u(_PAGE_READ | _PAGE_EXEC)) != 0
        kind = np.where(leaf, np.uint8(HwKind.LEAF), np.uint8(HwKind.TABLE)).astype(np.uint8)

        def fault(cond: np.ndarray, code: int) -> None:
            # later calls take precedence: call from the least to the most fundamental reason
            kind[cond] = HwKind.FAULT
            reason[cond] = code

        if not rv32:
            n = (e & _u(_PAGE_NAPOT)) != 0
            pbmt = e & _u(_PAGE_MTMASK_SVPBMT)
            pfn = (e & _u(pfn_mask)) >> _u(_PAGE_PFN_SHIFT)
            # Svnapot: only 4 KiB leaves with ppn[3:0] = 1000b (64 KiB); the base drops those bits
            napot_ok = (level == last) & ((pfn & _u(0xF)) == _u(0x8))
            fault(leaf & n & ~napot_ok, _NAPOT_BAD)
            out = np.where(leaf & n, (pfn & ~_u(0xF)) << _u(12), out)
            fault(~leaf & ((e & _u(_PAGE_NAPOT | _PAGE_MTMASK_SVPBMT)) != 0), _NONLEAF_N_PBMT)
            fault(pbmt == _u(_PAGE_MTMASK_SVPBMT), _PBMT_RESERVED)
            fault((e & _u(_RESERVED_64)) != 0, _RESERVED)
        span_pages = (1 << (shifts[level] - 12)) - 1  # ppn[i-1:0] of a level-i superpage (step 6)
        if span_pages:
            fault(leaf & (((out >> _u(12)) & _u(span_pages)) != 0), _MISALIGNED)
        fault(~leaf & ((e & _u(_PAGE_DIRTY | _PAGE_ACCESSED | _PAGE_USER)) != 0), _NONLEAF_ADU)
        if level == last:
            fault(~leaf, _NO_LEAF)
        fault(w & ~r, _W_NO_R)
        fault(~v, _NOT_VALID)
        return kind, np.where(kind == HwKind.FAULT, reason, out)

    def perm(level: int, e: np.ndarray) -> np.ndarray:
        return e.astype(U64, copy=False) & _u(PERM_BITS)

    def perm_combine(parent: np.ndarray, child: np.ndarray) -> np.ndarray:
        """RISC-V has no hierarchical permissions: the leaf's bits alone decide (§10.3.1)."""
        return child

    name = {2: "sv32", 3: "sv39", 4: "sv48", 5: "sv57"}[levels_n]
    va_bits = shifts[0] + bits
    return PagingMode(
        name=name,
        arch="riscv32" if rv32 else "riscv64",
        levels=tuple(levels),
        entry_bytes=4 if rv32 else 8,
        byteorder="<",
        va_bits=va_bits,
        canonical=not rv32,
        pa_bits=34 if rv32 else 56,
        classify=classify,
        hw_classify=hw_classify,
        perm=perm,
        perm_combine=perm_combine,
        perm_top=PERM_BITS,
        ptdump_key_mask=PTDUMP_MASK_32 if rv32 else PTDUMP_MASK_64,
        fault_reason=lambda code: _REASONS.get(code, "fault"),
        describe=lambda level_name, entry: describe(entry, rv32),
        extra={"leaf_pa": leaf_pa, "perm_text": perm_text, "pfn_mask": pfn_mask, "xlen": 32 if rv32 else 64},
    )


def leaf_pa(mode: PagingMode, level: int, entry, va):
    """The PA `va` translates to through the leaf `entry` at hardware level `level` (§10.3.2
    step 8): superpages take ppn[i-1:0] from the VA, a NAPOT PTE takes ppn[0][3:0] from it.
    Works on ints and, for translate_many(), on whole arrays of entries and VAs."""
    e = np.asarray(entry, dtype=U64)
    v = np.asarray(va, dtype=U64)
    pfn = (e & _u(mode.extra["pfn_mask"])) >> _u(_PAGE_PFN_SHIFT)
    span = np.full(e.shape, mode.levels[level].entry_span, dtype=U64)
    if mode.extra["xlen"] == 64:
        napot = (e & _u(_PAGE_NAPOT)) != 0
        span = np.where(napot, _u(1 << (12 + NAPOT_64K_BITS)), span)
        pfn = np.where(napot, pfn & ~_u(0xF), pfn)
    out = ((pfn << _u(12)) & ~(span - _u(1))) | (v & (span - _u(1)))
    return int(out) if out.ndim == 0 else out


def perm_text(perm: int) -> str:
    """The leaf's access rights for `translate`'s summary line, e.g. "kernel r-x".

    >>> perm_text(0b11110)
    'user rwx'
    """
    return ("user " if perm & _PAGE_USER else "kernel ") + "".join(
        ch if perm & bit else "-" for bit, ch in ((_PAGE_READ, "r"), (_PAGE_WRITE, "w"), (_PAGE_EXEC, "x"))
    )


def describe(entry: int, rv32: bool = False) -> str:
    """Decoded bits of one entry for `translate`, in the kernel ptdump's order."""
    if not entry & _PAGE_PRESENT:
        return "not valid"
    out = []
    if not rv32:
        if entry & _PAGE_NAPOT:
            out.append("N")
        mt = entry & _PAGE_MTMASK_SVPBMT
        if mt:
            out.append("PBMT=" + {_PAGE_NOCACHE_SVPBMT: "NC", _PAGE_IO_SVPBMT: "IO"}.get(mt, "reserved"))
        if entry & _RESERVED_64:
            out.append(f"reserved={(entry >> 54) & 0x7F:#x}")
    if entry & _PAGE_SOFT:
        out.append(f"RSW={(entry >> 8) & 3}")
    for b, n in ((_PAGE_DIRTY, "D"), (_PAGE_ACCESSED, "A"), (_PAGE_GLOBAL, "G"), (_PAGE_USER, "U"),
                 (_PAGE_EXEC, "X"), (_PAGE_WRITE, "W"), (_PAGE_READ, "R"), (_PAGE_PRESENT, "V")):
        if entry & b:
            out.append(n)
    if not entry & _PAGE_LEAF:
        out.append("(pointer)")
    return " ".join(out)


SV32 = _make_mode(2)
SV39 = _make_mode(3)
SV48 = _make_mode(4)
SV57 = _make_mode(5)
MODES = {"sv32": SV32, "sv39": SV39, "sv48": SV48, "sv57": SV57}


def decode_satp(satp: int, xlen: int = 64) -> tuple[PagingMode | None, int, int]:
    """(mode or None for Bare, ASID, root PA) of a satp value (§10.1.11).

    >>> m, asid, root = decode_satp(0xA000100000082E2C)
    >>> m.name, asid, hex(root)
    ('sv57', 1, '0x82e2c000')
    """
    if xlen == 32:
        satp &= 0xFFFFFFFF
        mode = SV32 if satp >> 31 else None
        return mode, (satp >> 22) & 0x1FF, (satp & mask(21, 0)) << 12
    m = (satp >> 60) & 0xF
    if m not in SATP_MODES_64:
        raise ValueError(f"satp {satp:#x}: MODE {m} is reserved (0 Bare, 8 Sv39, 9 Sv48, 10 Sv57)")
    mode = MODES.get(SATP_MODES_64[m])
    return mode, (satp >> 44) & 0xFFFF, (satp & mask(43, 0)) << 12
