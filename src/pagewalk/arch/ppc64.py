"""64-bit Power (book3s64) radix translation, as the MMU and as Linux's generic walker see it;
and the Linux tables of a hash-MMU kernel (`hash_mode()`, which the MMU itself never walks).

Hardware: Power ISA Version 3.0B (3.1B is the same here), Book III chapter "Storage Control":
the section "Process Table" (a process-table entry's first doubleword: RTS1 bits 1:2, RPDB bits
4:55, RTS2 bits 56:58, RPDS bits 59:63, ISA big-endian bit numbers, bit 0 = the most
significant), the section "Radix Tree Translation" and its figures "Page Directory Entry" (V bit
0, L bit 1 = 0, NLB bits 4:55, NLS bits 59:63) and "Page Table Entry" (V bit 0, L bit 1 = 1, SW
bit 2, RPN bits 7:51, SW 52:54, R 55, C 56, ATT 58:59, EAA 60:63: privilege, read, read/write,
execute). The tree translates EA bits (RTS + 31) - 1 .. 0 of quadrant 3 (EA 0xc000…) with
process-table entry 0 (the kernel): the root has 2^RPDS entries and every directory entry says
how many entries the next table has (2^NLS), so the level sizes come from the root and the
directory entries, not from a fixed format. Tables are big-endian in memory whatever the
processor's endianness. The fault checks follow QEMU's target/ppc/mmu-radix64.c
(ppc_radix64_walk_tree(), ppc_radix64_next_level()): V clear faults, NLB is aligned down to the
table size, a leaf may sit at any level (the RPN's low bits under the page size are ignored), a
pointer where the tree's size is used up faults.

Variable level sizes: a PagingMode has one size per level. `radix_mode(rts, rpds, nls)` builds
it from the process-table entry (RTS, RPDS) and the index widths below the root, which
`probe_nls()` reads from the tree's own directory entries (Linux writes one NLS per level:
RADIX_P?D_VAL_BITS). An entry whose NLS differs from its level's is a fault for `translate`
(reason given) and, as for the kernel, which never reads NLS, no matter for the ptdump walk.

Linux v6.1 (arch/powerpc/include/asm/book3s/64/pgtable.h, radix.h, radix-64k.h; mm/pagewalk.c):
the PTE bits are the ISA's, named _PAGE_PRESENT (V), _PAGE_PTE (L), _PAGE_PRIVILEGED/_READ/
_WRITE/_EXEC (EAA), _PAGE_ACCESSED (R), _PAGE_DIRTY (C), _PAGE_SAO/_NON_IDEMPOTENT/_TOLERANT
(ATT); 64K pages give 13/9/9/5 index bits (radix-64k.h), 4K pages 13/9/9/9. The p4d is folded
(pgtable-nop4d.h): the root's entries are walked as p4d entries, with holes at depth 0
(real_depth()). The walker's view:

* root (p4d): none = value 0; p4d_bad() = RADIX_P4D_BAD_BITS (0x60000000000000e0: _PAGE_PTE,
  _RPAGE_SW0 and bits 7:5) set: p4d_none_or_clear_bad() makes both a hole; 6.1 has no p4d_leaf()
  for book3s64, so a leaf at the root is "bad"; anything else is walked into.
* pud and pmd: none = value 0; p?d_leaf() = _PAGE_PTE set (reported whether present or not);
  !p?d_present() (_PAGE_PRESENT clear): neither reported nor walked; else walked into at
  value & ~P?D_MASKED_BITS (0xc0000000000000ff).
* pte: every slot is reported; pte_pfn() << PAGE_SHIFT = value & PTE_RPN_MASK
  (bits _PAGE_PA_MAX-1 = 52 .. PAGE_SHIFT).
"""

from __future__ import annotations


import numpy as np

from ..bits import mask
from ..mode import HwKind, Kind, Level, PagingMode

U64 = np.uint64
TOP = 1 << 64

