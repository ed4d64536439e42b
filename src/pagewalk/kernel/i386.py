"""The i386 Linux kernel (2-level and PAE paging): roots, layout; ptdump and W+X as on x86-64.

Roots: the kernel's own table is swapper_pg_dir (VMCOREINFO `SYMBOL(swapper_pg_dir)`, or
`--kallsyms`), at PA = VA - PAGE_OFFSET (__pa() of the 32-bit direct map, KASLR included: the
image moves physically and virtually together); CR3 (QEMU's CPU-state note) gives the current
process's table, CR4.PAE (bit 5) the paging mode and CR4.PSE (bit 4) whether 2-level PDEs can map
4 MiB. PAGE_OFFSET is the configured split (CONFIG_VMSPLIT_*); it is found by checking which
candidate maps swapper_pg_dir's VA onto its own PA.

Layout: the 32-bit address_markers[] of arch/x86/mm/dump_pagetables.c, filled in by
pt_dump_init() from arch/x86/include/asm/pgtable_32_areas.h: VMALLOC_START = high_memory + 8 MiB
(high_memory from `--kallsyms` through the image, else the end of the direct map in the tables),
VMALLOC_END, PKMAP_BASE, LDT_BASE_ADDR from CPU_ENTRY_AREA_BASE, FIXADDR_START = __FIXADDR_TOP -
FIXADDR_SIZE. dump() and checkwx() are kernel/x86.py's (the same note_page(), 8 hex digits).
"""

from __future__ import annotations

from ..arch import x86
from ..errors import UsageError
from ..memory.base import MappedMemory
from ..memory.notes import vmcoreinfo_int
from ..mode import PagingMode
from ..ptdump.x86 import Layout32
from ..runs import MISSING_BASE, SKIP_KLEVEL, root_runs
from ..target import Target, check_root
from .x86 import checkwx, dump, views

# kernel variables the layout is read from; `extract` keeps their pages
LAYOUT_SYMBOLS = ("high_memory", "__FIXADDR_TOP", "__supported_pte_mask")

__all__ = ["checkwx", "dump", "resolve"]

# CONFIG_PAGE_OFFSET of VMSPLIT_3G, 3G_OPT, 2G, 2G_OPT, 1G (arch/x86/Kconfig), most common first
PAGE_OFFSETS = (0xC0000000, 0xB0000000, 0x80000000, 0x78000000, 0x40000000)

_DEFINES = {
    "PAGE_OFFSET": "page_offset",
    "high_memory": "high_memory",
    "VMALLOC_START": "vmalloc_start",
    "FIXADDR_TOP": "fixaddr_top",
    "__FIXADDR_TOP": "fixaddr_top",
    "FIXADDR_START": "fixaddr_start",
    "CPU_ENTRY_AREA_BASE": "cpu_entry_area_base",
    "CONFIG_HIGHMEM": "highmem",
    "CONFIG_MODIFY_LDT_SYSCALL": "ldt",
}


def resolve(
    mem: MappedMemory, regs: dict[str, int], kallsyms: dict[str, int], defines: dict[str, int], options: dict[str, str]
) -> Target:
    """Paging mode, roots and layout of an i386 Linux image (CR3/CR4, VMCOREINFO, --reg, --kallsyms)."""
    for name in defines:
        if name not in _DEFINES:
            raise UsageError(f"--define {name}: unknown for i386 (known: {', '.join(sorted(_DEFINES))})")
    notes: list[str] = []
    vi = mem.cpu.vmcoreinfo
    cr3, cr4 = regs.get("cr3"), regs.get("cr4")
    if cr4 is not None:
        mode = x86.i386_mode_for(cr4)
    elif vi:
        # arch_crash_save_vmcoreinfo() (machine_kexec_32.c) writes CONFIG_X86_PAE=y with PAE
        mode = x86.i386_mode_for(None, pae=vi.get("CONFIG_X86_PAE") == "y")
    else:
        mode = x86.I386_PAE
        notes.append("no CR4 (--reg cr4=...) and no VMCOREINFO: assuming PAE paging (CR4 0x20; 2-level: --reg cr4=0x10)")
    pae = mode.extra["paging"] == "pae"
    sym = vmcoreinfo_int(vi, "SYMBOL(swapper_pg_dir)")
    if sym is None:
        sym = kallsyms.get("swapper_pg_dir")
    page_offset = defines.get("PAGE_OFFSET")
    kernel = None
    if sym is not None:
        if page_offset is None:
            page_offset = _find_page_offset(mem, mode, sym, notes)
        kernel = check_root(mem, mode, (sym - page_offset) & 0xFFFFFFFF, "swapper_pg_dir")
    layout = Layout32(pae=pae, page_offset=page_offset if page_offset is not None else PAGE_OFFSETS[0])
    for name, value in defines.items():
        attr = _DEFINES[name]
        setattr(layout, attr, bool(value) if attr in ("highmem", "ldt") else value)
        layout.known.add(attr)
    layout.__post_init__()
    cur = x86.i386_root_from_cr3(cr3, pae) if cr3 is not None else None
    roots, unavailable, is_pti = views(
        mem, mode, kernel, cur, options.get("pti", "auto"), notes, "VMCOREINFO swapper_pg_dir",
        cea=layout.cpu_entry_area_base, kernel_start=layout.page_offset,
    )
    _fill_layout(mem, mode, roots["kernel"], layout, kallsyms, notes)
    return Target(mem, mode, roots, layout, notes, is_pti, vi.get("OSRELEASE"), unavailable)


