"""The x86-64 Linux kernel: roots from CR3/CR4 and VMCOREINFO, layout (KASLR), ptdump, W+X.

Mirrors arch/x86/mm/dump_pagetables.c and debug_pagetables.c (debugfs page_tables/kernel,
current_kernel, current_user) of v6.12. `dump()` and `checkwx()` serve i386 too (kernel/i386.py
resolves its targets): the same note_page() with the layout's word size, and the kernel's
effective_prot() fold (`arch.x86.ptdump_view()`).
"""

from __future__ import annotations

import struct

from .._lazynp import np  # numpy on first use: resolve() and the compiled dump need none
from ..arch import x86
from ..errors import PagewalkError, RootError, UsageError
from ..memory.base import MappedMemory
from ..memory.notes import vmcoreinfo_int
from ..mode import Kind, PagingMode
from ..ptdump.x86_layout import Layout
from ..target import Target, check_root
from . import WxResult, json_head

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up: README "How it is fast")
if TYPE_CHECKING:
    from typing import TextIO

# The walk's modules (runs, ptdump.x86: numpy) are imported by dump() and checkwx() where they
# need them: resolving a target and the compiled x86-64 ptdump never load numpy (README "How it is fast").

START_KERNEL_MAP = 0xFFFFFFFF80000000  # __START_KERNEL_map
# kernel variables the layout is read from (KASLR bases); `extract` keeps their pages
LAYOUT_SYMBOLS = ("page_offset_base", "vmalloc_base", "vmemmap_base")


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
    kernel = None
    sym = vmcoreinfo_int(vi, "SYMBOL(init_top_pgt)")
    phys_base = vmcoreinfo_int(vi, "NUMBER(phys_base)")
    if sym is not None and phys_base is not None:
        phys_base &= (1 << 64) - 1  # negative with KASLR
        kernel = check_root(mem, mode, (sym - START_KERNEL_MAP + phys_base) & ((1 << 64) - 1), "init_top_pgt (VMCOREINFO)")
    cur = x86.root_from_cr3(cr3) if cr3 is not None else None
    roots, unavailable, is_pti = views(mem, mode, kernel, cur, pti, notes, "VMCOREINFO init_top_pgt")
    layout = _x86_layout(mem, mode, roots["kernel"], l5, kallsyms, defines, notes)
    version = vi.get("OSRELEASE")
    return Target(mem, mode, roots, layout, notes, is_pti, version, unavailable)


def views(
    mem: MappedMemory,
    mode: PagingMode,
    kernel: int | None,
    cr3_root: int | None,
    pti: str,
    notes: list[str],
    kernel_source: str,
    cea: int | None = None,
    kernel_start: int | None = None,
) -> tuple[dict[str, int], dict[str, str], bool]:
    """The roots of debugfs's views from the kernel's own root and CR3's: (roots, unavailable, PTI).

    `kernel` is init_top_pgt/swapper_pg_dir (None: unknown, CR3's table stands in), `cr3_root`
    CR3's table; `pti` is auto/on/off (auto: `_looks_like_pti`). With PTI, CR3 bit 12 selects the
    user copy of a PGD, the page after the kernel's (kernel_to_user_pgdp()).
    """
    roots: dict[str, int] = {}
    unavailable: dict[str, str] = {}
    if kernel is not None:
        roots["kernel"] = kernel
    if pti == "on":
        is_pti = True
    elif pti == "off":
        is_pti = False
    else:
        probe = roots.get("kernel")
        if probe is None and cr3_root is not None:
            probe = cr3_root & ~x86.CR3_PTI_USER
        is_pti = probe is not None and _looks_like_pti(mem, mode, probe, cea, kernel_start)
    if cr3_root is not None:
        cur = cr3_root
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
                f"no {kernel_source}: dumping CR3's table (the current process's; its kernel half is the kernel's)"
            )
    if not roots:
        raise RootError("no page-table root: the image has no CR3 note or VMCOREINFO; pass --reg cr3=0x... --reg cr4=0x...")
    # PTI: the user copy of a PGD is the page after it (kernel_to_user_pgdp()).
    base = roots.get("current_kernel", roots["kernel"])
    if is_pti:
        user = base + 4096
        if mem.contains(user, mode.levels[0].entries * mode.entry_bytes):
            roots["current_user"] = user
            roots["kernel_user"] = roots["kernel"] + 4096
    elif "current_kernel" in roots:
        roots["current_user"] = roots["current_kernel"]
    return roots, unavailable, is_pti


def _looks_like_pti(
    mem: MappedMemory, mode: PagingMode, kernel_root: int, cea: int | None = None, kernel_start: int | None = None
) -> bool:
    """PTI's user PGD (the page after the kernel's) maps the CPU entry area but not the direct map.

    `cea` is CPU_ENTRY_AREA_BASE and `kernel_start` the first kernel address (x86-64 defaults:
    -4 << 39 and the upper half). Compared at the first level with more than 4 entries: below
    PAE's PDPT, whose kernel entry exists in both copies, the user copy points to its own PMD table.
    """
    if cea is None:
        cea = (1 << 64) - (4 << 39)
    if kernel_start is None:
        kernel_start = 1 << 63
    k_table, u_table = kernel_root, kernel_root + 4096
    for level, lvl in enumerate(mode.levels[:-1]):
        try:
            kern = _table_entries(mem, mode, k_table, lvl.entries)
            user = _table_entries(mem, mode, u_table, lvl.entries)
        except PagewalkError:
            return False
        span_mask = lvl.entries - 1
        i_cea = (mode.table_offset(cea) >> lvl.shift) & span_mask
        if not user[i_cea] or not kern[i_cea]:
            return False
        if lvl.entries > 4:
            # the user copy maps a small part of the kernel half (entry code, CPU entry area);
            # without PTI the page after a PGD is unrelated memory or another full PGD
            first = (mode.table_offset(kernel_start) >> lvl.shift) & span_mask if level == 0 else 0
            mapped_u = sum(1 for e in user[first:] if e)
            mapped_k = sum(1 for e in kern[first:] if e)
            return mapped_u < mapped_k
        kinds, addrs = mode.classify(level, np.array([kern[i_cea], user[i_cea]], np.uint64))
        if (kinds != Kind.TABLE).any() or addrs[0] == addrs[1]:
            return False
        k_table, u_table = int(addrs[0]), int(addrs[1])
        kernel_start = 0
    return False


