"""sparc64 Linux page tables: 8 KiB pages, 4 levels, TTE-format PTEs (sun4v or sun4u).

UltraSPARC has no hardware table walker: TLB misses go to the TSB (a software cache of TTEs)
and then to the kernel's software walk (arch/sparc/include/asm/tsb.h, KERN_PGTABLE_WALK, for the
kernel's tables). The PTE is the TTE data word itself: "sun4v" (UltraSPARC Architecture 2005/2007,
hyperprivileged sun4v TTE, §14 "Memory Management", TTE format) on the hypervisor machines
(T1 and later, what Debian's sparc64 kernels run on) and "sun4u" (UltraSPARC III Cu User's
Manual, §F-2 "Translation Table Entry") on the older ones; the kernel patches its accessors at
boot (`.sun4v_1insn_patch`), so both layouts live in one kernel and the choice is the machine's.

Everything below is from arch/sparc/include/asm/pgtable_64.h and page_64.h of v6.12:

* geometry: PAGE_SHIFT 13; PMD_SHIFT = PAGE_SHIFT + (PAGE_SHIFT - 3) = 23, PUD_SHIFT 33,
  PGDIR_SHIFT 43, each level PAGE_SHIFT - 3 = 10 index bits (1024 x 8-byte entries, one page);
  53 VA bits, of which the kernel's tables use only the low half (modules from
  0x10000000, vmalloc from 0x100000000, vmemmap at VMALLOC_END); the linear map and the
  kernel image are mapped by the TSB / locked TLB entries, not by these tables;
* upper entries hold the *physical* address of the next table (pmd_set()/pud_set() store
  __pa()); p?d_none() is 0, p?d_bad() is "bits below PAGE_SIZE set"; pmd_leaf()/pud_leaf() are
  _PAGE_PMD_HUGE (= _PAGE_PUD_HUGE, bit 56); pmd_pfn()/pud_pgtable() go through pte_pfn():
  sun4u keeps PA bits 42:13 (_PAGE_PADDR_4U), sun4v bits 55:13 (_PAGE_PADDR_4V);
* pte_present() is _PAGE_PRESENT_4U (0x80) / _PAGE_PRESENT_4V (0x10); the TLB loads a TTE only
  when _PAGE_VALID (bit 63) is set: KERN_PGTABLE_WALK's `brgez` on the final entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..mode import HwKind, Kind, Level, PagingMode

U64 = np.uint64
PAGE_SHIFT = 13

_PAGE_VALID = 1 << 63
_PAGE_SPECIAL = 1 << 57
_PAGE_PMD_HUGE = 1 << 56  # = _PAGE_PUD_HUGE


def _u(v: int) -> np.uint64:
    return np.uint64(v)


@dataclass(frozen=True)
class TteLayout:
    """One TTE flavour: the named bits (kernel order, high to low), fields and the PA mask."""

    name: str
    flags: tuple[tuple[str, int], ...]
    fields: tuple[tuple[str, int], ...]
    paddr_mask: int
    present: int
    write: int  # the hardware W bit
    exec_: int
    priv: int
    description: str


# pgtable_64.h, the _PAGE_*_4V block
SUN4V = TteLayout(
    name="sun4v",
    flags=(("VALID", _PAGE_VALID), ("NFO", 1 << 62), ("MODIFIED", 1 << 61), ("ACCESSED", 1 << 60),
           ("READ", 1 << 59), ("WRITE", 1 << 58), ("SPECIAL", _PAGE_SPECIAL), ("PMD_HUGE", _PAGE_PMD_HUGE),
           ("IE", 1 << 12), ("E", 1 << 11), ("CP", 1 << 10), ("CV", 1 << 9), ("P", 1 << 8), ("EXEC", 1 << 7),
           ("W", 1 << 6), ("PRESENT", 1 << 4)),
    fields=(("SZ", 0x7),),  # _PAGE_SZALL_4V: 0 8K, 1 64K, 2 512K, 3 4M, 4 32M, 5 256M, 6 2G, 7 16G
    paddr_mask=0x00FFFFFFFFFFE000,  # _PAGE_PADDR_4V: paddr[55:13]
    present=1 << 4,
    write=1 << 6,
    exec_=1 << 7,
    priv=1 << 8,
    description="sun4v TTE (hypervisor sparc64: T1 and later; Debian's default)",
)
# pgtable_64.h, the _PAGE_*_4U block
SUN4U = TteLayout(
    name="sun4u",
    flags=(("VALID", _PAGE_VALID), ("NFO", 1 << 60), ("IE", 1 << 59), ("SPECIAL", _PAGE_SPECIAL),
           ("PMD_HUGE", _PAGE_PMD_HUGE), ("SN", 1 << 47), ("EXEC", 1 << 12), ("MODIFIED", 1 << 11),
           ("ACCESSED", 1 << 10), ("READ", 1 << 9), ("WRITE", 1 << 8), ("PRESENT", 1 << 7), ("L", 1 << 6),
           ("CP", 1 << 5), ("CV", 1 << 4), ("E", 1 << 3), ("P", 1 << 2), ("W", 1 << 1)),
    fields=(("SZ", 0x6001000000000000),),  # _PAGE_SZALL_4U
    paddr_mask=0x000007FFFFFFE000,  # _PAGE_PADDR_4U: pa[42:13]
    present=1 << 7,
    write=1 << 1,
    exec_=1 << 12,
    priv=1 << 2,
    description="sun4u TTE (UltraSPARC I-IV)",
)
CONFIGS = {"sun4v": SUN4V, "sun4u": SUN4U}
DEFAULT_CONFIG = "sun4v"

_NOT_VALID, _NO_TABLE = 1, 2
_REASONS = {
    _NOT_VALID: "TTE not valid (bit 63 clear): KERN_PGTABLE_WALK branches to the fault path",
    _NO_TABLE: "zero entry (no next-level table)",
}


def make_mode(config: TteLayout | str = DEFAULT_CONFIG) -> PagingMode:
    """The sparc64 mode of one TTE layout.

    >>> m = make_mode("sun4v")
    >>> [lvl.shift for lvl in m.levels], m.va_bits
    ([43, 33, 23, 13], 53)
    """
    tte = CONFIGS[config] if isinstance(config, str) else config
    bits = PAGE_SHIFT - 3
    shifts = [PAGE_SHIFT + bits * (3 - i) for i in range(4)]
    names = ("pgd", "pud", "pmd", "pte")
    klevels = (1, 2, 3, 4)  # the pgd entry is the p4d (pgtable-nop4d.h): real_depth() folds it to 0
    levels = tuple(Level(names[i], shifts[i], bits, klevels[i], 0 if i == 0 else klevels[i]) for i in range(4))
    paddr = tte.paddr_mask
    page_low = (1 << PAGE_SHIFT) - 1

    def classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The kernel walker's view (pgtable_64.h: p?d_none/bad/leaf)."""
        e = e.astype(U64, copy=False)
        if level == 3:
            return np.full(e.shape, Kind.LEAF, dtype=np.uint8), e & _u(paddr)
        kind = np.full(e.shape, Kind.TABLE, dtype=np.uint8)
        # p4d_pgtable() is __va(p4d_val): the whole value; pud/pmd go through pte_pfn()
        pa = e.copy() if level == 0 else e & _u(paddr)
        bad = (e & _u(page_low)) != 0
        if level in (1, 2):
            leaf = (e & _u(_PAGE_PMD_HUGE)) != 0
            kind[bad & ~leaf] = Kind.HOLE
            kind[leaf] = Kind.LEAF
            span = _u((1 << shifts[level]) - 1)
            pa = np.where(leaf, pa & ~span, pa)
        else:
            kind[bad] = Kind.HOLE
        kind[e == _u(0)] = Kind.HOLE
        return kind, pa

    def hw_classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """KERN_PGTABLE_WALK (tsb.h): `brz` on a zero upper entry, _PAGE_PUD_HUGE/_PAGE_PMD_HUGE
        end the walk, `brgez` (bit 63, _PAGE_VALID clear) on the final TTE is a fault."""
        e = e.astype(U64, copy=False)
        reason = np.zeros(e.shape, dtype=U64)
        if level == 3:
            leaf = np.ones(e.shape, dtype=bool)
            out = e & _u(paddr)
        else:
            leaf = ((e & _u(_PAGE_PMD_HUGE)) != 0) if level in (1, 2) else np.zeros(e.shape, dtype=bool)
            span = _u((1 << shifts[level]) - 1)
            out = np.where(leaf, e & _u(paddr) & ~span, (e if level == 0 else e & _u(paddr)) & ~_u(7))
            reason[~leaf & (e == _u(0))] = _NO_TABLE
        reason[leaf & ((e & _u(_PAGE_VALID)) == 0)] = _NOT_VALID
        kind = np.where(leaf, np.uint8(HwKind.LEAF), np.uint8(HwKind.TABLE)).astype(np.uint8)
        kind[reason != 0] = HwKind.FAULT
        return kind, np.where(kind == HwKind.FAULT, reason, out)

    perm_bits = _PAGE_VALID | tte.present | tte.write | tte.exec_ | tte.priv

    def perm(level: int, e: np.ndarray) -> np.ndarray:
        e = e.astype(U64, copy=False)
        if level == 0:
            return np.full(e.shape, _u(perm_bits))
        return np.where(level == 3 or ((e & _u(_PAGE_PMD_HUGE)) != 0), e & _u(perm_bits), _u(perm_bits))

    def present(level: int, e: np.ndarray) -> np.ndarray:
        """pte_present() (pmd_present() of a huge PMD is "not zero"; its TTE carries PRESENT)."""
        return (np.asarray(e, dtype=U64) & _u(tte.present)) != 0

    return PagingMode(
        name=f"sparc64-{tte.name}",
        arch="sparc64",
        levels=levels,
        entry_bytes=8,
        byteorder=">",
        va_bits=shifts[0] + bits,
        canonical=True,
        pa_bits=56 if tte is SUN4V else 43,
        classify=classify,
        hw_classify=hw_classify,
        perm=perm,
        perm_combine=lambda parent, child: child,
        perm_top=perm_bits,
        ptdump_key_mask=(1 << 64) - 1 & ~paddr,
        root_align=1 << PAGE_SHIFT,
        fault_reason=lambda code: _REASONS.get(code, "fault"),
        describe=lambda level_name, entry: describe(entry, level_name, tte),
        extra={
            "config": tte,
            "present": present,
            "generic_flags": generic_flags(tte),
            "perm_text": lambda p: perm_text(p, tte),
            "arch_bits": arch_bits,
        },
    )


