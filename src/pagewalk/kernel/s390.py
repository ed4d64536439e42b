"""The s390x Linux kernel: roots from the ASCEs, layout from kernel variables, ptdump
(debugfs kernel_page_tables) and the W+X check, as arch/s390/mm/dump_pagetables.c of v6.1.

Roots: an ASCE (address-space-control element, PoP chapter 3, "Translation Control") gives the table origin, the
designation type (region-first/second/third or segment table: the paging mode) and the table
length. `--reg asce=…` wins; else the image's NT_S390_CTRS note (QEMU's ELF cores, kdump):
CR13, the home-space ASCE, which Linux sets to the kernel ASCE (S390_lowcore.kernel_asce, whose
table is swapper_pg_dir); CR1, the primary ASCE (the kernel ASCE while in kernel mode), is the
`current_kernel` view; CR7, the secondary ASCE (the user ASCE of the current process), is
`current_user`. Without any ASCE, `swapper_pg_dir` from `--kallsyms` (identity-mapped, VA = PA)
is taken as a region-third table of full length, Linux's layout up to 4 TiB (said on stderr).

Layout: address_markers[] of dump_pagetables.c need `_stext`, `_end` (symbols) and the values
of kernel variables (`__samode31`, `__eamode31`, `MODULES_VADDR`, `MODULES_END`,
`__abs_lowcore`, `__memcpy_real_area`, `vmemmap`, `vmemmap_size`, `VMALLOC_START`,
`VMALLOC_END`, `max_pfn`), read out of the image at the addresses `--kallsyms` (a System.map:
Debian's kernels have KALLSYMS_ALL=n) gives, through the kernel's own tables. ident_map_size is
init data, gone after boot: max_pfn << PAGE_SHIFT stands for it (setup_memory_end() derived
max_pfn from it). `--define NAME=VALUE` sets any of them by hand, and NR_CPUS (the Lowcore
area's size, NR_CPUS * sizeof(struct lowcore); default 256, Debian's).
"""

from __future__ import annotations

from typing import TextIO

from ..arch import s390
from ..errors import MemoryReadError, RootError, UsageError
from ..memory.base import MappedMemory
from ..mode import PagingMode
from ..ptdump.core import drive
from ..ptdump.s390 import SIZEOF_LOWCORE, Layout, S390State
from ..runs import iter_runs
from ..target import Target, check_root
from . import WxResult, write_json_dump

PAGE_SHIFT = 12

# kernel variables the layout is read from; `extract` keeps their pages
LAYOUT_SYMBOLS = ("max_pfn", "__samode31", "__eamode31", "MODULES_VADDR", "MODULES_END", "__abs_lowcore",
                  "__memcpy_real_area", "vmemmap", "vmemmap_size", "VMALLOC_START", "VMALLOC_END", "__kfence_pool")
_VARIABLES = ("__samode31", "__eamode31", "MODULES_VADDR", "MODULES_END", "__abs_lowcore", "__memcpy_real_area",
              "vmemmap", "vmemmap_size", "VMALLOC_START", "VMALLOC_END")
_DEFINES = set(Layout.NAMES) | {"max_pfn", "NR_CPUS", "max_addr", "WX_LOWCORE_EXEMPT"}

REG_HELP = (
    "asce (kernel ASCE: table origin bits 0-51, DT bits 60-61 = 3 region-first, 2 region-second, "
    "1 region-third, 0 segment, TL bits 62-63); else cr13 (home ASCE = kernel ASCE), cr1 (primary), "
    "cr7 (secondary = user ASCE) from the core's NT_S390_CTRS note; --kallsyms System.map for the markers"
)


def _asce_mode(asce: int, what: str) -> tuple[PagingMode, int]:
    mode, origin = s390.decode_asce(asce)
    if mode is None:
        raise RootError(f"{what} {asce:#x} is a real-space ASCE (R bit 58): no DAT tables")
    return mode, origin


def resolve(
    mem: MappedMemory, regs: dict[str, int], kallsyms: dict[str, int], defines: dict[str, int], options: dict[str, str]
) -> Target:
    """Paging mode and roots from the ASCEs (--reg asce=, NT_S390_CTRS CR13/CR1/CR7), layout."""
    for name in defines:
        if name not in _DEFINES:
            raise UsageError(f"--define {name}: unknown for s390x (known: {', '.join(sorted(_DEFINES))})")
    notes: list[str] = []
    roots: dict[str, int] = {}
    modes: dict[str, PagingMode] = {}
    unavailable: dict[str, str] = {}
    if "asce" in regs:
        kernel_asce, src = regs["asce"], "asce"
    elif "cr13" in regs:
        kernel_asce, src = regs["cr13"], "CR13 (home ASCE)"
    elif "cr1" in regs:
        kernel_asce, src = regs["cr1"], "CR1 (primary ASCE)"
        notes.append("no CR13: the kernel ASCE is taken from CR1 (the primary ASCE)")
    else:
        kernel_asce, src = None, ""
    if kernel_asce is not None:
        mode, origin = _asce_mode(kernel_asce, src)
    else:
        sym = kallsyms.get("swapper_pg_dir")
        if sym is None:
            raise RootError(
                "no page-table root: pass --reg asce=0x... (the kernel ASCE: S390_lowcore.kernel_asce, CR13), "
                "or an ELF core with an NT_S390_CTRS note, or --kallsyms with swapper_pg_dir"
            )
        mode, origin = s390.REGION3, sym
        kernel_asce = sym | 0x7  # region-third, TL 3: _ASCE_TYPE_REGION3 | _ASCE_TABLE_LENGTH
        notes.append(f"no ASCE: swapper_pg_dir {sym:#x} taken as a full-length region-third table (--reg asce=...)")
    roots["kernel"] = check_root(mem, mode, origin, src or "swapper_pg_dir")
    modes["kernel"] = mode
    for view, reg, what in (("current_kernel", "cr1", "CR1 (primary ASCE)"), ("current_user", "cr7", "CR7 (secondary ASCE)")):
        v = regs.get(reg)
        if v is None:
            unavailable[view] = f"no {what}: pass --reg {reg}=0x..."
            continue
        try:
            m, o = _asce_mode(v, what)
            roots[view] = check_root(mem, m, o, what)
            modes[view] = m
        except RootError as e:
            unavailable[view] = str(e)
    layout = _layout(mem, mode, roots["kernel"], kernel_asce, kallsyms, defines, notes)
    layout.modes = modes
    return Target(mem, mode, roots, layout, notes, False, None, unavailable)


