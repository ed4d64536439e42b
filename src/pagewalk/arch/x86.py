"""x86 paging: x86-64 4-level and 5-level (LA57), i386 PAE (3-level) and 2-level (32-bit paging),
as the MMU and as Linux's generic walker see them. All four modes come from one factory.

Entry bits: Intel SDM Vol. 3A §4.3 (32-bit paging, tables 4-4 to 4-6), §4.4 (PAE, tables 4-8
to 4-11), §4.5 (4/5-level, tables 4-15 to 4-20) and arch/x86/include/asm/pgtable_types.h.
The kernel's view (which entries are none, bad, leaves, tables) follows arch/x86/include/asm/
pgtable.h as of v6.1/v6.12 and the asm-generic folding headers:

* p4d_none()/pud_none()/pmd_none() ignore the Accessed and Dirty bits (_PAGE_KNL_ERRATUM_MASK);
  on a 32-bit kernel pmd_none() reads an unsigned long, i.e. only the low word of a PAE entry;
* pgd_bad()/p4d_bad() turn an entry with stray flag bits into a hole (where those levels are
  real: x86-64); the folded levels of i386 (pgtable-nop4d.h, -nopud.h, -nopmd.h) are never none
  or bad, so a PAE PDPTE is judged by pud_none()/pud_present()/pud_leaf() and a 2-level PDE by
  pmd_none()/pmd_present()/pmd_leaf();
* pud_leaf()/pmd_leaf() test PSE alone, pmd_present() accepts PRESENT, PROTNONE (= GLOBAL) or PSE.

Which hardware level plays which kernel role (the `role` of a level: its note_page() level;
pte_hole() depths as real_depth() folds them): x86-64 5-level pgd p4d pud pmd pte; 4-level the
root is the p4d (holes at depth 0); PAE the 4-entry PDPT is the pud (holes at depth 0, PMD and
PTE below); 2-level the page directory is the pmd (4 MiB pages are reported at level 3 "pmd",
holes at depth 0 "pgd").

PAE PDPTEs have no RW, U/S or XD bits (SDM table 4-8: bits 2:1 and 8:5 reserved; this MMU view
ignores those, as QEMU does, which sets A in them; XD and address bits above MAXPHYADDR fault):
the MMU's permission fold starts below them. Linux's effective_prot() folds the PDPTE's flags anyway (as the
pgd, p4d and pud values), so its effective permissions never carry RW or USR with PAE;
`ptdump_view(mode)` is the mode with that fold, for the kernel's ptdump text and W+X check.
"""

from __future__ import annotations

from collections import namedtuple

# numpy when a hook first runs: building the modes does not import it
from .._lazynp import np
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
_PKEY_SHIFT = 59  # protection key, bits 62:59 of leaf entries (SDM §4.6.2; IA-32e paging only)

_PHYSICAL_MASK_SHIFT = 52  # __PHYSICAL_MASK_SHIFT (x86-64 and PAE; 32 without PAE)
PTE_PFN_MASK = mask(_PHYSICAL_MASK_SHIFT - 1, 12)
PTE_FLAGS_MASK = ((1 << 64) - 1) ^ PTE_PFN_MASK
PTE_FLAGS_MASK_32 = mask(11, 0)  # 2-level: pteval_t is 32 bits, PTE_PFN_MASK 0xfffff000
_KNL_ERRATUM_MASK = _PAGE_DIRTY | _PAGE_ACCESSED
_KERNPG_TABLE = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY
PERM_BITS = _PAGE_USER | _PAGE_RW | _PAGE_NX
_PDPTE_RESERVED = mask(2, 1) | mask(8, 5)  # SDM table 4-8: reserved (PS, bit 7, is one of them)
_PSE36_RESERVED = 1 << 21  # SDM table 4-4: bits 20:13 are PA bits 39:32, bit 21 is reserved

def _u(v: int) -> np.uint64:
    return np.uint64(v)