def arch_bits(mode: PagingMode):
    """The analyses' ArchBits (pagewalk.analysis.mappings), imported only when an analysis runs.

    The permission word is the TTE's own bits (perm(): no hierarchical permissions), of the
    mode's layout (pgtable_64.h _PAGE_*_4V / _4U; sun4v TTE §14, sun4u §F-2): V (bit 63) makes
    the TLB load it, P (privileged) keeps it from user mode, W the hardware write permission, EXEC
    (the TTE's X / IE) execution; there is no read bit (a valid TTE is readable) and no global
    bit (the kernel runs in the nucleus context). Privileged code executes any executable page.
    MODIFIED and ACCESSED are the kernel's software status; CP/CV/E the memory type. An upper
    entry is valid when not zero (KERN_PGTABLE_WALK's `brz`), a huge one when V is set.
    """
    from ..analysis.mappings import NEVER, ArchBits, Bit

    tte = mode.extra["config"]
    flags = dict(tte.flags)

    def upper_valid(level: int):
        def valid(e: np.ndarray) -> np.ndarray:
            e = np.asarray(e, dtype=U64)
            ok = e != _u(0)
            if level in (1, 2):  # pud_leaf()/pmd_leaf(): _PAGE_PUD_HUGE / _PAGE_PMD_HUGE
                ok = np.where((e & _u(_PAGE_PMD_HUGE)) != 0, (e & _u(_PAGE_VALID)) != 0, ok)
            return ok

        return valid

    return ArchBits(
        valid=Bit(_PAGE_VALID, _PAGE_VALID, at=tuple((i, upper_valid(i)) for i in range(len(mode.levels) - 1))),
        user=Bit(tte.priv, 0),
        read=Bit(0, 0),
        write=Bit(tte.write, tte.write),
        kexec=Bit(tte.exec_, tte.exec_),
        uexec=Bit(tte.exec_ | tte.priv, tte.exec_),
        glob=NEVER,
        status_mask=flags["MODIFIED"] | flags["ACCESSED"],
        memtype_mask=flags["CP"] | flags["CV"] | flags["E"],
    )


def generic_flags(tte: TteLayout) -> list[tuple[str, int]]:
    """(name, mask) for the generic dump: single bits low to high, then the size field."""
    return sorted(tte.flags, key=lambda x: x[1]) + list(tte.fields)


def describe(entry: int, level_name: str, tte: TteLayout) -> str:
    """Decoded bits of one entry for `translate`."""
    if level_name != "pte" and not (level_name in ("pud", "pmd") and entry & _PAGE_PMD_HUGE):
        return f"table at PA {entry & (tte.paddr_mask if level_name != 'pgd' else ~7 & ((1 << 64) - 1)):#x}" if entry else "none"
    names = [n for n, m in generic_flags(tte)[:-1] if entry & m]
    for n, m in tte.fields:
        names.append(f"{n}={entry & m:#x}")
    return " ".join(names)


def perm_text(perm: int, tte: TteLayout) -> str:
    """The TTE's access rights, e.g. "kernel rwx" (P set) or "user r-x"."""
    return ("kernel " if perm & tte.priv else "user ") + "r" + ("w" if perm & tte.write else "-") + (
        "x" if perm & tte.exec_ else "-")


def config_help() -> str:
    return "; ".join(f"{c.name}: {c.description}" for c in CONFIGS.values())
