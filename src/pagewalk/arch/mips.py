"""MIPS64 Linux page tables: software-defined, walked by the kernel's TLB refill handler.

MIPS has no hardware page-table walker (MIPS64 Architecture for Programmers Vol. III, "The
MIPS64 Privileged Resource Architecture", §4 "Virtual Memory": the TLB is refilled by software
on a TLB Refill exception). Linux builds that handler at boot (arch/mips/mm/tlbex.c) for tables
whose shape and PTE bits depend on the kernel configuration, so a mode here is a *configuration*:
page size, number of levels, and which optional PTE bits exist. All of it is computed from the
kernel's headers of v6.12 (the same in 6.1):

* geometry, arch/mips/include/asm/pgtable-64.h: PMD_SHIFT = PAGE_SHIFT + (PAGE_SHIFT - 3),
  PGDIR_SHIFT from the levels, PTRS_PER_PGD = (PAGE_SIZE << PGD_TABLE_ORDER) / 8 (4K pages
  without MIPS_VA_BITS_48: PGD_TABLE_ORDER 1, a 1024-entry, 8 KiB PGD);
* PTE bits, arch/mips/include/asm/pgtable-bits.h, the r4k `enum pgtable_bits`: software bits
  PRESENT, [NO_READ without RIXI], WRITE, ACCESSED, MODIFIED, [HUGE], [SPECIAL], [SOFT_DIRTY],
  then the EntryLo bits [NO_EXEC, NO_READ with RIXI], GLOBAL, VALID, DIRTY and the 3-bit cache
  attribute; PFN_PTE_SHIFT = PAGE_SHIFT - 12 + _CACHE_SHIFT + 3 (14 on Debian's 5kc-malta);
  _PAGE_NO_EXEC is 0 when the CPU lacks RI/XI (`cpu_has_rixi`), its bit stays reserved;
* the kernel's view, pgtable-64.h and pgtable.h: a non-leaf entry holds the kernel *virtual*
  address of the next table (CKSEG0 for tables in the kernel image, XKPHYS for allocated ones;
  p?d_pgtable() is a cast), an empty one points at the next level's `invalid_*_table`
  (p?d_none() compares with it; 0 is never written), p?d_bad() is "low bits set";
  pmd_leaf()/pud_leaf() are `_PAGE_HUGE` (CONFIG_MIPS_HUGE_TLB_SUPPORT); pte_present() is
  `_PAGE_PRESENT`; pte_pfn() = pte >> PFN_PTE_SHIFT.

Virtual addresses (arch/mips/include/asm/addrspace.h, pgtable-64.h): the kernel's tables map
XKSEG from MAP_BASE = 0xc000000000000000 (vmalloc) and, because pgd_index() only keeps the low
bits of the VA, the 32-bit compatibility segments CKSSEG/CKSEG3 (modules at 0xffffffffc0000000,
fixmap) land in the last PGD entries: VMALLOC_END stops 4 GiB short of the PGD's span for that.
`MipsMode.windows` says which part of the PGD's span is which VA range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..mode import HwKind, Kind, Level, PagingMode

U64 = np.uint64
TOP = 1 << 64
MAP_BASE = 0xC000000000000000  # XKSEG, asm/mach-generic/spaces.h
CKSEG0 = 0xFFFFFFFF80000000
CKSSEG = 0xFFFFFFFFC0000000
XKPHYS = 0x8000000000000000
TO_PHYS_MASK = (1 << 59) - 1  # addrspace.h: XKPHYS_TO_PHYS(), 2^59 - 1
COMPAT_SPAN = 1 << 32  # the top 4 GiB (CKSEG0 .. CKSEG3) folded into the last PGD entries


def _u(v: int) -> np.uint64:
    return np.uint64(v)


@dataclass(frozen=True)
class MipsConfig:
    """The kernel configuration options that shape MIPS64 page tables (see the module docstring).

    >>> DEBIAN_5KC_MALTA.page_shift, DEBIAN_5KC_MALTA.levels
    (12, 3)
    """

    name: str
    page_shift: int  # CONFIG_PAGE_SIZE_4KB/16KB/64KB
    levels: int  # CONFIG_PGTABLE_LEVELS: 2, 3 or 4
    pgd_order: int  # PGD_TABLE_ORDER
    rixi: bool = True  # CONFIG_CPU_HAS_RIXI (R2 and later)
    huge: bool = True  # CONFIG_MIPS_HUGE_TLB_SUPPORT (HUGETLB_PAGE or TRANSPARENT_HUGEPAGE)
    special: bool = True  # CONFIG_ARCH_HAS_PTE_SPECIAL
    soft_dirty: bool = False  # CONFIG_HAVE_ARCH_SOFT_DIRTY (not selected by any MIPS config)
    description: str = ""

    def bits(self, cpu_has_rixi: bool = False) -> dict[str, int]:
        """The _PAGE_* masks and shifts: the r4k `enum pgtable_bits` of pgtable-bits.h, computed.

        >>> b = DEBIAN_5KC_MALTA.bits()
        >>> hex(b["_PAGE_GLOBAL"]), b["PFN_PTE_SHIFT"]
        ('0x100', 14)
        """
        order = ["PRESENT"]
        if not self.rixi:
            order.append("NO_READ")
        order += ["WRITE", "ACCESSED", "MODIFIED"]
        if self.huge:
            order.append("HUGE")
        if self.special:
            order.append("SPECIAL")
        if self.soft_dirty:
            order.append("SOFT_DIRTY")
        if self.rixi:
            order += ["NO_EXEC", "NO_READ"]
        order += ["GLOBAL", "VALID", "DIRTY"]
        out = {f"_PAGE_{n}": 1 << i for i, n in enumerate(order)}
        cache_shift = len(order)
        if self.rixi and not cpu_has_rixi:
            out["_PAGE_NO_EXEC"] = 0  # (cpu_has_rixi ? (1 << _PAGE_NO_EXEC_SHIFT) : 0)
        out["_CACHE_SHIFT"] = cache_shift
        out["_CACHE_MASK"] = 7 << cache_shift
        out["PFN_PTE_SHIFT"] = self.page_shift - 12 + cache_shift + 3
        return out


# Configurations (pgtable-64.h's PGD_TABLE_ORDER table; Kconfig PGTABLE_LEVELS: 4 with 4K pages
# and MIPS_VA_BITS_48, 3 for 64-bit unless 64K pages without VA_BITS_48, else 2).
CONFIGS: dict[str, MipsConfig] = {
    c.name: c
    for c in (
        MipsConfig("4k", 12, 3, 1, description="4 KiB pages, 3 levels, 1024x512x512 (Debian 5kc-malta, default)"),
        MipsConfig("4k-va48", 12, 4, 0, description="4 KiB pages, 4 levels (MIPS_VA_BITS_48)"),
        MipsConfig("16k", 14, 3, 0, description="16 KiB pages, 3 levels, 2048x2048x2048 (Debian loongson-3)"),
        MipsConfig("16k-va48", 14, 3, 1, description="16 KiB pages, 3 levels, 4096-entry PGD (MIPS_VA_BITS_48)"),
        MipsConfig("64k", 16, 2, 0, description="64 KiB pages, 2 levels, 8192x8192"),
        MipsConfig("64k-va48", 16, 3, 0, description="64 KiB pages, 3 levels (MIPS_VA_BITS_48)"),
    )
}
DEBIAN_5KC_MALTA = CONFIGS["4k"]
DEFAULT_CONFIG = "4k"

# hw_classify() fault reasons
_NOT_VALID, _NOT_TABLE = 1, 2
_REASONS = {
    _NOT_VALID: "TLB invalid (EntryLo V, _PAGE_VALID, clear)",
    _NOT_TABLE: "not a table pointer (neither CKSEG0 nor XKPHYS, or _PAGE_HUGE above the PMD)",
}


class MipsMode(PagingMode):
    """A PagingMode whose root span is cut into VA windows: (offset start, offset end, VA start).

    The kernel's PGD maps XKSEG from MAP_BASE and, in its last entries, the top 4 GiB of the
    address space (CKSSEG, CKSEG3); pgd_index() ignores the bits above the span.
    """

    _fields = PagingMode._fields + ("windows",)
    _compare = PagingMode._compare + ("windows",)

    def __init__(self, *args: object, windows: tuple[tuple[int, int, int], ...] = (), **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._set(windows=windows)

    def canonical_va(self, rel: int) -> int:
        for lo, hi, va in self.windows:
            if lo <= rel < hi:
                return va + rel - lo
        return self.windows[0][2] + rel if self.windows else rel

    def table_offset(self, va: int) -> int:
        return va & ((1 << self.va_bits) - 1)

    def is_canonical(self, va: int) -> bool:
        return any(va0 <= va < va0 + (hi - lo) for lo, hi, va0 in self.windows)

    def va_windows(self) -> list[tuple[int, int]]:
        return sorted((va0, va0 + hi - lo) for lo, hi, va0 in self.windows) or super().va_windows()

    def vas_of(self, rel: np.ndarray) -> np.ndarray:
        """canonical_va() over an array of offsets."""
        rel = np.asarray(rel, dtype=U64)
        out = rel + _u(self.windows[0][2])
        for lo, hi, va in self.windows:
            inside = (rel >= _u(lo)) & (rel < _u(hi))
            with np.errstate(over="ignore"):
                out = np.where(inside, rel - _u(lo) + _u(va), out)
        return out


def kernel_windows(va_bits: int) -> tuple[tuple[int, int, int], ...]:
    """XKSEG from MAP_BASE for the span minus its top 4 GiB, which hold CKSEG0..CKSEG3."""
    span = 1 << va_bits
    return ((0, span - COMPAT_SPAN, MAP_BASE), (span - COMPAT_SPAN, span, TOP - COMPAT_SPAN))


def virt_to_phys(va: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(PA, ok) of table pointers: CKSEG0/CKSEG1 (CPHYSADDR, & 0x1fffffff) or XKPHYS (& 2^59-1);
    anything else (a mapped address) cannot be converted without a walk."""
    va = np.asarray(va, dtype=U64)
    ckseg = (va >= _u(CKSEG0)) & (va < _u(CKSSEG))
    xkphys = (va >> _u(62)) == _u(2)
    pa = np.where(ckseg, va & _u(0x1FFFFFFF), va & _u(TO_PHYS_MASK))
    return pa, ckseg | xkphys