def _find_page_offset(mem: MappedMemory, mode: PagingMode, sym: int, notes: list[str]) -> int:
    """The PAGE_OFFSET under which swapper_pg_dir's own tables map its VA onto its PA."""
    from ..translate import translate

    size = mode.levels[0].entries * mode.entry_bytes
    for po in PAGE_OFFSETS:
        root = sym - po
        if root < 0 or root % mode.root_align or not mem.contains(root, size):
            continue
        t = translate(mem, mode, root, sym)
        if t.ok and t.pa == root:
            return po
    notes.append(
        f"swapper_pg_dir {sym:#x} maps onto itself under no usual PAGE_OFFSET: assuming {PAGE_OFFSETS[0]:#x} "
        "(--define PAGE_OFFSET=... for another split)"
    )
    return PAGE_OFFSETS[0]


def _read_word(mem: MappedMemory, mode: PagingMode, root: int, va: int, size: int) -> int | None:
    from ..translate import translate

    t = translate(mem, mode, root, va)
    if not t.ok or not mem.contains(t.pa, size):
        return None
    return int.from_bytes(mem.read(t.pa, size), "little")


def _fill_layout(
    mem: MappedMemory, mode: PagingMode, root: int, layout: Layout32, kallsyms: dict[str, int], notes: list[str]
) -> None:
    """The layout values that live in kernel variables, read through the kernel's tables."""
    pae = layout.pae
    reads = {
        "high_memory": ("high_memory", 4),  # void *
        "__FIXADDR_TOP": ("fixaddr_top", 4),  # unsigned long
        "__supported_pte_mask": ("nx", 8 if pae else 4),  # pteval_t
    }
    for sym, (attr, size) in reads.items():
        if attr in layout.known or sym not in kallsyms:
            continue
        v = _read_word(mem, mode, root, kallsyms[sym], size)
        if v is None:
            notes.append(f"{sym} at {kallsyms[sym]:#x} could not be read from the image")
            continue
        setattr(layout, attr, bool(v & x86._PAGE_NX) if attr == "nx" else v)
        layout.known.add(attr)
        if attr == "fixaddr_top" and "fixaddr_start" not in layout.known:
            layout.fixaddr_start = None
    if not pae:
        layout.nx = False  # _PAGE_NX is 0 without PAE
    if "vmalloc_start" not in layout.known:
        if "high_memory" in layout.known:
            layout.vmalloc_start = None
        else:
            layout.high_memory = direct_map_end(mem, mode, root, layout.page_offset)
            if layout.high_memory is None:
                notes.append("the direct map at PAGE_OFFSET is not mapped: no vmalloc() Area marker (--define high_memory=...)")
            else:
                notes.append(
                    f"high_memory taken as the end of the direct map, {layout.high_memory:#x} "
                    "(the guest's System.map + --kallsyms, or --define high_memory=..., give the kernel's)"
                )
    layout.__post_init__()


def direct_map_end(mem: MappedMemory, mode: PagingMode, root: int, page_offset: int) -> int | None:
    """The first unmapped address at or after PAGE_OFFSET: high_memory when lowmem is mapped whole."""
    runs = root_runs(mem, mode, root)
    start = runs.start.tolist()
    klevel = runs.klevel.tolist()
    key = runs.key.tolist()
    present = [
        lv <= MISSING_BASE or (lv != SKIP_KLEVEL and bool(k & x86._PAGE_PRESENT)) for lv, k in zip(klevel, key)
    ]
    first = None
    for i, s in enumerate(start):
        nxt = start[i + 1] if i + 1 < len(start) else 1 << 32
        if nxt <= page_offset:
            continue
        if first is None:
            first = i
            if not present[i]:
                return None
        if not present[i]:
            return max(s, page_offset)
    return None
