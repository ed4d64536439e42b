"""The x86-64 Linux kernel: roots from CR3/CR4 and VMCOREINFO, layout (KASLR), ptdump, W+X.

Mirrors arch/x86/mm/dump_pagetables.c and debug_pagetables.c (debugfs page_tables/kernel,
current_kernel, current_user) of v6.12.
"""

from __future__ import annotations

import json
from typing import TextIO

import numpy as np

from ..arch import x86
from ..errors import PagewalkError, RootError, UsageError
from ..memory.base import MappedMemory
from ..memory.notes import vmcoreinfo_int
from ..mode import PagingMode
from ..ptdump.x86 import Layout, format_fast
from ..runs import root_runs
from ..target import Target, check_root
from . import JSON_SCHEMA_VERSION, WxResult

START_KERNEL_MAP = 0xFFFFFFFF80000000  # __START_KERNEL_map


def resolve(
    mem: MappedMemory, regs: dict[str, int], kallsyms: dict[str, int], defines: dict[str, int], options: dict[str, str]
) -> Target:
    """Roots, paging mode and layout of an x86-64 Linux image (CR3/CR4, VMCOREINFO, --reg)."""
    pti = options.get("pti", "auto")
    notes: list[str] = []
    vi = mem.cpu.vmcoreinfo
    cr3, cr4 = regs.get("cr3"), regs.get("cr4")
    if cr4 is not None:
        l5 = bool(cr4 & x86.CR4_LA57)
    elif "NUMBER(pgtable_l5_enabled)" in vi:
        l5 = vi["NUMBER(pgtable_l5_enabled)"] == "1"
    else:
        l5 = False
        notes.append("no CR4 (--reg cr4=...) and no VMCOREINFO: assuming 4-level paging")
    mode = x86.X86_64_5LEVEL if l5 else x86.X86_64_4LEVEL
    roots: dict[str, int] = {}
    unavailable: dict[str, str] = {}
    sym = vmcoreinfo_int(vi, "SYMBOL(init_top_pgt)")
    phys_base = vmcoreinfo_int(vi, "NUMBER(phys_base)")
    if sym is not None and phys_base is not None:
        phys_base &= (1 << 64) - 1  # negative with KASLR
        kernel = (sym - START_KERNEL_MAP + phys_base) & ((1 << 64) - 1)
        roots["kernel"] = check_root(mem, mode, kernel, "init_top_pgt (VMCOREINFO)")
    if pti == "on":
        is_pti = True
    elif pti == "off":
        is_pti = False
    else:
        probe = roots.get("kernel")
        if probe is None and cr3 is not None:
            probe = x86.root_from_cr3(cr3) & ~x86.CR3_PTI_USER
        is_pti = probe is not None and _looks_like_pti(mem, mode, probe)
    if cr3 is not None:
        cur = x86.root_from_cr3(cr3)
        if is_pti:
            # with PTI, CR3 bit 12 selects the user copy; the kernel's PGD is the page below it
            cur &= ~x86.CR3_PTI_USER
        try:
            roots["current_kernel"] = check_root(mem, mode, cur, "CR3")
        except RootError as e:
            if "kernel" not in roots:
                raise
            unavailable["current_kernel"] = unavailable["current_user"] = str(e)
        if "kernel" not in roots:
            roots["kernel"] = roots["current_kernel"]
            notes.append(
                "no VMCOREINFO init_top_pgt: dumping CR3's table (the current process's; its kernel half is the kernel's)"
            )
    if not roots:
        raise RootError("no page-table root: the image has no CR3 note or VMCOREINFO; pass --reg cr3=0x... --reg cr4=0x...")
    # PTI: the user copy of a PGD is the page after it (kernel_to_user_pgdp()).
    base = roots.get("current_kernel", roots["kernel"])
    if is_pti:
        user = base + 4096
        if mem.contains(user, 4096):
            roots["current_user"] = user
            roots["kernel_user"] = roots["kernel"] + 4096
    elif "current_kernel" in roots:
        roots["current_user"] = roots["current_kernel"]
    layout = _x86_layout(mem, mode, roots["kernel"], l5, kallsyms, defines, notes)
    version = vi.get("OSRELEASE")
    return Target(mem, mode, roots, layout, notes, is_pti, version, unavailable)