def phys_to_virt_xkphys(pa: int) -> int:
    """The cached XKPHYS address of `pa` (CAC_BASE 0x9800000000000000: cache attribute 3)."""
    return 0x9800000000000000 | pa


_ROLES = {2: ("pmd", "pte"), 3: ("pud", "pmd", "pte"), 4: ("p4d", "pud", "pmd", "pte")}
_NAMES = {2: ("pgd", "pte"), 3: ("pgd", "pmd", "pte"), 4: ("pgd", "pud", "pmd", "pte")}
_KLEVEL = {"p4d": 1, "pud": 2, "pmd": 3, "pte": 4}


def make_mode(
    config: MipsConfig | str = DEFAULT_CONFIG,
    *,
    invalid_tables: dict[str, int] | None = None,
    cpu_has_rixi: bool = False,
    byteorder: str = "<",
    windows: tuple[tuple[int, int, int], ...] | None = None,
) -> MipsMode:
    """The mode of one kernel configuration.

    `invalid_tables` maps "pud"/"pmd"/"pte" to the VA of invalid_pud_table / invalid_pmd_table /
    invalid_pte_table: an entry pointing at the next level's invalid table is p?d_none() (0 is
    taken as none too: the kernel never writes it, and test tables start zeroed).

    >>> m = make_mode("4k")
    >>> [lvl.entries for lvl in m.levels], m.va_bits
    ([1024, 512, 512], 40)
    """
    cfg = CONFIGS[config] if isinstance(config, str) else config
    bits = cfg.bits(cpu_has_rixi)
    ps = cfg.page_shift
    per = ps - 3  # entries of a one-page table of 8-byte entries
    n = cfg.levels
    roles = _ROLES[n]
    # index bits per level, root first: PGD_TABLE_ORDER widens the root; PMD/PUD tables are a page
    idx_bits = [per + cfg.pgd_order] + [per] * (n - 1)
    shifts = []
    s = ps
    for b in reversed(idx_bits):
        shifts.append(s)
        s += b
    shifts.reverse()
    levels = tuple(
        Level(name=_NAMES[n][i], shift=shifts[i], bits=idx_bits[i], klevel=_KLEVEL[roles[i]],
              hole_depth=0 if i == 0 else _KLEVEL[roles[i]])  # real_depth(): folded levels above the root
        for i in range(n)
    )
    va_bits = shifts[0] + idx_bits[0]
    inv = invalid_tables or {}
    # an empty entry at level i points at the invalid table of the level below it
    empty = [inv.get(roles[i + 1], 0) for i in range(n - 1)]
    pfn_shift = bits["PFN_PTE_SHIFT"]
    huge = bits.get("_PAGE_HUGE", 0)
    present_bit = bits["_PAGE_PRESENT"]
    valid_bit = bits["_PAGE_VALID"]
    page_mask_low = (1 << ps) - 1
    last = n - 1

    def out_pa(e: np.ndarray) -> np.ndarray:
        return (e >> _u(pfn_shift)) << _u(ps)

    def is_leaf_capable(level: int) -> bool:
        # pmd_leaf()/pud_leaf() exist; p4d entries (4 levels) have no leaf form
        return bool(huge) and roles[level] in ("pud", "pmd")

    def classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The kernel walker's view (mm/pagewalk.c with pgtable-64.h's p?d_none/bad/leaf)."""
        e = e.astype(U64, copy=False)
        if level == last:
            return np.full(e.shape, Kind.LEAF, dtype=np.uint8), out_pa(e)
        pa, ok = virt_to_phys(e)
        kind = np.full(e.shape, Kind.TABLE, dtype=np.uint8)
        kind[~ok] = Kind.SKIP
        bad = (e & _u(page_mask_low)) != 0
        if is_leaf_capable(level):
            leaf = (e & _u(huge)) != 0
            kind[bad & ~leaf] = Kind.HOLE  # p?d_none_or_clear_bad()
            kind[leaf] = Kind.LEAF
            pa = np.where(leaf, out_pa(e) & ~_u((1 << shifts[level]) - 1), pa)
        else:
            kind[bad] = Kind.HOLE
        none = e == _u(0)
        if empty[level]:
            none |= e == _u(empty[level])
        kind[none] = Kind.HOLE
        return kind, pa

    def hw_classify(level: int, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The TLB refill handler's view (tlbex.c build_get_pmde64/build_get_ptep, then the TLB):
        pointers are followed unchecked (an empty one reaches the invalid table's zero PTEs),
        `_PAGE_HUGE` in a PMD/PUD loads a huge page, a PTE translates when EntryLo.V is set."""
        e = e.astype(U64, copy=False)
        reason = np.zeros(e.shape, dtype=U64)
        if level == last:
            leaf = np.ones(e.shape, dtype=bool)
            out = out_pa(e)
        else:
            # tlbex.c tests _PAGE_HUGE only in the PMD entry (build_is_huge_pte()); MIPS has no
            # PUD-sized pages, so a PUD entry with it is followed as a (corrupt) pointer: a fault
            flagged = (e & _u(huge)) != 0 if huge else np.zeros(e.shape, dtype=bool)
            leaf = flagged if roles[level] == "pmd" else np.zeros(e.shape, dtype=bool)
            pa, ok = virt_to_phys(e & ~_u(page_mask_low))
            out = np.where(leaf, out_pa(e) & ~_u((1 << shifts[level]) - 1), pa)
            reason[~leaf & (~ok | flagged)] = _NOT_TABLE
        kind = np.where(leaf, np.uint8(HwKind.LEAF), np.uint8(HwKind.TABLE)).astype(np.uint8)
        reason[leaf & ((e & _u(valid_bit)) == 0)] = _NOT_VALID
        kind[reason != 0] = HwKind.FAULT
        return kind, np.where(kind == HwKind.FAULT, reason, out)

    perm_bits = (bits["_PAGE_PRESENT"] | bits["_PAGE_WRITE"] | bits["_PAGE_NO_EXEC"] | bits["_PAGE_NO_READ"]
                 | bits["_PAGE_VALID"] | bits["_PAGE_DIRTY"] | bits["_PAGE_GLOBAL"])

    def perm(level: int, e: np.ndarray) -> np.ndarray:
        e = e.astype(U64, copy=False)
        if level != last and not is_leaf_capable(level):
            return np.full(e.shape, _u(perm_bits))
        return e & _u(perm_bits)

    def perm_combine(parent: np.ndarray, child: np.ndarray) -> np.ndarray:
        """No hierarchical permissions: the PTE alone is loaded into the TLB."""
        return child

    def present(level: int, e: np.ndarray) -> np.ndarray:
        """pte_present() / pmd_present() of a huge PMD: `_PAGE_PRESENT`."""
        return (np.asarray(e, dtype=U64) & _u(present_bit)) != 0

    role_of = dict(zip(_NAMES[n], roles))

    def _is_leaf_entry(level_name: str, entry: int) -> bool:
        role = role_of.get(level_name, "pte")
        return role == "pte" or bool(huge and role in ("pud", "pmd") and entry & huge)

    flags = generic_flags(bits)
    return MipsMode(
        name=f"mips64-{cfg.name}",
        arch="mips64",
        levels=levels,
        entry_bytes=8,
        byteorder=byteorder,
        va_bits=va_bits,
        canonical=False,
        pa_bits=59,
        classify=classify,
        hw_classify=hw_classify,
        perm=perm,
        perm_combine=perm_combine,
        perm_top=perm_bits,
        ptdump_key_mask=(1 << pfn_shift) - 1,
        root_align=1 << ps,
        fault_reason=lambda code: _REASONS.get(code, "fault"),
        describe=lambda level_name, entry: describe(entry, level_name, bits, _is_leaf_entry(level_name, entry)),
        extra={
            "config": cfg,
            "bits": bits,
            "invalid_tables": dict(inv),
            "present": present,
            "generic_flags": flags,
            "perm_text": lambda p: perm_text(p, bits),
            "entry_pa": lambda e: (e >> pfn_shift) << ps,
            "arch_bits": arch_bits,
        },
        windows=windows if windows is not None else kernel_windows(va_bits),
    )