# PTE / PDE bits, arch/powerpc/include/asm/book3s/64/pgtable.h (LSB-0 numbering: ISA bit b is 63 - b)
_PAGE_EXEC = 0x1  # EAA execute
_PAGE_WRITE = 0x2  # EAA read/write
_PAGE_READ = 0x4  # EAA read
_PAGE_PRIVILEGED = 0x8  # EAA privilege: kernel access only
_PAGE_SAO = 0x10  # ATT 0b01 strong access ordering
_PAGE_NON_IDEMPOTENT = 0x20  # ATT 0b10 non-idempotent I/O
_PAGE_TOLERANT = 0x30  # ATT 0b11 tolerant I/O (cache inhibited)
_PAGE_ATT = 0x30
_PAGE_DIRTY = 0x80  # C
_PAGE_ACCESSED = 0x100  # R
_RPAGE_RSV1 = 0x40  # H_PAGE_BUSY (hash)
_RPAGE_SW3 = 0x200  # _PAGE_SOFT_DIRTY
_RPAGE_SW2 = 0x400  # _PAGE_SPECIAL
_RPAGE_SW1 = 0x800  # _PAGE_DEVMAP
_RPAGE_RPN0 = 0x1000  # H_PAGE_COMBO (hash, 64K pages)
_RPAGE_RPN1 = 0x2000  # H_PAGE_4K_PFN (hash, 64K pages)
_RPAGE_RPN43 = 0x0080000000000000  # H_PAGE_HASHPTE (hash)
_RPAGE_SW0 = 0x2000000000000000  # _PAGE_INVALID
_PAGE_PTE = 0x4000000000000000  # L: a leaf
_PAGE_PRESENT = 0x8000000000000000  # V
_PAGE_SPECIAL = _RPAGE_SW2
_PAGE_INVALID = _RPAGE_SW0
H_PAGE_BUSY = _RPAGE_RSV1
H_PAGE_COMBO = _RPAGE_RPN0
H_PAGE_4K_PFN = _RPAGE_RPN1
H_PAGE_HASHPTE = _RPAGE_RPN43
_PAGE_PA_MAX = 53
_PAGE_KERNEL_RW = _PAGE_PRIVILEGED | _PAGE_READ | _PAGE_WRITE | _PAGE_DIRTY
_PAGE_KERNEL_ROX = _PAGE_PRIVILEGED | _PAGE_READ | _PAGE_EXEC
_PAGE_BASE = _PAGE_PRESENT | _PAGE_ACCESSED

RADIX_P4D_BAD_BITS = 0x60000000000000E0  # radix.h (also the PUD and PMD values)
P4D_MASKED_BITS = 0xC0000000000000FF  # pgtable.h: PUD/PMD_MASKED_BITS are the same
# the OR of flag_array[].mask, arch/powerpc/mm/ptdump/book3s64.c (build_pgtable_complete_mask(),
# 64K pages): the module prints it as flag_mask=e0800000000035ff
PTDUMP_MASK = (
    _PAGE_PRIVILEGED | _PAGE_READ | _PAGE_WRITE | _PAGE_EXEC | _PAGE_PTE | _PAGE_PRESENT | _PAGE_INVALID
    | H_PAGE_HASHPTE | _PAGE_DIRTY | _PAGE_ACCESSED | _PAGE_NON_IDEMPOTENT | _PAGE_TOLERANT | H_PAGE_BUSY
    | H_PAGE_COMBO | H_PAGE_4K_PFN | _PAGE_SPECIAL
)
# with 4K pages flag_array has H_PAGE_F_GIX / H_PAGE_F_SECOND instead of COMBO / 4K_PFN, and
# H_PAGE_HASHPTE is _RPAGE_PKEY_BIT4 (hash-4k.h)
H_PAGE_HASHPTE_4K = 0x1000000000000000
H_PAGE_F_SECOND_4K = 0x0100000000000000  # _RPAGE_PKEY_BIT0
H_PAGE_F_GIX_4K = 0x00E0000000000000  # _RPAGE_RPN43 | _RPAGE_RPN42 | _RPAGE_RPN41
H_PAGE_F_GIX_SHIFT_4K = _PAGE_PA_MAX
PTDUMP_MASK_4K = (
    PTDUMP_MASK & ~(H_PAGE_COMBO | H_PAGE_4K_PFN | H_PAGE_HASHPTE)
    | H_PAGE_HASHPTE_4K | H_PAGE_F_GIX_4K | H_PAGE_F_SECOND_4K
)
PERM_BITS = _PAGE_PRIVILEGED | _PAGE_READ | _PAGE_WRITE | _PAGE_EXEC

# ISA field masks (QEMU target/ppc/mmu-radix64.h names them R_PTE_RPN, R_PDE_NLB, R_PDE_NLS)
RPN_MASK = mask(56, 12)  # PTE bits 7:51
NLB_MASK = mask(59, 8)  # PDE bits 4:55, also the process-table entry's RPDB
NLS_MASK = mask(4, 0)  # PDE bits 59:63, also RPDS