def _read_var(mem: MappedMemory, mode: PagingMode, root: int, va: int) -> int | None:
    from ..translate import translate

    t = translate(mem, mode, root, va)
    if not t.ok:
        return None
    try:
        return mem.read_u64(t.pa, ">")
    except MemoryReadError:
        return None


def _layout(mem, mode: PagingMode, root: int, asce: int, kallsyms: dict[str, int], defines: dict[str, int],
            notes: list[str]) -> Layout:
    dt = (asce & 0x0C) >> 2
    # pt_dump_init(): max_addr = 1UL << (DT * 11 + 31)
    layout = Layout(max_addr=defines.get("max_addr", 1 << min(dt * 11 + 31, 64)))
    v = layout.values
    for sym in ("_stext", "_end"):
        v[sym] = kallsyms.get(sym)
    for sym in _VARIABLES:
        if sym in kallsyms:
            v[sym] = _read_var(mem, mode, root, kallsyms[sym])
    if "__kfence_pool" in kallsyms:
        v["kfence_pool"] = _read_var(mem, mode, root, kallsyms["__kfence_pool"])
    if "max_pfn" in kallsyms:
        max_pfn = _read_var(mem, mode, root, kallsyms["max_pfn"])
        if max_pfn is not None:
            v["ident_map_size"] = max_pfn << PAGE_SHIFT
    if "max_pfn" in defines:
        v["ident_map_size"] = defines["max_pfn"] << PAGE_SHIFT
    for name, value in defines.items():
        if name in Layout.NAMES:
            v[name] = value
    if "NR_CPUS" in defines:
        layout.abs_lowcore_size = defines["NR_CPUS"] * SIZEOF_LOWCORE
    layout.wx_lowcore_exempt = defines.get("WX_LOWCORE_EXEMPT")
    if layout.missing:
        notes.append(
            "markers left out (not in --kallsyms, or not readable in the image): " + ", ".join(layout.missing)
            + " (give --kallsyms System.map, or --define NAME=VALUE)"
        )
    return layout


def dump(target: Target, view: str, out: TextIO, fmt: str = "text") -> int:
    """Write the kernel's kernel_page_tables text of `view` to `out`; returns the lines written.

    >>> dump(resolve(open_image("core.elf"), regs={}, ...), "kernel", sys.stdout)  # doctest: +SKIP
    """
    root = target.root(view)
    mode = target.mode_for(view)
    runs = iter_runs(target.mem, mode, root)  # streamed: drive() takes the chunks as they come
    layout = target.layout
    if mode is not target.mode:  # another view's ASCE type: its own max_addr
        layout = Layout(max_addr=mode.top_span, values=layout.values, abs_lowcore_size=layout.abs_lowcore_size,
                        modes=layout.modes)
    records: list[dict] | None = [] if fmt == "json" else None
    st = S390State(layout, out if records is None else None, records=records)
    drive(st, mode, runs, layout.ranges())
    return st.lines if records is None else write_json_dump(out, mode, view, root, records)


def lowcore_exempt(target: Target) -> bool:
    """Whether the kernel exempts the first lowcore page (VA 0x1000 ends it) from its W+X count:
    nospec_uses_trampoline() || !cpu_has_bear, which is also when it maps that page executable.
    Without `--define WX_LOWCORE_EXEMPT=0|1`, the page at VA 0 being RW and X is taken as the sign."""
    given = target.layout.wx_lowcore_exempt
    if given is not None:
        return bool(given)
    from ..translate import translate

    t = translate(target.mem, target.mode, target.root("kernel"), 0)
    return bool(t.ok and not t.perm & 0x300)


def checkwx(target: Target) -> WxResult:
    """ptdump_check_wx() of arch/s390/mm/dump_pagetables.c (v6.1) on the kernel ASCE's table.

    The kernel WARNs once at the first W+X run ("%pS": the address; here in hex), then prints
    the verdict; "unexpected " is in the passed message when the first lowcore page is exempt.
    """
    runs = iter_runs(target.mem, target.mode, target.root("kernel"))
    exempt = lowcore_exempt(target)
    st = S390State(target.layout, None, check_wx=True, lowcore_exempt=exempt)
    drive(st, target.mode, runs, target.layout.ranges())
    lines = []
    if st.wx_ranges:
        lines.append(f"s390/mm: Found insecure W+X mapping at address {st.wx_ranges[0][0]:#x}")
    if st.wx_pages:
        lines.append(f"Checked W+X mappings: FAILED, {st.wx_pages} W+X pages found")
    else:
        lines.append(f"Checked W+X mappings: passed, no {'unexpected ' if exempt else ''}W+X pages found")
    return WxResult(st.wx_pages, st.wx_ranges, lines)
