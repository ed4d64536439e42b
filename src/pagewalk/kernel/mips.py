"""The mips64 Linux kernel: init_mm's page tables (swapper_pg_dir) in the generic dump format.

MIPS has no ptdump (no ARCH_HAS_PTDUMP), no page-table base register (the TLB is refilled by
software: the kernel keeps the current PGD in `pgd_current[]` or a KScratch register, see
arch/mips/mm/tlbex.c) and no W+X check, so:

* the root is `--reg pgd=ADDR` (a CKSEG0/XKPHYS kernel address of the PGD, as in init_mm.pgd or
  pgd_current[cpu], or its physical address), else `swapper_pg_dir` from `--kallsyms`;
* empty entries point at `invalid_pmd_table` / `invalid_pte_table` (/ `invalid_pud_table` with
  4 levels): from `--define invalid_pmd_table=VA …`, `--kallsyms`, or detected in the image (the
  value most PGD entries hold whose table repeats one value down to a zero-filled table);
* the configuration (page size, levels, PTE bits) is `--kernel-config` (arch.mips.CONFIGS;
  default "4k", Debian's 5kc-malta); `--define cpu_has_rixi=1` for a CPU with RI/XI;
* the dump is ptdump.generic's text over the kernel's mapped ranges: vmalloc (XKSEG),
  modules (CKSSEG) and the fixmap, with the Debian 5kc-malta 6.1 bounds by default
  (`--define VMALLOC_END=… FIXADDR_START=… FIXADDR_TOP=…` for others);
* `checkwx` is pagewalk's own verdict (MIPS has no W+X check): writable present PTEs without
  _PAGE_NO_EXEC when the CPU has RI/XI (`--define cpu_has_rixi=1`); skipped without them.
"""

from __future__ import annotations

from collections import Counter
from typing import TextIO

import numpy as np

from ..arch import mips
from ..errors import RootError, UsageError
from ..memory.base import MappedMemory
from ..ptdump import generic
from ..runs import root_runs
from ..target import Target, check_root
from . import WxResult

LAYOUT_SYMBOLS = ("swapper_pg_dir", "invalid_pmd_table", "invalid_pte_table", "invalid_pud_table")

# Debian 5kc-malta 6.1 (asm/mach-generic/spaces.h FIXADDR_TOP 0xfffe0000 sign-extended;
# FIXADDR_START from the oracle module's header of that kernel)
DEFAULT_FIXADDR_TOP = 0xFFFFFFFFFFFE0000
DEFAULT_FIXADDR_START = 0xFFFFFFFFFFFCF000
_DEFINES = {"VMALLOC_END", "FIXADDR_START", "FIXADDR_TOP", "invalid_pud_table", "invalid_pmd_table",
            "invalid_pte_table", "cpu_has_rixi"}


def _config(options: dict) -> mips.MipsConfig:
    name = options.get("kernel_config") or mips.DEFAULT_CONFIG
    if name not in mips.CONFIGS:
        raise UsageError(f"--kernel-config {name!r}: unknown for mips64 (known: {mips.config_help()})")
    return mips.CONFIGS[name]


def _root_pa(value: int) -> int:
    pa, ok = mips.virt_to_phys(np.array([value], dtype=np.uint64))
    if ok[0]:
        return int(pa[0])
    if value >> 48:
        raise RootError(f"pgd {value:#x} is neither a CKSEG0/XKPHYS kernel address nor a physical address")
    return value