# process-table entry doubleword 0 (ISA "Process Table"): RTS = RTS1 || RTS2, the tree maps 2^(RTS+31) bytes
PRTB_RTS1_SHIFT, PRTB_RTS2_SHIFT = 61, 5
QUADRANT3 = 0xC000000000000000  # EA bits 0:1 = 0b11: the operating system, PID 0 (ISA "Fully-Qualified Address")
LINUX_RTS = 52 - 31  # radix__get_tree_size(): 52-bit trees on POWER9/POWER10
LINUX_RPDS = 13  # RADIX_PGD_INDEX_SIZE
# index bits below the root per page size (radix-64k.h, radix-4k.h)
LINUX_NLS = {16: (9, 9, 5), 12: (9, 9, 9)}

# Reason codes of hw_classify() faults
_NOT_VALID, _NLS_MISMATCH, _NO_LEAF = 1, 2, 3
_REASONS = {
    _NOT_VALID: "not valid (V=0)",
    _NLS_MISMATCH: "its NLS differs from this tree's next level (pagewalk walks one size per level)",
    _NO_LEAF: "a directory entry where the tree's size is used up (no page size left)",
}
_ATT_NAMES = {0: "", _PAGE_SAO: "SAO", _PAGE_NON_IDEMPOTENT: "non-idempotent I/O", _PAGE_TOLERANT: "tolerant I/O"}


def _u(v: int) -> np.uint64:
    return np.uint64(v)