def __getattr__(name: str) -> object:
    if name == "U64":  # np.uint64, without importing numpy with this module (PEP 562)
        return np.uint64
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Reason codes of hw_classify() faults.
_NOT_PRESENT, _RESERVED_PS, _RESERVED_PA, _RESERVED_LARGE = 1, 2, 3, 4
_REASONS = {
    _NOT_PRESENT: "not present (P=0)",
    _RESERVED_PS: "reserved bit set (PS must be 0 at this level)",
    _RESERVED_PA: "reserved bit set (address bits above MAXPHYADDR)",
    _RESERVED_LARGE: "reserved bit set (bits below the large page's alignment)",
}

_ROLE_KLEVEL = {"pgd": 0, "p4d": 1, "pud": 2, "pmd": 3, "pte": 4}


# The shape of one x86 paging mode: levels top-down as (name, VA shift, index bits, role);
# leaf_shift maps a hardware level to the page shift of an entry with PS=1 there; long_bits is the
# kernel's unsigned long (pmd_none() truncates to it); pdpt: the root is PAE's 4-entry PDPT; pse36:
# 32-bit paging's 4 MiB pages carry PA bits 39:32 in bits 20:13; pkeys: IA-32e paging's bits 62:59
# of a leaf are a protection key. (A namedtuple: no dataclasses on the start-up path.)
_Paging = namedtuple(
    "_Paging",
    "name arch levels entry_bytes va_bits canonical leaf_shift root_align long_bits pdpt pse36 pkeys",
    defaults=(False, False, True),
)


_PAGINGS = {
    "5level": _Paging(
        "x86_64-5level", "x86_64",
        (("pgd", 48, 9, "pgd"), ("p4d", 39, 9, "p4d"), ("pud", 30, 9, "pud"), ("pmd", 21, 9, "pmd"), ("pte", 12, 9, "pte")),
        8, 57, True, {2: 30, 3: 21}, 4096, 64,
    ),
    "4level": _Paging(
        "x86_64-4level", "x86_64",
        (("pgd", 39, 9, "p4d"), ("pud", 30, 9, "pud"), ("pmd", 21, 9, "pmd"), ("pte", 12, 9, "pte")),
        8, 48, True, {1: 30, 2: 21}, 4096, 64,
    ),
    # CR3 bits 31:5 hold the PDPT address (SDM §4.4.1): the root is 32-byte aligned
    "pae": _Paging(
        "i386-pae", "i386",
        (("pgd", 30, 2, "pud"), ("pmd", 21, 9, "pmd"), ("pte", 12, 9, "pte")),
        8, 32, False, {1: 21}, 32, 32, pdpt=True, pkeys=False,
    ),
    "2level": _Paging(
        "i386-2level", "i386",
        (("pgd", 22, 10, "pmd"), ("pte", 12, 10, "pte")),
        4, 32, False, {0: 22}, 4096, 32, pse36=True, pkeys=False,
    ),
}


