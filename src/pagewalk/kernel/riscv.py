"""The riscv Linux kernel (riscv64 Sv39/Sv48/Sv57, riscv32 Sv32): root from satp, swapper_pg_dir
through kallsyms, layout, ptdump (debugfs kernel_page_tables) and the W+X check.

Mirrors arch/riscv/mm/ptdump.c of v6.12. Views: `kernel` (init_mm's swapper_pg_dir when
`--kallsyms` gives its VA, translated through satp's tables; else satp's table, whose kernel half
is the same) and `current_kernel` (satp's table). Debian's riscv64 kernels are built with
CONFIG_DEBUG_WX=n, so they print no W+X verdict of their own; `checkwx` runs the kernel's
ptdump_check_wx() logic anyway.
"""

from __future__ import annotations

from typing import TextIO

from ..arch import riscv
from ..errors import RootError, UsageError
from ..memory.base import MappedMemory
from ..ptdump.core import drive, entry_reader
from ..ptdump.riscv import Layout, RiscvState
from ..runs import iter_runs
from ..target import Target, check_root
from . import WxResult, write_json_dump

# kernel variables the layout is read from; `extract` keeps their pages
LAYOUT_SYMBOLS = ("kernel_map",)

_DEFINES = {
    "PAGE_OFFSET": "page_offset",
    "KERNEL_VIRT_ADDR": "kernel_virt",  # kernel_map.virt_addr
    "MODULES_VADDR": "modules_vaddr",
    "STRUCT_PAGE_MAX_SHIFT": "struct_page_shift",
    "KASAN_SHADOW_START": "kasan_start",
    "KASAN_SHADOW_END": "kasan_end",
    "CONFIG_SPARSEMEM_VMEMMAP": "vmemmap",
}


def _xlen(mem: MappedMemory, satp: int, options: dict[str, str]) -> int:
    arch = options.get("arch") or mem.cpu.arch
    if arch == "riscv32":
        return 32
    if arch == "riscv64":
        return 64
    # a raw image: an RV32 satp fits in 32 bits with MODE (bit 31) set
    return 32 if satp >> 32 == 0 and satp >> 31 else 64


def resolve(
    mem: MappedMemory, regs: dict[str, int], kallsyms: dict[str, int], defines: dict[str, int], options: dict[str, str]
) -> Target:
    """Paging mode and roots from satp (--reg satp=...), swapper_pg_dir from kallsyms, layout."""
    from ..translate import translate

    notes: list[str] = []
    satp = regs.get("satp")
    if satp is None:
        raise RootError(
            "no page-table root: riscv images carry no satp; pass --reg satp=0x... "
            "(QEMU: `info registers`; MODE bits 63:60, 8 Sv39, 9 Sv48, 10 Sv57)"
        )
    xlen = _xlen(mem, satp, options)
    try:
        mode, asid, root = riscv.decode_satp(satp, xlen)
    except ValueError as e:
        raise RootError(str(e)) from None
    if mode is None:
        raise RootError(f"satp {satp:#x}: MODE is Bare (no translation, no page tables)")
    roots: dict[str, int] = {"current_kernel": check_root(mem, mode, root, f"satp (ASID {asid})")}
    sym = kallsyms.get("swapper_pg_dir")
    if sym is not None:
        t = translate(mem, mode, root, sym)
        if t.ok:
            roots["kernel"] = check_root(mem, mode, t.pa, "swapper_pg_dir")
        else:
            notes.append(f"swapper_pg_dir {sym:#x} does not translate through satp's tables ({t.fault})")
    if "kernel" not in roots:
        roots["kernel"] = roots["current_kernel"]
        notes.append(
            "no swapper_pg_dir (give --kallsyms): dumping satp's table (the current process's; "
            "its kernel half is shared with swapper_pg_dir)"
        )
    layout = _layout(mem, mode, roots["kernel"], kallsyms, defines, notes)
    return Target(mem, mode, roots, layout, notes, False, None, {})


def _layout(mem, mode, root: int, kallsyms: dict[str, int], defines: dict[str, int], notes: list[str]) -> Layout:
    from ..translate import translate

    layout = Layout(va_bits=mode.va_bits)
    if mode.va_bits != 32:
        km = kallsyms.get("kernel_map")
        if km is not None:
            # struct kernel_mapping { page_offset; virt_addr; ... } (asm/page.h)
            t = translate(mem, mode, root, km)
            if t.ok and mem.contains(t.pa, 16):
                layout.page_offset = mem.read_u64(t.pa)
                layout.kernel_virt = mem.read_u64(t.pa + 8)
                layout.known |= {"page_offset", "kernel_virt"}
        end = kallsyms.get("_end")
        if end is not None:
            layout.modules_vaddr = ((end + 4095) & ~4095) - (1 << 31)  # PFN_ALIGN(&_end) - SZ_2G
            layout.known.add("modules_vaddr")
        elif "MODULES_VADDR" not in defines:
            notes.append(
                "no _end in --kallsyms: the Modules/BPF marker is placed at MODULES_LOWEST_VADDR "
                "(give --define MODULES_VADDR=... for the exact one)"
            )
    for name, value in defines.items():
        attr = _DEFINES.get(name)
        if attr is None:
            raise UsageError(f"--define {name}: unknown for riscv (known: {', '.join(sorted(_DEFINES))})")
        setattr(layout, attr, bool(value) if attr == "vmemmap" else value)
        layout.known.add(attr)
    return layout


def dump(target: Target, view: str, out: TextIO, fmt: str = "text") -> int:
    """Write the kernel's kernel_page_tables text of `view` to `out`; returns the lines written.

    >>> dump(resolve(open_image("core.elf"), regs={"satp": 0xa000100000082e2c}), "kernel", sys.stdout)  # doctest: +SKIP
    """
    root = target.root(view)
    runs = iter_runs(target.mem, target.mode, root)  # streamed, one drive() per call
    reader = entry_reader(target.mem, target.mode, root)
    records: list[dict] | None = [] if fmt == "json" else None
    st = RiscvState(target.layout, out if records is None else None, entry_at=reader, records=records)
    drive(st, target.mode, runs, target.layout.ranges())
    return st.lines if records is None else write_json_dump(out, target.mode, view, root, records)


def checkwx(target: Target) -> WxResult:
    """ptdump_check_wx() of arch/riscv/mm/ptdump.c on the kernel view, with its messages.

    The kernel WARNs once, at the first W+X run ("%p/%pS": a hashed pointer and a symbol; here
    the address twice), then prints the verdict.
    """
    runs = iter_runs(target.mem, target.mode, target.root("kernel"))
    st = RiscvState(target.layout, None, check_wx=True)
    drive(st, target.mode, runs, target.layout.ranges())
    lines = []
    if st.wx_ranges:
        a = st.wx_ranges[0][0]
        lines.append(f"riscv/mm: Found insecure W+X mapping at address {a:#x}/{a:#x}")
    if st.wx_pages:
        lines.append(f"Checked W+X mappings: failed, {st.wx_pages} W+X pages found")
    else:
        lines.append("Checked W+X mappings: passed, no W+X pages found")
    return WxResult(st.wx_pages, st.wx_ranges, lines)
