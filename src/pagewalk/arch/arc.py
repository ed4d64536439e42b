"""ARC Linux page tables (ARCompact MMUv3 / ARCv2 MMUv4): software-walked, configuration-defined.

The ARC700/HS MMU has a TLB refilled by software (ARC700 / ARCv2 Programmer's Reference
Manuals, "Memory Management Unit": TLB Miss exceptions; the handler is arch/arc/mm/tlbex.S),
so the layout is what the kernel configuration makes it. From the v6.12 headers:

* arch/arc/include/asm/pgtable-levels.h: 2 levels by default (CONFIG_PGTABLE_LEVELS=2, "11:8:13"
  with 8 KiB pages: PGDIR_SHIFT 21, PTRS_PER_PGD = 2^(32 - PGDIR_SHIFT), PTRS_PER_PTE =
  2^(PGDIR_SHIFT - PAGE_SHIFT); 4 KiB pages 10:10:12; a super-page configuration pegs
  PGDIR_SHIFT to the super page: 21 for 2 MiB, 24 for 16 MiB), and the testing layouts
  "<4>:<7>:<8>:<13>" (3 levels: PGDIR_SHIFT 28, PMD_SHIFT 21) and "<4>:<3>:<4>:<8>:<13>"
  (4 levels: PUD_SHIFT 25). p?d_none() is 0, p?d_bad() is "bits below PAGE_SIZE set",
  pmd_leaf() is _PAGE_HW_SZ (ARCv2), pte_present() _PAGE_PRESENT, pte_pfn() pte >> PAGE_SHIFT;
  upper entries hold the next table's kernel address, which is its physical address
  (asm/page.h: __pa() is the identity; the kernel runs untranslated from PAGE_OFFSET).
* arch/arc/include/asm/pgtable-bits-arcv2.h: the PTE bits (CACHEABLE 0, EXECUTE 1, WRITE 2,
  READ 3, ACCESSED 4, DIRTY 5, SPECIAL 6, GLOBAL 8, PRESENT 9 = the TLB's valid bit, HW_SZ 10).
* asm/processor.h: user 0..0x5fffffff, kernel vaddr (vmalloc, modules, pkmap, fixmap)
  0x70000000..0x7fffffff (CONFIG_ARC_KVADDR_SIZE 256 MiB), the untranslated kernel from 0x80000000.

Not modelled: CONFIG_ARC_HAS_PAE40, whose PTEs are 64-bit while PGD/PMD entries stay 32-bit (a
PagingMode has one entry size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..mode import HwKind, Kind, Level, PagingMode

U64 = np.uint64

_PAGE_CACHEABLE = 1 << 0
_PAGE_EXECUTE = 1 << 1
_PAGE_WRITE = 1 << 2
_PAGE_READ = 1 << 3
_PAGE_ACCESSED = 1 << 4
_PAGE_DIRTY = 1 << 5
_PAGE_SPECIAL = 1 << 6
_PAGE_GLOBAL = 1 << 8
_PAGE_PRESENT = 1 << 9
_PAGE_HW_SZ = 1 << 10  # CONFIG_ARC_MMU_V4
FLAGS = (("CACHEABLE", _PAGE_CACHEABLE), ("EXECUTE", _PAGE_EXECUTE), ("WRITE", _PAGE_WRITE),
         ("READ", _PAGE_READ), ("ACCESSED", _PAGE_ACCESSED), ("DIRTY", _PAGE_DIRTY),
         ("SPECIAL", _PAGE_SPECIAL), ("GLOBAL", _PAGE_GLOBAL), ("PRESENT", _PAGE_PRESENT), ("HW_SZ", _PAGE_HW_SZ))
PAGE_KERNEL = _PAGE_PRESENT | _PAGE_CACHEABLE | _PAGE_GLOBAL | _PAGE_READ | _PAGE_WRITE | _PAGE_EXECUTE
VMALLOC_START = 0x70000000  # PAGE_OFFSET - (CONFIG_ARC_KVADDR_SIZE << 20)
PAGE_OFFSET = 0x80000000


def _u(v: int) -> np.uint64:
    return np.uint64(v)


@dataclass(frozen=True)
class ArcConfig:
    """PAGE_SHIFT and the VA shifts of the levels, root first (pgtable-levels.h)."""

    name: str
    page_shift: int
    shifts: tuple[int, ...]  # PGDIR_SHIFT [, PUD_SHIFT] [, PMD_SHIFT]; the PTE level is page_shift
    mmu_v4: bool = True  # ARCv2 HS: _PAGE_HW_SZ and pmd_leaf()
    description: str = ""


CONFIGS = {
    c.name: c
    for c in (
        ArcConfig("8k", 13, (21,), description="8 KiB pages, 2 levels 11:8:13 (ARCv2 defconfig, default)"),
        ArcConfig("4k", 12, (22,), description="4 KiB pages, 2 levels 10:10:12"),
        ArcConfig("16k", 14, (21,), description="16 KiB pages, 2 levels 11:7:14"),
        ArcConfig("8k-hugepage-16m", 13, (24,), description="8 KiB pages, ARC_HUGEPAGE_16M: 2 levels 8:11:13"),
        ArcConfig("8k-3level", 13, (28, 21), description="8 KiB pages, 3 levels 4:7:8:13"),
        ArcConfig("8k-4level", 13, (28, 25, 21), description="8 KiB pages, 4 levels 4:3:4:8:13"),
        ArcConfig("arcompact-8k", 13, (21,), mmu_v4=False,
                  description="ARC700 MMUv3: 8 KiB pages, 2 levels, no _PAGE_HW_SZ"),
    )
}
DEFAULT_CONFIG = "8k"

_NOT_VALID, _NO_TABLE = 1, 2
_REASONS = {
    _NOT_VALID: "TLB entry not valid (_PAGE_PRESENT, the TLB's V bit, clear)",
    _NO_TABLE: "zero entry: the TLB-miss handler takes the slow path (do_page_fault)",
}


def make_mode(config: ArcConfig | str = DEFAULT_CONFIG, byteorder: str = "<") -> PagingMode:
    """The ARC mode of one configuration.

    >>> m = make_mode("8k")
    >>> [lvl.entries for lvl in m.levels]
    [2048, 256]
    """
    cfg = CONFIGS[config] if isinstance(config, str) else config
    ps = cfg.page_shift
    n = len(cfg.shifts) + 1
    shifts = list(cfg.shifts) + [ps]
    widths = [32 - shifts[0]] + [shifts[i] - shifts[i + 1] for i in range(n - 1)]
    names = {2: ("pgd", "pte"), 3: ("pgd", "pmd", "pte"), 4: ("pgd", "pud", "pmd", "pte")}[n]
    # the kernel role of each level (folded levels: nopmd, nopud, nop4d)
    roles = {2: ("pmd", "pte"), 3: ("pud", "pmd", "pte"), 4: ("p4d", "pud", "pmd", "pte")}[n]
    kl = {"p4d": 1, "pud": 2, "pmd": 3, "pte": 4}
    levels = tuple(Level(names[i], shifts[i], widths[i], kl[roles[i]], 0 if i == 0 else kl[roles[i]]) for i in range(n))
    last = n - 1
    page_low = (1 << ps) - 1
    hw_sz = _PAGE_HW_SZ if cfg.mmu_v4 else 0
    pmd_level = roles.index("pmd")

    def classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The kernel walker's view (pgtable-levels.h)."""
        e = e.astype(U64, copy=False)
        if level == last:
            return np.full(e.shape, Kind.LEAF, dtype=np.uint8), e & ~_u(page_low) & _u(0xFFFFFFFF)
        kind = np.full(e.shape, Kind.TABLE, dtype=np.uint8)
        pa = e & ~_u(page_low)
        bad = (e & _u(page_low)) != 0
        if level == pmd_level and hw_sz:
            leaf = (e & _u(hw_sz)) != 0
            kind[bad & ~leaf] = Kind.HOLE
            kind[leaf] = Kind.LEAF
            pa = np.where(leaf, e & ~_u((1 << shifts[level]) - 1), pa)
        else:
            kind[bad] = Kind.HOLE
        kind[e == _u(0)] = Kind.HOLE
        return kind, pa & _u(0xFFFFFFFF)

    def hw_classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The TLB-miss handler (tlbex.S, LOAD_FAULT_PTE): a zero upper entry goes to the slow
        path, _PAGE_HW_SZ in the PMD is a super page, the PTE's _PAGE_PRESENT is the TLB's V."""
        e = e.astype(U64, copy=False)
        reason = np.zeros(e.shape, dtype=U64)
        if level == last:
            leaf = np.ones(e.shape, dtype=bool)
            out = e & ~_u(page_low)
        else:
            leaf = ((e & _u(hw_sz)) != 0) if (level == pmd_level and hw_sz) else np.zeros(e.shape, dtype=bool)
            out = np.where(leaf, e & ~_u((1 << shifts[level]) - 1), e & ~_u(page_low))
            reason[~leaf & (e == _u(0))] = _NO_TABLE
        reason[leaf & ((e & _u(_PAGE_PRESENT)) == 0)] = _NOT_VALID
        kind = np.where(leaf, np.uint8(HwKind.LEAF), np.uint8(HwKind.TABLE)).astype(np.uint8)
        kind[reason != 0] = HwKind.FAULT
        return kind, np.where(kind == HwKind.FAULT, reason, out & _u(0xFFFFFFFF))

    perm_bits = _PAGE_PRESENT | _PAGE_READ | _PAGE_WRITE | _PAGE_EXECUTE | _PAGE_GLOBAL

    def perm(level: int, e: np.ndarray) -> np.ndarray:
        e = e.astype(U64, copy=False)
        if level == last:
            return e & _u(perm_bits)
        if level == pmd_level and hw_sz:
            return np.where((e & _u(hw_sz)) != 0, e & _u(perm_bits), _u(perm_bits))
        return np.full(e.shape, _u(perm_bits))

    def present(level: int, e: np.ndarray) -> np.ndarray:
        return (np.asarray(e, dtype=U64) & _u(_PAGE_PRESENT)) != 0

    flags = [f for f in FLAGS if f[1] != _PAGE_HW_SZ or hw_sz]
    return PagingMode(
        name=f"arc-{cfg.name}",
        arch="arc",
        levels=levels,
        entry_bytes=4,
        byteorder=byteorder,
        va_bits=32,
        canonical=False,
        pa_bits=32,
        classify=classify,
        hw_classify=hw_classify,
        perm=perm,
        perm_combine=lambda parent, child: child,
        perm_top=perm_bits,
        ptdump_key_mask=page_low,
        root_align=1 << ps,
        fault_reason=lambda code: _REASONS.get(code, "fault"),
        describe=lambda level_name, entry: describe(entry, level_name == "pte" or bool(
            hw_sz and entry & hw_sz and level_name == names[pmd_level]), flags, page_low),
        extra={"config": cfg, "present": present, "generic_flags": flags, "perm_text": perm_text,
               "arch_bits": arch_bits},
    )


def arch_bits(mode: PagingMode):
    """The analyses' ArchBits (pagewalk.analysis.mappings), imported only when an analysis runs.

    The permission word is the PTE's own bits (perm(): no hierarchical permissions). tlbex.S
    CONV_PTE_TO_TLB copies _PAGE_READ/_WRITE/_EXECUTE into TLBPD1's kernel permissions (Kr Kw Kx)
    and, for a page without _PAGE_GLOBAL, into the user ones (Ur Uw Ux) too: a global page is
    the kernel's only, a non-global one user mode's as well. _PAGE_PRESENT is the TLB's valid
    bit; _PAGE_ACCESSED and _PAGE_DIRTY are status; _PAGE_CACHEABLE the memory type. The kernel's
    translated addresses start at VMALLOC_START (asm/processor.h: user space ends below it). An
    upper entry is valid when not zero (tlbex.S takes the slow path on 0), a super-page PMD
    (_PAGE_HW_SZ) when _PAGE_PRESENT is set.
    """
    from ..analysis.mappings import ArchBits, Bit

    n = len(mode.levels)
    hw_sz = _PAGE_HW_SZ if mode.extra["config"].mmu_v4 else 0

    def upper_valid(level: int):
        def valid(e: np.ndarray) -> np.ndarray:
            e = np.asarray(e, dtype=U64)
            ok = e != _u(0)
            if hw_sz and level == n - 2:  # the pmd: pmd_leaf() is _PAGE_HW_SZ
                ok = np.where((e & _u(hw_sz)) != 0, (e & _u(_PAGE_PRESENT)) != 0, ok)
            return ok

        return valid

    return ArchBits(
        valid=Bit(_PAGE_PRESENT, _PAGE_PRESENT, at=tuple((i, upper_valid(i)) for i in range(n - 1))),
        user=Bit(_PAGE_GLOBAL, 0),
        read=Bit(_PAGE_READ, _PAGE_READ),
        write=Bit(_PAGE_WRITE, _PAGE_WRITE),
        kexec=Bit(_PAGE_EXECUTE, _PAGE_EXECUTE),
        uexec=Bit(_PAGE_EXECUTE | _PAGE_GLOBAL, _PAGE_EXECUTE),
        glob=Bit(_PAGE_GLOBAL, _PAGE_GLOBAL),
        status_mask=_PAGE_ACCESSED | _PAGE_DIRTY,
        memtype_mask=_PAGE_CACHEABLE,
        kernel_va_start=VMALLOC_START,
    )


def describe(entry: int, leaf: bool, flags, page_low: int = (1 << 13) - 1) -> str:
    """Decoded bits of one entry for `translate`."""
    if not leaf:
        return f"table at PA {entry & ~page_low & 0xFFFFFFFF:#x}" if entry else "none"
    return " ".join(n for n, m in flags if entry & m)


def perm_text(perm: int) -> str:
    """The PTE's rights, e.g. "global rwx" (kernel, ASID agnostic) or "rw-"."""
    return ("global " if perm & _PAGE_GLOBAL else "") + "".join(
        c if perm & b else "-" for b, c in ((_PAGE_READ, "r"), (_PAGE_WRITE, "w"), (_PAGE_EXECUTE, "x")))


def config_help() -> str:
    return "; ".join(f"{c.name}: {c.description}" for c in CONFIGS.values())