def make_mode(paging: str, pa_bits: int = 52, pse: bool = True, kernel_fold: bool = False) -> PagingMode:
    """The PagingMode of one x86 paging mode ("5level", "4level", "pae", "2level").

    `pa_bits` is MAXPHYADDR (address bits at or above it are reserved; 52: none are); `pse` is
    CR4.PSE, which only 2-level paging consults (without it PS in a PDE is ignored by the MMU);
    `kernel_fold` gives the permission fold of Linux's effective_prot() (differs for PAE only).
    """
    p = _PAGINGS[paging]
    nlev = len(p.levels)
    levels = []
    roles = []
    for i, (name, shift, bits, role) in enumerate(p.levels):
        klevel = _ROLE_KLEVEL[role]
        # real_depth(): the levels folded above the root report their holes at depth 0
        levels.append(Level(name=name, shift=shift, bits=bits, klevel=klevel, hole_depth=0 if i == 0 else klevel))
        roles.append(role)
    pa_high = ((1 << 52) - 1) ^ ((1 << pa_bits) - 1)  # address bits the CPU does not implement
    long_mask = (1 << p.long_bits) - 1
    hw_leaf = dict(p.leaf_shift) if pse or not p.pse36 else {}

    def leaf_addr(level: int, e: np.ndarray) -> np.ndarray:
        shift = p.leaf_shift[level]
        if p.pse36:  # PDE bits 20:13 are PA bits 39:32
            return (e & _u(mask(31, shift))) | (((e >> _u(13)) & _u(0xFF)) << _u(32))
        return e & _u(mask(51, shift))

    def classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = e.astype(np.uint64, copy=False)
        kind = np.full(e.shape, Kind.TABLE, dtype=np.uint8)
        flags = e & _u(PTE_FLAGS_MASK)
        addr = e & _u(PTE_PFN_MASK)
        role = roles[level]
        if role == "pte":  # every slot is reported
            kind[:] = Kind.LEAF
            return kind, addr
        if role == "pgd":
            none = e == 0
            bad = (flags & ~_u(_PAGE_USER | _PAGE_NX)) != _u(_KERNPG_TABLE)
            kind[none | bad] = Kind.HOLE
            return kind, addr
        if role == "p4d":
            none = (e & ~_u(_KNL_ERRATUM_MASK)) == 0
            bad = (flags & ~_u(_KERNPG_TABLE | _PAGE_USER | _PAGE_NX)) != 0
            kind[none | bad] = Kind.HOLE
            return kind, addr
        leaf = (e & _u(_PAGE_PSE)) != 0
        if role == "pud":
            none = (e & ~_u(_KNL_ERRATUM_MASK)) == 0
            present = (e & _u(_PAGE_PRESENT)) != 0
        else:  # pmd
            none = (e & _u(long_mask & ~_KNL_ERRATUM_MASK)) == 0
            present = (e & _u(_PAGE_PRESENT | _PAGE_GLOBAL | _PAGE_PSE)) != 0
        kind[~present] = Kind.SKIP
        kind[leaf] = Kind.LEAF
        kind[none] = Kind.HOLE
        if level in p.leaf_shift:
            addr = np.where(leaf, leaf_addr(level, e), addr)
        return kind, addr

    def hw_classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(HwKind, PA or reason code): the MMU's view, SDM §4.3, §4.4.2, §4.5.4."""
        e = e.astype(np.uint64, copy=False)
        present = (e & _u(_PAGE_PRESENT)) != 0
        ps = (e & _u(_PAGE_PSE)) != 0
        kind = np.full(e.shape, HwKind.TABLE, dtype=np.uint8)
        out = e & _u(PTE_PFN_MASK)
        reason = np.zeros(e.shape, dtype=np.uint64)
        if level == nlev - 1:
            kind[:] = HwKind.LEAF
        elif level in hw_leaf:
            shift = hw_leaf[level]
            kind[ps] = HwKind.LEAF
            out = np.where(ps, leaf_addr(level, e), out)
            low = _PSE36_RESERVED if p.pse36 else mask(shift - 1, 13)  # bits between PAT (12) and the base
            bad_large = ps & ((e & _u(low)) != 0)
            kind[bad_large] = HwKind.FAULT
            reason[bad_large] = _RESERVED_LARGE
        elif level in p.leaf_shift or p.pdpt and level == 0:  # PS ignored: 2-level without CR4.PSE, PDPTEs (QEMU)
            pass
        else:
            kind[ps] = HwKind.FAULT
            reason[ps] = _RESERVED_PS
        if p.pdpt and level == 0:
            # bits 2:1 and 8:5 are reserved too (SDM table 4-8), but QEMU neither checks them nor
            # keeps them clear: it sets A (bit 5) in the PDPTEs it walks, as the captures show
            high = ((1 << 64) - 1) ^ ((1 << pa_bits) - 1)  # 63:MAXPHYADDR, XD included
            badpa = (e & _u(high)) != 0
            kind[badpa] = HwKind.FAULT
            reason[badpa] = _RESERVED_PA
        elif p.pdpt or pa_high and p.entry_bytes == 8:
            # PAE: bits 62:MAXPHYADDR of a PDE or PTE are reserved (SDM tables 4-9 to 4-11; IA-32e
            # paging ignores 62:52 instead)
            badpa = (e & _u(mask(62, pa_bits) if p.pdpt else pa_high)) != 0
            kind[badpa] = HwKind.FAULT
            reason[badpa] = _RESERVED_PA
        kind[~present] = HwKind.FAULT
        reason[~present] = _NOT_PRESENT
        return kind, np.where(kind == HwKind.FAULT, reason, out)

    def perm(level: int, e: np.ndarray) -> np.ndarray:
        e = e.astype(np.uint64, copy=False)
        if p.pdpt and level == 0 and not kernel_fold:
            return np.full(e.shape, _u(_PAGE_USER | _PAGE_RW), dtype=np.uint64)  # a PDPTE restricts nothing
        return e & _u(PERM_BITS)

    def perm_combine(parent: np.ndarray, child: np.ndarray) -> np.ndarray:
        """effective_prot() of arch/x86/mm/dump_pagetables.c: U and RW must be set at every
        level, NX at any one (SDM §4.6.1)."""
        return (parent & child & _u(_PAGE_USER | _PAGE_RW)) | ((parent | child) & _u(_PAGE_NX))

    # The same three hooks for one entry as a Python int: translate() of a single VA without numpy
    # (resolve() translates the KASLR base variables). tests/test_import_cost.py holds them equal
    # to the array hooks above.
    def leaf_addr_one(level: int, e: int) -> int:
        shift = p.leaf_shift[level]
        if p.pse36:
            return (e & mask(31, shift)) | (((e >> 13) & 0xFF) << 32)
        return e & mask(51, shift)

    def hw_classify_one(level: int, e: int) -> tuple[int, int]:
        """hw_classify() of one entry: (HwKind, PA or reason code)."""
        ps = e & _PAGE_PSE
        kind, out, reason = HwKind.TABLE, e & PTE_PFN_MASK, 0
        if level == nlev - 1:
            kind = HwKind.LEAF
        elif level in hw_leaf:
            low = _PSE36_RESERVED if p.pse36 else mask(hw_leaf[level] - 1, 13)
            if ps:
                kind, out = HwKind.LEAF, leaf_addr_one(level, e)
                if e & low:
                    kind, reason = HwKind.FAULT, _RESERVED_LARGE
        elif level in p.leaf_shift or p.pdpt and level == 0:
            pass
        elif ps:
            kind, reason = HwKind.FAULT, _RESERVED_PS
        if p.pdpt and level == 0:
            if e & (((1 << 64) - 1) ^ ((1 << pa_bits) - 1)):
                kind, reason = HwKind.FAULT, _RESERVED_PA
        elif p.pdpt or pa_high and p.entry_bytes == 8:
            if e & (mask(62, pa_bits) if p.pdpt else pa_high):
                kind, reason = HwKind.FAULT, _RESERVED_PA
        if not e & _PAGE_PRESENT:
            kind, reason = HwKind.FAULT, _NOT_PRESENT
        return int(kind), reason if kind == HwKind.FAULT else out

    def perm_one(level: int, e: int) -> int:
        if p.pdpt and level == 0 and not kernel_fold:
            return _PAGE_USER | _PAGE_RW
        return e & PERM_BITS

    def perm_combine_one(parent: int, child: int) -> int:
        return (parent & child & (_PAGE_USER | _PAGE_RW)) | ((parent | child) & _PAGE_NX)

    def describe_entry(level_name: str, entry: int) -> str:
        if p.pdpt and level_name == levels[0].name:
            return describe_pdpte(entry)
        return describe(level_name, entry, pkeys=p.pkeys)

    suffix = "" if pse or not p.pse36 else "-nopse"
    mode = PagingMode(
        name=p.name + suffix,
        arch=p.arch,
        levels=tuple(levels),
        entry_bytes=p.entry_bytes,
        byteorder="<",
        va_bits=p.va_bits,
        canonical=p.canonical,
        pa_bits=pa_bits if p.entry_bytes == 8 else 40,
        classify=classify,
        hw_classify=hw_classify,
        perm=perm,
        perm_combine=perm_combine,
        perm_top=_PAGE_USER | _PAGE_RW,
        ptdump_key_mask=PTE_FLAGS_MASK if p.entry_bytes == 8 else PTE_FLAGS_MASK_32,
        root_align=p.root_align,
        fault_reason=lambda code: _REASONS.get(code, "fault"),
        describe=describe_entry,
        extra={"paging": paging, "pse": pse, "kernel_fold": kernel_fold, "perm_text": perm_text,
               "scalar_hooks": (hw_classify_one, perm_one, perm_combine_one)},
    )
    if p.pdpt and not kernel_fold:
        mode.extra["ptdump_view"] = make_mode(paging, pa_bits, pse, kernel_fold=True)
    return mode