def _detect_invalid(mem: MappedMemory, mode: mips.MipsMode, root: int, roles: tuple[str, ...]) -> dict[str, int]:
    """invalid_*_table VAs from the image: the value most root entries hold, then, level by level,
    the one value its table repeats (pgd_init()/pmd_init() fill them so) down to a zero-filled
    PTE table. Where an invalid table is not in the image (a minimised core), the value most
    entries of the real tables of that level hold stands in for it."""
    lvl0 = mode.levels[0]
    ent = np.frombuffer(mem.read(root, lvl0.entries * 8), dtype=mode.dtype).astype(np.uint64)
    value, count = Counter(ent.tolist()).most_common(1)[0]
    if count * 2 < lvl0.entries:
        return {}
    found: dict[str, int] = {}
    tables = ent  # the entries of the current level's real tables
    for i in range(1, len(mode.levels)):
        found[roles[i]] = value
        if i == len(mode.levels) - 1:
            break
        pa, ok = mips.virt_to_phys(np.array([value], dtype=np.uint64))
        size = mode.levels[i].entries * 8
        real = tables[tables != np.uint64(value)]
        real_pa, real_ok = mips.virt_to_phys(real)
        real_pa = [p for p in real_pa[real_ok].tolist() if mem.contains(p, size)]
        tables = (np.concatenate([np.frombuffer(mem.read(p, size), dtype=mode.dtype) for p in real_pa])
                  .astype(np.uint64) if real_pa else np.zeros(0, np.uint64))
        if ok[0] and mem.contains(int(pa[0]), size):
            table = np.frombuffer(mem.read(int(pa[0]), size), dtype=mode.dtype)
            if not (table == table[0]).all():
                return {}
            value = int(table[0])
        elif len(tables):
            value, count = Counter(tables.tolist()).most_common(1)[0]
            if count * 2 < len(tables):
                return {}
        else:
            return found
    pa, ok = mips.virt_to_phys(np.array([value], dtype=np.uint64))
    last = mode.levels[-1].entries * 8
    if ok[0] and mem.contains(int(pa[0]), last) and any(mem.read(int(pa[0]), last)):
        return {}  # invalid_pte_table is all zeros
    return found if ok[0] else {}