def arch_bits(mode: PagingMode):
    """The analyses' ArchBits (pagewalk.analysis.mappings), imported only when an analysis runs.

    The permission word is the PTE's own bits (perm(): no hierarchical permissions), from the
    mode's configuration (pgtable-bits.h): writable is _PAGE_WRITE (the fault handler sets the
    EntryLo D bit, _PAGE_DIRTY, on the first write: PAGE_KERNEL has both), readable and
    executable unless _PAGE_NO_READ / _PAGE_NO_EXEC (RI/XI: without them, as on the 5Kc,
    _PAGE_NO_EXEC is 0 and everything is executable), global is EntryLo G (_PAGE_GLOBAL). Who
    may access is the segment's business, not the entry's (MIPS64 PRA §4.3: XKSEG, CKSSEG and
    XKPHYS are kernel-only): no user bit. A valid entry is EntryLo V (_PAGE_VALID) in a leaf;
    a table pointer is valid unless it is p?d_none(): 0 or the next level's invalid_*_table,
    which the refill handler follows to PTEs that are all invalid (pgtable-64.h). _PAGE_ACCESSED
    and _PAGE_MODIFIED are status.
    """
    from ..analysis.mappings import NEVER, ArchBits, Bit

    b = mode.extra["bits"]
    n = len(mode.levels)
    roles = _ROLES[n]
    inv = mode.extra["invalid_tables"]
    huge = b.get("_PAGE_HUGE", 0)

    def pointer_valid(empty: int):
        def valid(e: np.ndarray) -> np.ndarray:
            e = np.asarray(e, dtype=U64)
            ok = (e != _u(0)) & (e != _u(empty))
            if huge:  # a huge PMD is a leaf: EntryLo V decides
                ok = np.where((e & _u(huge)) != 0, (e & _u(b["_PAGE_VALID"])) != 0, ok)
            return ok

        return valid

    return ArchBits(
        valid=Bit(b["_PAGE_VALID"], b["_PAGE_VALID"],
                  at=tuple((i, pointer_valid(inv.get(roles[i + 1], 0))) for i in range(n - 1))),
        user=NEVER,
        read=Bit(b["_PAGE_NO_READ"] if b["_PAGE_NO_EXEC"] else 0, 0),  # _PAGE_NO_READ counts only with RI/XI
        write=Bit(b["_PAGE_WRITE"], b["_PAGE_WRITE"]),
        kexec=Bit(b["_PAGE_NO_EXEC"], 0),
        uexec=NEVER,
        glob=Bit(b["_PAGE_GLOBAL"], b["_PAGE_GLOBAL"]),
        status_mask=b["_PAGE_ACCESSED"] | b["_PAGE_MODIFIED"],
        memtype_mask=b["_CACHE_MASK"],
    )