def _make_mode(levels_n: int, pa_bits: int = 52) -> PagingMode:
    """x86-64 with `levels_n` (4 or 5) levels."""
    return make_mode(f"{levels_n}level", pa_bits)


def perm_text(perm: int) -> str:
    """The effective permission word (U, RW, NX folded down the levels) in words, for `translate`."""
    return " ".join(
        (
            "user" if perm & _PAGE_USER else "kernel",
            "RW" if perm & _PAGE_RW else "ro",
            "NX" if perm & _PAGE_NX else "x",
        )
    )


def describe(level_name: str, entry: int, pkeys: bool = True) -> str:
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
    if pkeys and pkey and (level_name == "pte" or entry & _PAGE_PSE):
        bits.append(f"PKEY={pkey}")
    return " ".join(bits)


def describe_pdpte(entry: int) -> str:
    """A PAE PDPTE (SDM table 4-8): P, PWT, PCD and the address; bits 2:1 and 8:5 are reserved
    (QEMU sets A, bit 5, in them all the same)."""
    if not entry & _PAGE_PRESENT:
        return "not present"
    bits = ["P"] + [n for b, n in ((_PAGE_PWT, "PWT"), (_PAGE_PCD, "PCD"), (_PAGE_ACCESSED, "A")) if entry & b]
    rest = entry & _PDPTE_RESERVED & ~_PAGE_ACCESSED
    if rest:
        bits.append(f"reserved={rest:#x}")
    return " ".join(bits)