class Ppc64Mode(PagingMode):
    """A radix tree: VAs are `va_base + offset` (quadrant 3 for the kernel's PID 0 tree), EA bits
    61:va_bits must be zero (ISA "Radix Tree Translation": otherwise a segment interrupt)."""

    _fields = PagingMode._fields + ("va_base", "nls")
    _compare = PagingMode._compare + ("va_base", "nls")

    def __init__(self, *args: object, va_base: int = QUADRANT3, nls: tuple[int, ...] = (), **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._set(va_base=va_base, nls=nls)  # nls: index bits below the root, the NLS a directory entry must carry

    def canonical_va(self, rel: int) -> int:
        return self.va_base + rel

    def table_offset(self, va: int) -> int:
        return va & ((1 << self.va_bits) - 1)

    def is_canonical(self, va: int) -> bool:
        return 0 <= va < TOP and va >> self.va_bits == self.va_base >> self.va_bits


def decode_prtb0(prtb0: int) -> tuple[int, int, int]:
    """(RTS, RPDB, RPDS) of a process-table entry's first doubleword (ISA "Process Table").

    >>> rts, rpdb, rpds = decode_prtb0(0x40000000027400AD)
    >>> rts + 31, hex(rpdb), rpds
    (52, '0x2740000', 13)
    """
    rts = (((prtb0 >> PRTB_RTS1_SHIFT) & 3) << 3) | ((prtb0 >> PRTB_RTS2_SHIFT) & 7)
    return rts, prtb0 & NLB_MASK, prtb0 & NLS_MASK


def encode_prtb0(rpdb: int, rts: int = LINUX_RTS, rpds: int = LINUX_RPDS) -> int:
    """The first doubleword of a process-table entry (radix__get_tree_size() | __pa(pgd) | RPDS).

    >>> hex(encode_prtb0(0x2740000))
    '0x40000000027400ad'
    """
    return ((rts >> 3) & 3) << PRTB_RTS1_SHIFT | (rts & 7) << PRTB_RTS2_SHIFT | (rpdb & NLB_MASK) | (rpds & NLS_MASK)


def radix_mode(rts: int = LINUX_RTS, rpds: int = LINUX_RPDS, nls: tuple[int, ...] = LINUX_NLS[16]) -> Ppc64Mode:
    """The radix tree of 2^(rts+31) bytes with a 2^rpds-entry root and `nls` index bits below it.

    Linux's 4-level trees only (pgd, pud, pmd, pte: the kernel's walker has no other shape);
    the page size is what the index bits leave of the tree's size.
    >>> m = radix_mode()
    >>> m.va_bits, [lvl.bits for lvl in m.levels], m.levels[-1].entry_span
    (52, [13, 9, 9, 5], 65536)
    """
    va_bits = rts + 31
    bits = (rpds, *nls)
    if len(bits) != 4:
        raise ValueError(f"a {len(bits)}-level radix tree: Linux's book3s64 trees have 4 levels")
    page_shift = va_bits - sum(bits)
    if page_shift < 12 or any(b < 5 for b in bits):
        raise ValueError(
            f"radix tree of {va_bits} bits with {'/'.join(map(str, bits))} index bits leaves a "
            f"{page_shift}-bit page (the ISA needs at least 4 KiB pages and 32-entry tables)"
        )
    return _book3s_mode(va_bits, bits, "radix")


def hash_mode() -> Ppc64Mode:
    """Linux's own tables of a hash-MMU kernel with 64K pages: 8/10/10/8 index bits (hash-64k.h).

    The hash MMU does not walk them: it translates through the hashed page table (HPT), which
    the kernel's HPT-miss handler (hash_page() -> find_linux_pte()) fills from these tables.
    `hw_classify` is therefore that software walk: V clear faults, _PAGE_PTE is a leaf, and the
    directory entries carry no NLS (HASH_P?D_VAL_BITS is _PAGE_PRESENT alone).
    >>> [lvl.entries for lvl in hash_mode().levels], hash_mode().va_bits
    ([256, 1024, 1024, 256], 52)
    """
    return _book3s_mode(52, (8, 10, 10, 8), "hash")


def _book3s_mode(va_bits: int, bits: tuple[int, ...], mmu: str) -> Ppc64Mode:
    """The Linux book3s64 tree over `va_bits` with index `bits` (pgd, pud, pmd, pte)."""
    nls = bits[1:]
    page_shift = va_bits - sum(bits)
    rts, rpds = va_bits - 31, bits[0]
    radix = mmu == "radix"
    # p4d_bad(): radix__p4d_bad() tests RADIX_P4D_BAD_BITS, hash__p4d_bad() is "value == 0"
    root_bad = RADIX_P4D_BAD_BITS if radix else 0
    names = ("pgd", "pud", "pmd", "pte")
    # the root is walked as the folded p4d: its holes at real_depth(1) = 0; never a leaf
    klevels = (1, 2, 3, 4)
    holes = (0, 2, 3, 4)
    levels = []
    shift = va_bits
    for name, b, kl, hd in zip(names, bits, klevels, holes):
        shift -= b
        levels.append(Level(name=name, shift=shift, bits=b, klevel=kl, hole_depth=hd))
    rpn_mask = mask(_PAGE_PA_MAX - 1, page_shift)  # PTE_RPN_MASK
    last = len(levels) - 1
    next_bits = (*nls, 0)

    def classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Linux v6.1's walker (see the module docstring): Kind and next-table / output PA."""
        e = e.astype(U64, copy=False)
        if level == last:
            return np.full(e.shape, Kind.LEAF, dtype=np.uint8), e & _u(rpn_mask)
        kind = np.full(e.shape, Kind.TABLE, dtype=np.uint8)
        addr = e & _u(~P4D_MASKED_BITS & (TOP - 1))
        none = e == 0
        if level == 0:
            kind[(e & _u(root_bad)) != 0] = Kind.HOLE  # p4d_none_or_clear_bad()
            kind[none] = Kind.HOLE
            return kind, addr
        leaf = (e & _u(_PAGE_PTE)) != 0
        present = (e & _u(_PAGE_PRESENT)) != 0
        kind[~present] = Kind.SKIP
        kind[leaf] = Kind.LEAF
        kind[none] = Kind.HOLE
        return kind, np.where(leaf, e & _u(rpn_mask), addr)

    def hw_classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(HwKind, PA or reason code): "Radix Tree Translation" as QEMU's ppc_radix64_walk_tree() does it."""
        e = e.astype(U64, copy=False)
        leaf = (e & _u(_PAGE_PTE)) != 0
        span = levels[level].entry_span
        kind = np.where(leaf, np.uint8(HwKind.LEAF), np.uint8(HwKind.TABLE)).astype(np.uint8)
        out = np.where(leaf, e & _u(RPN_MASK & ~(span - 1)), e & _u(NLB_MASK))
        if not radix:
            # hash: Linux's entries, read by software: pte_pfn() (PTE_RPN_MASK: bits 55:53 are
            # hash bookkeeping such as H_PAGE_HASHPTE) and p?d_pgtable() (~P?D_MASKED_BITS)
            out = np.where(leaf, e & _u(rpn_mask & ~(span - 1)), e & _u(~P4D_MASKED_BITS & (TOP - 1)))
        elif level != last:
            # NLB is aligned down to the next table's size (2^(NLS+3) bytes)
            out = np.where(leaf, out, out & ~_u((8 << next_bits[level]) - 1))
        reason = np.zeros(e.shape, dtype=U64)

        def fault(cond: np.ndarray, code: int) -> None:
            # later calls take precedence: call from the least to the most fundamental reason
            kind[cond] = HwKind.FAULT
            reason[cond] = code

        if level == last:
            fault(~leaf, _NO_LEAF)
        elif radix:
            fault(~leaf & ((e & _u(NLS_MASK)) != _u(next_bits[level])), _NLS_MISMATCH)
        fault((e & _u(_PAGE_PRESENT)) == 0, _NOT_VALID)
        return kind, np.where(kind == HwKind.FAULT, reason, out)

    def perm(level: int, e: np.ndarray) -> np.ndarray:
        return e.astype(U64, copy=False) & _u(PERM_BITS)

    def perm_combine(parent: np.ndarray, child: np.ndarray) -> np.ndarray:
        """Radix has no hierarchical permissions: the leaf's EAA alone decides (ISA "Storage Protection")."""
        return child

    return Ppc64Mode(
        name=f"ppc64-{mmu}{va_bits}-{'-'.join(map(str, bits))}",
        arch="ppc64",
        levels=tuple(levels),
        entry_bytes=8,
        byteorder=">",
        va_bits=va_bits,
        canonical=False,
        pa_bits=_PAGE_PA_MAX,
        classify=classify,
        hw_classify=hw_classify,
        perm=perm,
        perm_combine=perm_combine,
        perm_top=PERM_BITS,
        ptdump_key_mask=PTDUMP_MASK if page_shift >= 16 else PTDUMP_MASK_4K,
        root_align=max(8 << rpds, 256),
        fault_reason=lambda code: _REASONS.get(code, "fault"),
        describe=lambda level_name, entry: describe(entry, level_name == "pte", radix),
        extra={"perm_text": perm_text, "page_shift": page_shift, "rpn_mask": rpn_mask, "rts": rts, "rpds": rpds,
               "mmu": mmu, "arch_bits": arch_bits},
        nls=tuple(nls),
    )


def arch_bits(mode: PagingMode):
    """The analyses' ArchBits (pagewalk.analysis.mappings), imported only when an analysis runs.

    The permission word is the leaf's EAA (perm(); radix has no hierarchical permissions): ISA
    "Storage Protection" / pgtable.h: _PAGE_PRIVILEGED makes the page the kernel's only, the
    kernel executes only privileged pages (KUEP), user mode only non-privileged ones; read and
    write are _PAGE_READ / _PAGE_WRITE. No global bit (PID-tagged TLB; quadrant 3 is the
    kernel's). R and C (_PAGE_ACCESSED, _PAGE_DIRTY) are status; ATT the memory type. The same
    bits in the Linux tables of a hash-MMU kernel (hash-64k.h uses the book3s64 _PAGE_* names).
    """
    from ..analysis.mappings import ArchBits, Bit

    return ArchBits(
        valid=Bit(_PAGE_PRESENT, _PAGE_PRESENT),
        user=Bit(_PAGE_PRIVILEGED, 0),
        read=Bit(_PAGE_READ, _PAGE_READ),
        write=Bit(_PAGE_WRITE, _PAGE_WRITE),
        kexec=Bit(_PAGE_EXEC | _PAGE_PRIVILEGED, _PAGE_EXEC | _PAGE_PRIVILEGED),
        uexec=Bit(_PAGE_EXEC | _PAGE_PRIVILEGED, _PAGE_EXEC),
        glob=Bit(0, 0),
        status_mask=_PAGE_ACCESSED | _PAGE_DIRTY,
        memtype_mask=_PAGE_ATT,
    )


def with_nls(mode: Ppc64Mode, nls: tuple[int, ...]) -> Ppc64Mode:
    """The same tree with other index bits below the root (`radix_mode()` of the same RTS/RPDS)."""
    if nls == mode.nls:
        return mode
    if mode.extra["mmu"] != "radix":
        raise ValueError(f"{mode.name}: the hash MMU's Linux tables have a fixed geometry")
    return radix_mode(mode.extra["rts"], mode.extra["rpds"], nls)


def perm_text(perm: int) -> str:
    """The leaf's EAA for `translate`'s summary line: RW grants read and write (ISA: EAA encodings).

    >>> perm_text(_PAGE_PRIVILEGED | _PAGE_READ | _PAGE_EXEC)
    'kernel r-x'
    """
    r = perm & (_PAGE_READ | _PAGE_WRITE)
    return ("kernel " if perm & _PAGE_PRIVILEGED else "user ") + "".join(
        ch if ok else "-" for ok, ch in ((r, "r"), (perm & _PAGE_WRITE, "w"), (perm & _PAGE_EXEC, "x"))
    )


def describe(entry: int, last: bool = False, radix: bool = True) -> str:
    """Decoded fields of one entry for `translate`, with the ISA's names (a hash-MMU kernel's
    directory entries are Linux's: a table address, no NLS)."""
    if not entry:
        return "not valid (0)"
    out = ["V" if entry & _PAGE_PRESENT else "not valid"]
    if entry & _PAGE_PTE:
        out.append("L")
        # hash: bits 55:53 are the kernel's HPTE bookkeeping, not address (PTE_RPN_MASK, 64K pages)
        out.append(f"RPN={(entry & (RPN_MASK if radix else mask(_PAGE_PA_MAX - 1, 16))):#x}")
        if not radix and entry & H_PAGE_HASHPTE:
            out.append("hpte")
        for bit, name in ((_PAGE_ACCESSED, "R"), (_PAGE_DIRTY, "C")):
            if entry & bit:
                out.append(name)
        att = entry & _PAGE_ATT
        if att:
            out.append(f"ATT={_ATT_NAMES[att]}")
        eaa = [n for b, n in ((_PAGE_PRIVILEGED, "privileged"), (_PAGE_READ, "read"),
                              (_PAGE_WRITE, "read/write"), (_PAGE_EXEC, "execute")) if entry & b]
        out.append("EAA=" + ("|".join(eaa) if eaa else "none"))
        sw = [n for b, n in ((_RPAGE_SW0, "SW0"), (_RPAGE_SW1, "devmap"), (_RPAGE_SW2, "special"),
                             (_RPAGE_SW3, "soft-dirty")) if entry & b]
        out += sw
    elif not radix:
        out.append(f"table={entry & ~P4D_MASKED_BITS & (TOP - 1):#x}")
    else:
        out.append(f"NLB={(entry & NLB_MASK):#x} NLS={entry & NLS_MASK}")
        if last and entry & _PAGE_PRESENT:
            out.append("(directory entry at the last level)")
    return " ".join(out)


def probe_nls(mem, rpdb: int, mode: Ppc64Mode) -> tuple[tuple[int, ...], list[str]]:
    """The index bits below the root as the tree's own directory entries give them (NLS).

    Reads one level at a time (whole tables as numpy arrays): the NLS of every valid directory
    entry of a level gives the size of the next level's tables. Where a level has no directory
    entry (or the image lacks its tables) the mode's value stays. Entries that disagree are
    reported; the most common NLS wins (the kernel always writes one value per level).
    """
    notes: list[str] = []
    nls = list(mode.nls)
    pas = np.array([rpdb], dtype=np.uint64)
    bits = mode.levels[0].bits
    for i in range(len(mode.levels) - 1):
        if len(pas) == 0:
            break
        ent, ok = mem.gather_tables(pas, 1 << bits, mode.dtype)
        e = ent[ok].reshape(-1).astype(U64)
        pde = e[((e & _u(_PAGE_PRESENT)) != 0) & ((e & _u(_PAGE_PTE)) == 0)]
        if len(pde) == 0:
            break
        values, counts = np.unique(pde & _u(NLS_MASK), return_counts=True)
        best = int(values[np.argmax(counts)])
        if len(values) > 1:
            notes.append(
                f"{mode.levels[i].name} directory entries disagree on NLS ({', '.join(map(str, values.tolist()))}): "
                f"walking {mode.levels[i + 1].name} tables of 2^{best} entries"
            )
        nls[i] = best
        bits = best
        nxt = pde[(pde & _u(NLS_MASK)) == _u(best)] & _u(NLB_MASK)
        pas = np.unique(nxt & ~_u((8 << best) - 1))[:4096]
    return tuple(nls), notes


RADIX_64K = radix_mode()
RADIX_4K = radix_mode(nls=LINUX_NLS[12])
HASH_64K = hash_mode()

__all__ = [
    "HASH_64K",
    "RADIX_4K",
    "RADIX_64K",
    "Ppc64Mode",
    "decode_prtb0",
    "describe",
    "encode_prtb0",
    "hash_mode",
    "perm_text",
    "probe_nls",
    "radix_mode",
    "with_nls",
]