def _table_entries(mem: MappedMemory, mode: PagingMode, pa: int, count: int) -> list[int]:
    """The `count` entries of the table at `pa` as ints, as `mem.table()` gives them (PagewalkError
    where it would raise); a file image (MappedMemory) is read without numpy."""
    if isinstance(mem, MappedMemory) and type(mem).table is MappedMemory.table:
        raw = mem.table_bytes(pa, count * mode.entry_bytes)
        return list(struct.unpack(f"{mode.byteorder}{count}{'Q' if mode.entry_bytes == 8 else 'I'}", raw))
    return np.array(mem.table(pa, count, mode.dtype)).astype(np.uint64).tolist()


def _x86_layout(
    mem: MappedMemory,
    mode: PagingMode,
    root: int,
    l5: bool,
    kallsyms: dict[str, int],
    defines: dict[str, int],
    notes: list[str],
) -> Layout:
    layout = Layout(l5=l5)
    names = {
        "page_offset_base": "page_offset",
        "vmalloc_base": "vmalloc_start",
        "vmemmap_base": "vmemmap_start",
    }
    for sym, attr in names.items():
        if sym in kallsyms:
            from ..translate import translate

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
    from ..ptdump import x86_compiled

    root = target.root(view)
    mode = x86.ptdump_view(target.mode)
    if fmt != "json" and x86_compiled.available(mode, target.layout):
        return x86_compiled.run(target.mem, mode, root, target.layout, out).ranges_written
    from ..ptdump.x86 import format_fast
    from ..runs import iter_runs

    runs = iter_runs(target.mem, mode, root)  # streamed: the text is written as the walk goes
    if fmt != "json":
        return format_fast(mode, runs, target.layout, out).ranges_written
    import json

    out.write(json.dumps(json_head(target.mode, view, root))[:-1] + ', "ranges": [\n')
    st = format_fast(mode, runs, target.layout, out, json_records=True)
    out.write("\n]}\n")
    return st.ranges_written


def checkwx(target: Target) -> WxResult:
    """The kernel's W+X check (ptdump_walk_pgd_level_checkwx(), then the PTI user copy).

    Without NX (__supported_pte_mask, i386 without PAE) the kernel returns before walking and
    prints nothing; so does this, but for one line saying why. With PAE the kernel's fold of the
    PDPTEs (no RW bit) hides every W+X mapping: its verdict, reproduced here, is always "passed".
    >>> checkwx(target).passed  # doctest: +SKIP
    True
    """
    from ..ptdump import x86_compiled

    lines: list[str] = []
    total = 0
    all_ranges: list[tuple[int, int]] = []
    mode = x86.ptdump_view(target.mode)
    nx = getattr(target.layout, "nx", True)
    runs = None
    why = "__supported_pte_mask has no NX"
    if nx is None:  # the kernel sets NX on its data wherever the CPU has it (i386: 4 GiB at most)
        from ..runs import root_runs

        runs = root_runs(target.mem, mode, target.root("kernel"))
        nx = bool((runs.key & np.uint64(x86._PAGE_NX)).any())
        why = "no page-table entry uses NX (the CPU or the kernel has none)"
    if not nx:
        if mode.entry_bytes == 4:
            why = "2-level paging has no NX bit"
        lines.append(f"pagewalk: {why}: the kernel skips its W+X check (ptdump_walk_pgd_level_checkwx() returns true)")
        return WxResult(0, [], lines)
    views = [("kernel", None)]
    if target.pti and "kernel_user" in target.roots:
        views.append(("kernel_user", "x86/mm: Checking user space page tables"))
    for view, header in views:
        if header:
            lines.append(header)
        if x86_compiled.available(mode, target.layout):
            st = x86_compiled.run(target.mem, mode, target.root(view), target.layout, None, check_wx=True)
        else:
            from ..ptdump.x86 import format_fast
            from ..runs import iter_runs

            if header or runs is None:
                runs = iter_runs(target.mem, mode, target.root(view))
            st = format_fast(mode, runs, target.layout, None, check_wx=True)
        for start, end in st.wx_ranges:
            npages = ((end - start) % (1 << target.layout.bits)) // 4096
            lines.append(f"x86/mm: Found insecure W+X mapping at address {start:#x} ({npages} pages)")
        if st.wx_ranges_dropped:
            lines.append(f"pagewalk: {st.wx_ranges_dropped} more W+X ranges not listed (counted below)")
        if st.wx_pages:
            lines.append(f"x86/mm: Checked W+X mappings: FAILED, {st.wx_pages} W+X pages found.")
        else:
            lines.append("x86/mm: Checked W+X mappings: passed, no W+X pages found.")
        total += st.wx_pages
        all_ranges += st.wx_ranges
    return WxResult(total, all_ranges, lines)