def generic_flags(bits: dict[str, int]) -> list[tuple[str, int]]:
    """(name, mask) of the PTE bits in the order of pgtable-bits.h's enum; the cache attribute
    is a field (CCA=n)."""
    names = ["PRESENT", "NO_READ", "WRITE", "ACCESSED", "MODIFIED", "HUGE", "SPECIAL", "SOFT_DIRTY",
             "NO_EXEC", "GLOBAL", "VALID", "DIRTY"]
    out = [(n, bits[f"_PAGE_{n}"]) for n in names if bits.get(f"_PAGE_{n}")]
    out.sort(key=lambda x: x[1])
    out.append(("CCA", bits["_CACHE_MASK"]))
    return out


def describe(entry: int, level_name: str, bits: dict[str, int], leaf: bool) -> str:
    """Decoded bits of one entry for `translate`: a pointer's table, or a PTE's flags."""
    if not leaf:
        pa, ok = virt_to_phys(np.array([entry], dtype=U64))
        return f"table at VA {entry:#x}" + (f" (PA {int(pa[0]):#x})" if ok[0] else " (not in an unmapped segment)")
    out = [n for n, m in generic_flags(bits)[:-1] if entry & m]
    out.append(f"CCA={(entry & bits['_CACHE_MASK']) >> bits['_CACHE_SHIFT']}")
    return " ".join(out)