def _looks_like_pti(mem: MappedMemory, mode: PagingMode, kernel_root: int) -> bool:
    """PTI's user PGD (the page after the kernel's) maps the CPU entry area but not the direct map."""
    top = mode.levels[0]
    cea = (1 << 64) - (4 << 39)
    try:
        kern = np.array(mem.table(kernel_root, top.entries, mode.dtype))
        user = np.array(mem.table(kernel_root + 4096, top.entries, mode.dtype))
    except PagewalkError:
        return False
    i_cea = (mode.table_offset(cea) >> top.shift) & (top.entries - 1)
    kernel_half_k = kern[top.entries // 2 :]
    kernel_half_u = user[top.entries // 2 :]
    if not user[i_cea] or not kern[i_cea]:
        return False
    # the user copy maps a small part of the kernel half (entry code, CPU entry area); without
    # PTI the page after a PGD is unrelated memory or another full PGD
    mapped_u = int(np.count_nonzero(kernel_half_u))
    mapped_k = int(np.count_nonzero(kernel_half_k))
    return mapped_u < mapped_k


def _x86_layout(
    mem: MappedMemory,
    mode: PagingMode,
    root: int,
    l5: bool,
    kallsyms: dict[str, int],
    defines: dict[str, int],
    notes: list[str],
) -> Layout:
    from ..translate import translate

    layout = Layout(l5=l5)
    names = {
        "page_offset_base": "page_offset",
        "vmalloc_base": "vmalloc_start",
        "vmemmap_base": "vmemmap_start",
    }
    for sym, attr in names.items():
        if sym in kallsyms:
            t = translate(mem, mode, root, kallsyms[sym])
            if t.ok and mem.contains(t.pa, 8):
                setattr(layout, attr, mem.read_u64(t.pa))
                layout.known.add(attr)
            else:
                notes.append(f"{sym} at {kallsyms[sym]:#x} could not be read from the image ({t.fault})")
    aliases = {
        "PAGE_OFFSET": "page_offset",
        "page_offset_base": "page_offset",
        "VMALLOC_START": "vmalloc_start",
        "vmalloc_base": "vmalloc_start",
        "VMEMMAP_START": "vmemmap_start",
        "vmemmap_base": "vmemmap_start",
        "FIXADDR_START": "fixaddr_start",
        "MODULES_VADDR": "modules_vaddr",
        "MODULES_END": "modules_end",
    }
    for name, value in defines.items():
        attr = aliases.get(name)
        if attr is None:
            raise UsageError(f"--define {name}: unknown (known: {', '.join(sorted(aliases))})")
        setattr(layout, attr, value)
        layout.known.add(attr)
    kaslr = mem.cpu.vmcoreinfo.get("KERNELOFFSET", "0") not in ("0", "")
    missing = [a for a in ("page_offset", "vmalloc_start", "vmemmap_start") if a not in layout.known]
    if missing:
        why = "KASLR is on (KERNELOFFSET), so " if kaslr else ""
        notes.append(
            f"{why}address markers use the fixed defaults for {', '.join(missing)}"
            " (give --kallsyms FILE or --define NAME=VALUE for the real ones)"
        )
    return layout


def dump(target: Target, view: str, out: TextIO, fmt: str = "text") -> int:
    """Write the kernel's ptdump of `view` (kernel, current_kernel, current_user) to `out`.

    Returns the number of ranges written.
    >>> dump(resolve(open_image("core.elf")), "kernel", sys.stdout)  # doctest: +SKIP
    """
    root = target.root(view)
    runs = root_runs(target.mem, target.mode, root)
    if fmt != "json":
        return format_fast(target.mode, runs, target.layout, out).ranges_written
    head = {
        "schema": "pagewalk.dump",
        "version": JSON_SCHEMA_VERSION,
        "arch": target.mode.arch,
        "mode": target.mode.name,
        "view": view,
        "root_pa": root,
    }
    out.write(json.dumps(head)[:-1] + ', "ranges": [\n')
    st = format_fast(target.mode, runs, target.layout, out, json_records=True)
    out.write("\n]}\n")
    return st.ranges_written


def checkwx(target: Target) -> WxResult:
    """The kernel's W+X check (ptdump_walk_pgd_level_checkwx(), then the PTI user copy).

    >>> checkwx(target).passed  # doctest: +SKIP
    True
    """
    lines: list[str] = []
    total = 0
    all_ranges: list[tuple[int, int]] = []
    views = [("kernel", None)]
    if target.pti and "kernel_user" in target.roots:
        views.append(("kernel_user", "x86/mm: Checking user space page tables"))
    for view, header in views:
        if header:
            lines.append(header)
        runs = root_runs(target.mem, target.mode, target.root(view))
        st = format_fast(target.mode, runs, target.layout, None, check_wx=True)
        for start, end in st.wx_ranges:
            lines.append(f"x86/mm: Found insecure W+X mapping at address {start:#x} ({(end - start) // 4096} pages)")
        if st.wx_pages:
            lines.append(f"x86/mm: Checked W+X mappings: FAILED, {st.wx_pages} W+X pages found.")
        else:
            lines.append("x86/mm: Checked W+X mappings: passed, no W+X pages found.")
        total += st.wx_pages
        all_ranges += st.wx_ranges
    return WxResult(total, all_ranges, lines)


