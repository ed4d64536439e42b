"""The ARC Linux kernel: swapper_pg_dir (or a process's PGD) in the generic dump format.

ARC has no ptdump. The PGD of the current task is in the MMU's scratch register (ARCv2:
`ARC_REG_SCRATCH_DATA0`, written by switch_mm(), arch/arc/include/asm/mmu-arcv2.h), so the root is
`--reg scratch_data0=ADDR` or `--reg pgd=ADDR` (kernel addresses equal physical ones: __pa() is
the identity), else `swapper_pg_dir` from `--kallsyms`. The layout is `--kernel-config` (default
"8k": ARCv2 defconfig, 2 levels). Sections (asm/processor.h, highmem.h): user (below TASK_SIZE
0x60000000), vmalloc (0x70000000 to VMALLOC_END = 0x70000000 + 256 MiB - 4 PMD_SIZE) and
pkmap/fixmap (VMALLOC_END to PAGE_OFFSET 0x80000000). Verified only against tables built from the
headers: there is no ARC guest in the oracle.
"""

from __future__ import annotations

from typing import TextIO

from ..arch import arc
from ..errors import RootError, UsageError
from ..memory.base import MappedMemory
from ..ptdump import generic
from ..runs import root_runs
from ..target import Target, check_root
from . import WxResult

LAYOUT_SYMBOLS = ("swapper_pg_dir",)
TASK_SIZE = 0x60000000
KVADDR_SIZE = 256 << 20  # CONFIG_ARC_KVADDR_SIZE default


def resolve(
    mem: MappedMemory, regs: dict[str, int], kallsyms: dict[str, int], defines: dict[str, int], options: dict
) -> Target:
    """Mode from --kernel-config; root from --reg pgd/scratch_data0 or swapper_pg_dir."""
    for name in defines:
        if name != "ARC_KVADDR_SIZE":
            raise UsageError(f"--define {name}: unknown for arc (known: ARC_KVADDR_SIZE, in MiB)")
    name = options.get("kernel_config") or arc.DEFAULT_CONFIG
    if name not in arc.CONFIGS:
        raise UsageError(f"--kernel-config {name!r}: unknown for arc (known: {arc.config_help()})")
    mode = arc.make_mode(name, "<" if getattr(mem, "little_endian", True) else ">")
    root = regs.get("pgd", regs.get("scratch_data0", kallsyms.get("swapper_pg_dir")))
    if root is None:
        raise RootError("no page-table root: pass --reg scratch_data0=ADDR (ARCv2 MMU scratch register: the "
                        "current PGD) or --reg pgd=ADDR, or --kallsyms with swapper_pg_dir")
    root = check_root(mem, mode, root & 0xFFFFFFFF, "pgd")
    vstart = arc.PAGE_OFFSET - (defines.get("ARC_KVADDR_SIZE", KVADDR_SIZE >> 20) << 20)
    pmd_span = next(lvl.entry_span for lvl in mode.levels if lvl.klevel == 3)
    vend = vstart + (defines.get("ARC_KVADDR_SIZE", KVADDR_SIZE >> 20) << 20) - 4 * pmd_span
    layout = {"sections": [(0, TASK_SIZE, "user"), (vstart, vend, "vmalloc"), (vend, arc.PAGE_OFFSET, "pkmap/fixmap")],
              "config": name}
    return Target(mem, mode, {"kernel": root}, layout, [], False, None, {})


def dump(target: Target, view: str, out: TextIO, fmt: str = "text") -> int:
    """The generic dump (32-bit addresses) over user, vmalloc and pkmap/fixmap."""
    return generic.dump(target.mem, target.mode, target.root(view), out, fmt, view=view,
                        sections=target.layout["sections"], va_bits=32)


def checkwx(target: Target) -> WxResult:
    """Present pages with both WRITE and EXECUTE: pagewalk's own verdict (ARC has no W+X check)."""
    lines = generic.lines_of(target.mode, root_runs(target.mem, target.mode, target.root("kernel")),
                             target.layout["sections"])
    wx = [(ln.start, ln.end) for ln in lines
          if not ln.missing and ln.entry & arc._PAGE_WRITE and ln.entry & arc._PAGE_EXECUTE]
    page = 1 << target.mode.extra["config"].page_shift
    pages = sum((e - s) // page for s, e in wx)
    msg = "arc has no kernel W+X check; pagewalk: " + (
        f"{pages} writable and executable pages" if pages else "no writable and executable pages")
    return WxResult(pages, wx, [msg])