def perm_text(perm: int, bits: dict[str, int]) -> str:
    """The PTE's access rights for `translate`'s summary line, e.g. "kernel rw-" (global)."""
    r = "-" if perm & bits["_PAGE_NO_READ"] else "r"
    w = "w" if perm & bits["_PAGE_WRITE"] else "-"
    x = "-" if perm & bits["_PAGE_NO_EXEC"] else "x"
    return ("global " if perm & bits["_PAGE_GLOBAL"] else "") + r + w + x


def config_help() -> str:
    """One line per configuration, for error messages and --kernel-config help."""
    return "; ".join(f"{c.name}: {c.description}" for c in CONFIGS.values())


def decode_ptes(mode: MipsMode, entries: np.ndarray) -> dict[str, np.ndarray]:
    """The kernel's pte_* helpers over an array of PTEs: pfn (pte_pfn()), present, write,
    dirty (pte_dirty(): _PAGE_MODIFIED), young (_PAGE_ACCESSED), global, noexec and noread (RI/XI
    only when the CPU has them: `_PAGE_NO_EXEC && …`, `cpu_has_rixi && …`), cache (_CACHE_MASK).

    >>> d = decode_ptes(make_mode("4k"), np.array([0x68d170f], dtype=np.uint64))
    >>> int(d["pfn"][0]), bool(d["present"][0]), int(d["cache"][0])
    (6708, True, 4096)
    """
    b = mode.extra["bits"]
    e = np.asarray(entries, dtype=U64)

    def has(name: str) -> np.ndarray:
        return (e & _u(b[name])) != 0

    rixi = b["_PAGE_NO_EXEC"] != 0
    return {
        "pfn": e >> _u(b["PFN_PTE_SHIFT"]),
        "present": has("_PAGE_PRESENT"),
        "write": has("_PAGE_WRITE"),
        "dirty": has("_PAGE_MODIFIED"),
        "young": has("_PAGE_ACCESSED"),
        "global": has("_PAGE_GLOBAL"),
        "noexec": has("_PAGE_NO_EXEC") if rixi else np.zeros(e.shape, bool),
        "noread": has("_PAGE_NO_READ") if rixi else np.zeros(e.shape, bool),
        "cache": e & _u(b["_CACHE_MASK"]),
    }