def _find_swapper(mem: MappedMemory, mode: mips.MipsMode) -> int | None:
    """PA of swapper_pg_dir found by scanning: the PGD-aligned tables whose entries (sampled away
    from vmalloc's first and the modules' last entries, then all but a few) hold one CKSEG0
    address whose table repeats one value down to a zero-filled table; of those, the one nearest
    to that table (pgd_init() fills it with invalid_pmd_table, both in the kernel image's bss;
    process PGDs point at the same table but live in allocated pages)."""
    lvl0 = mode.levels[0]
    size = lvl0.entries * 8
    sample = np.linspace(8, lvl0.entries - 9, 12).astype(np.uint64) * np.uint64(8)
    best: tuple[int, int] | None = None
    for start, end in mem.runs():
        first = -(-start // size) * size
        pas = np.arange(first, end - size + 1, size, dtype=np.uint64)
        if not len(pas):
            continue
        vals, have = mem.gather((pas[:, None] + sample[None, :]).reshape(-1), mode.dtype)
        vals = vals.astype(np.uint64).reshape(len(pas), -1)
        have = have.reshape(len(pas), -1).all(axis=1)
        v0 = vals[:, 0]
        same = have & (vals == v0[:, None]).all(axis=1) & ((v0 >> np.uint64(32)) == np.uint64(0xFFFFFFFF))
        same &= (v0 & np.uint64(0xFFF)) == 0
        for pa in pas[same].tolist():
            ent = np.frombuffer(mem.read(pa, size), dtype=mode.dtype)
            value, count = Counter(ent.tolist()).most_common(1)[0]
            if count * 4 < lvl0.entries * 3:
                continue
            roles = mips._ROLES[len(mode.levels)]
            if not _detect_invalid(mem, mode, pa, roles):
                continue
            dist = abs(pa - int(mips.virt_to_phys(np.array([value], np.uint64))[0][0]))
            if best is None or dist < best[0]:
                best = (dist, pa)
    return None if best is None else best[1]


def resolve(
    mem: MappedMemory, regs: dict[str, int], kallsyms: dict[str, int], defines: dict[str, int], options: dict
) -> Target:
    """Mode from --kernel-config, root from --reg pgd= or swapper_pg_dir, empty-table addresses."""
    notes: list[str] = []
    for name in defines:
        if name not in _DEFINES:
            raise UsageError(f"--define {name}: unknown for mips64 (known: {', '.join(sorted(_DEFINES))})")
    cfg = _config(options)
    byteorder = "<" if getattr(mem, "little_endian", True) else ">"
    rixi = bool(defines.get("cpu_has_rixi", 0))
    probe = mips.make_mode(cfg, cpu_has_rixi=rixi, byteorder=byteorder)
    if "pgd" in regs:
        root = _root_pa(regs["pgd"])
        what = "--reg pgd"
    elif "swapper_pg_dir" in kallsyms:
        root = _root_pa(kallsyms["swapper_pg_dir"])
        what = "swapper_pg_dir"
    else:
        root = _find_swapper(mem, probe)
        if root is None:
            raise RootError(
                "no page-table root: MIPS has no page-table base register; pass --reg pgd=ADDR (init_mm.pgd, "
                "e.g. swapper_pg_dir's address from System.map, or its physical address) or --kallsyms"
            )
        what = "swapper_pg_dir (found by scanning)"
        notes.append(f"no --reg pgd or --kallsyms: swapper_pg_dir guessed at PA {root:#x} by scanning the image "
                     "(a PGD of invalid_pmd_table pointers next to that table, in the kernel's bss)")
    root = check_root(mem, probe, root, what)
    roles = mips._ROLES[cfg.levels]
    invalid = {}
    for role in roles[1:]:
        name = f"invalid_{role}_table"
        if name in defines:
            invalid[role] = defines[name]
        elif name in kallsyms:
            invalid[role] = kallsyms[name]
    if len(invalid) < len(roles) - 1:
        found = _detect_invalid(mem, probe, root, roles)
        for role, va in found.items():
            invalid.setdefault(role, va)
        if found:
            notes.append("empty-entry tables detected in the image: " + ", ".join(
                f"invalid_{r}_table={v:#x}" for r, v in found.items()))
        else:
            notes.append("could not detect invalid_*_table (give --kallsyms or --define invalid_pmd_table=…): "
                         "entries pointing at them are walked as tables (their PTEs are all empty)")
    mode = mips.make_mode(cfg, invalid_tables=invalid, cpu_has_rixi=rixi, byteorder=byteorder)
    span = 1 << mode.va_bits
    page = 1 << cfg.page_shift
    fix_start = defines.get("FIXADDR_START", DEFAULT_FIXADDR_START)
    fix_top = defines.get("FIXADDR_TOP", DEFAULT_FIXADDR_TOP)
    vmalloc_end = defines.get("VMALLOC_END", mips.MAP_BASE + span - mips.COMPAT_SPAN)
    layout = {
        "sections": [
            (mips.MAP_BASE + 2 * page, vmalloc_end, "vmalloc"),  # VMALLOC_START = MAP_BASE + 2 * PAGE_SIZE
            (mips.CKSSEG, fix_start, "modules"),  # MODULES_VADDR = CKSSEG (KBUILD_64BIT_SYM32)
            (fix_start, fix_top, "fixmap"),
        ],
        "invalid_tables": invalid,
        "config": cfg.name,
    }
    return Target(mem, mode, {"kernel": root}, layout, notes, False, None, {})


def dump(target: Target, view: str, out: TextIO, fmt: str = "text") -> int:
    """The generic dump of init_mm's tables over vmalloc, modules and fixmap."""
    return generic.dump(target.mem, target.mode, target.root(view), out, fmt, view=view,
                        sections=target.layout["sections"])


def checkwx(target: Target) -> WxResult:
    """Writable and executable present pages: pagewalk's verdict (MIPS has no kernel W+X check).

    Without RI/XI (`cpu_has_rixi` 0, as on the 5KEc) every mapped page is executable and nothing
    can be checked; like the x86 kernel without NX, the check is skipped and passes with a note.
    """
    bits = target.mode.extra["bits"]
    if not bits["_PAGE_NO_EXEC"]:
        msg = ("mips has no kernel W+X check, and without RI/XI (cpu_has_rixi=0; "
               "--define cpu_has_rixi=1 if the CPU has it) every page is executable: skipped")
        return WxResult(0, [], [msg])
    runs = root_runs(target.mem, target.mode, target.root("kernel"))
    lines = generic.lines_of(target.mode, runs, target.layout["sections"])
    page = 1 << target.mode.extra["config"].page_shift
    wx = [(ln.start, ln.end) for ln in lines
          if not ln.missing and ln.entry & bits["_PAGE_WRITE"] and not ln.entry & bits["_PAGE_NO_EXEC"]]
    pages = sum((e - s) // page for s, e in wx)
    msg = "mips has no kernel W+X check; pagewalk: " + (
        f"{pages} writable and executable pages" if pages else "no writable and executable pages")
    return WxResult(pages, wx, [msg])
