"""The sparc64 Linux kernel: swapper_pg_dir in the generic dump format (no kernel ptdump).

sparc64 has no ptdump and no page-table base register (TLB misses are served from the TSB and
the kernel's software walk, arch/sparc/include/asm/tsb.h), so the root is `--reg pgd=PA` (the
physical address of swapper_pg_dir or of a process's PGD; `--reg pgd=VA --define kern_base=PA`
for swapper_pg_dir's kernel-image address: PA = VA - KERNBASE (0x400000) + kern_base). The TTE
layout is `--kernel-config sun4v` (default) or `sun4u`. The dump covers the kernel's ranges of
arch/sparc/include/asm/pgtable_64.h and mm/init_64.c setup_page_offset(): modules
(0x10000000-0xf0000000), vmalloc (from 0x100000000 to VMALLOC_END) and vmemmap (to the bottom
of the VA hole), VMALLOC_END = 3/4 of `sparc64_va_hole_bottom` (default 0x0000800000000000, the
48-bit T1-T3 value; `--define sparc64_va_hole_bottom=…` for others). Verified only against
tables built from those headers: there is no sparc64 guest in the oracle.
"""

from __future__ import annotations

from typing import TextIO

from ..arch import sparc64
from ..errors import RootError, UsageError
from ..memory.base import MappedMemory
from ..ptdump import generic
from ..runs import root_runs
from ..target import Target, check_root
from . import WxResult

LAYOUT_SYMBOLS = ("swapper_pg_dir",)
KERNBASE = 0x400000
MODULES_VADDR, MODULES_END, VMALLOC_START = 0x10000000, 0xF0000000, 0x100000000
DEFAULT_HOLE_BOTTOM = 0x0000800000000000
_DEFINES = {"kern_base", "sparc64_va_hole_bottom"}


def resolve(
    mem: MappedMemory, regs: dict[str, int], kallsyms: dict[str, int], defines: dict[str, int], options: dict
) -> Target:
    """TTE layout from --kernel-config, root from --reg pgd=PA (or a kernel VA with kern_base)."""
    for name in defines:
        if name not in _DEFINES:
            raise UsageError(f"--define {name}: unknown for sparc64 (known: {', '.join(sorted(_DEFINES))})")
    name = options.get("kernel_config") or sparc64.DEFAULT_CONFIG
    if name not in sparc64.CONFIGS:
        raise UsageError(f"--kernel-config {name!r}: unknown for sparc64 (known: {sparc64.config_help()})")
    mode = sparc64.make_mode(name)
    va = regs.get("pgd", kallsyms.get("swapper_pg_dir"))
    if va is None:
        raise RootError("no page-table root: sparc64 has no page-table base register; pass --reg pgd=PA "
                        "(the physical address of swapper_pg_dir)")
    if va >= KERNBASE and "pgd" not in regs or va >> 43:
        if "kern_base" not in defines:
            raise RootError(f"pgd {va:#x} is a kernel virtual address: give its physical address, or "
                            "--define kern_base=PA (where the kernel image starts)")
        va = va - KERNBASE + defines["kern_base"]
    root = check_root(mem, mode, va, "pgd")
    bottom = defines.get("sparc64_va_hole_bottom", DEFAULT_HOLE_BOTTOM)
    vmalloc_end = (bottom >> 1) + (bottom >> 2)
    layout = {"sections": [(MODULES_VADDR, MODULES_END, "modules"), (VMALLOC_START, vmalloc_end, "vmalloc"),
                           (vmalloc_end, bottom, "vmemmap")], "config": name}
    return Target(mem, mode, {"kernel": root}, layout, [], False, None, {})


def dump(target: Target, view: str, out: TextIO, fmt: str = "text") -> int:
    """The generic dump of the kernel's tables over modules, vmalloc and vmemmap."""
    return generic.dump(target.mem, target.mode, target.root(view), out, fmt, view=view,
                        sections=target.layout["sections"])


def checkwx(target: Target) -> WxResult:
    """Present pages both writable (hardware W) and executable (EXEC): pagewalk's own verdict."""
    tte = target.mode.extra["config"]
    lines = generic.lines_of(target.mode, root_runs(target.mem, target.mode, target.root("kernel")),
                             target.layout["sections"])
    wx = [(ln.start, ln.end) for ln in lines if not ln.missing and ln.entry & tte.write and ln.entry & tte.exec_]
    pages = sum((e - s) >> sparc64.PAGE_SHIFT for s, e in wx)
    msg = "sparc64 has no kernel W+X check; pagewalk: " + (
        f"{pages} writable and executable pages" if pages else "no writable and executable pages")
    return WxResult(pages, wx, [msg])