X86_64_4LEVEL = make_mode("4level")
X86_64_5LEVEL = make_mode("5level")
I386_PAE = make_mode("pae")
I386_2LEVEL = make_mode("2level")

CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_PKE = 1 << 22
CR4_LA57 = 1 << 12
CR3_PCID_MASK = 0xFFF
CR3_PTI_USER = 1 << 12  # kernel_to_user_pgdp(): the user copy is the page after the kernel PGD


def mode_for(cr4: int | None) -> PagingMode:
    """The x86-64 mode CR4 selects (LA57 = bit 12 means 5-level paging)."""
    return X86_64_5LEVEL if cr4 is not None and cr4 & CR4_LA57 else X86_64_4LEVEL


def i386_mode_for(cr4: int | None, pae: bool | None = None) -> PagingMode:
    """The 32-bit mode CR4 selects: PAE (bit 5), else 2-level with or without PSE (bit 4)."""
    if cr4 is not None:
        if cr4 & CR4_PAE:
            return I386_PAE
        return I386_2LEVEL if cr4 & CR4_PSE else make_mode("2level", pse=False)
    return I386_PAE if pae else I386_2LEVEL


def ptdump_view(mode: PagingMode) -> PagingMode:
    """The mode whose permission fold is Linux's effective_prot(): the MMU's, except with PAE,
    where the kernel folds the PDPTE's flags (no RW, no USR) into every entry below it."""
    return mode.extra.get("ptdump_view", mode)


def root_from_cr3(cr3: int) -> int:
    """The PGD physical address in CR3 (PCID in bits 11:0 dropped; SDM §4.5.2)."""
    return cr3 & PTE_PFN_MASK


def i386_root_from_cr3(cr3: int, pae: bool) -> int:
    """The root in a 32-bit CR3: the PDPT (bits 31:5) with PAE, the page directory (31:12) without."""
    return cr3 & (0xFFFFFFE0 if pae else 0xFFFFF000)
