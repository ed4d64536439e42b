"""The 32-bit ARM Linux kernel (short descriptors and LPAE): roots from TTBR0/TTBR1/TTBCR,
swapper_pg_dir, the layout, kernel_page_tables (arch/arm/mm/dump.c) and the W+X check.

Registers (names as the ARM ARM spells them, `--reg ttbr0=... --reg ttbr1=... --reg ttbcr=...`;
also sctlr, dacr, prrr/nmrr or mair0/mair1, which only `translate`'s wording uses): TTBCR.EAE
(bit 31) selects LPAE. The kernel's own table, init_mm's swapper_pg_dir, comes from `--kallsyms`
(its VA, translated through the current tables) or from the registers as Linux sets them: with
short descriptors Linux runs with TTBCR.N = 0 and loads swapper_pg_dir into TTBR1
(proc-v7-2level.S), with LPAE TTBR1 points TTBR1_OFFSET past swapper_pg_dir (proc-v7-3level.S:
4096 * (1 + 3) for VMSPLIT_3G, i.e. at its fourth PMD page, with T1SZ = 2; 16 for VMSPLIT_2G,
T1SZ = 1).

Views: `kernel` (swapper_pg_dir), `current_kernel` (TTBR0's table when it covers the whole space,
else TTBR1's), `current_user` (TTBR0). With short descriptors two more roots, `kernel_hw` and
`current_hw`, name the same tables read the MMU's way, so that `extract` keeps the hardware
second-level tables beside the Linux ones (dump.c reads the Linux tables, the MMU the others).

Layout: dump.c's markers (ptdump/arm.py); VMALLOC_START from high_memory (`--kallsyms`, read
through the tables; else the end of the direct map at PAGE_OFFSET) or `--define VMALLOC_START=`.
"""

from __future__ import annotations

from typing import TextIO

from ..arch import arm
from ..errors import MemoryReadError, RootError, UsageError
from ..memory.base import MappedMemory
from ..mode import PagingMode
from ..ptdump.arm import PAGE_OFFSET_DEFAULT, ArmState, Layout
from ..ptdump.core import drive
from ..runs import MISSING_BASE, SKIP_KLEVEL, iter_runs, root_runs
from ..target import Target, check_root
from . import WxResult, write_json_dump

# kernel variables the layout is read from; `extract` keeps their pages
LAYOUT_SYMBOLS = ("high_memory",)

REGISTERS = ("ttbr0", "ttbr1", "ttbcr", "sctlr", "dacr", "prrr", "nmrr", "mair0", "mair1")
_REG_ALIASES = {"ttbr0_el1": "ttbr0", "ttbr1_el1": "ttbr1", "ttbcr_el1": "ttbcr", "sctlr_el1": "sctlr",
                "dacr32_el2": "dacr"}

# CONFIG_PAGE_OFFSET of VMSPLIT_3G, 3G_OPT, 2G, 1G (arch/arm/Kconfig), most common first
PAGE_OFFSETS = (0xC0000000, 0xB0000000, 0x80000000, 0x40000000)
SZ_16M = 1 << 24

_DEFINES = {
    "PAGE_OFFSET": "page_offset",
    "MODULES_VADDR": "modules_vaddr",
    "high_memory": "high_memory",
    "VMALLOC_START": "vmalloc_start",
}


def _regs(regs: dict[str, int]) -> dict[str, int]:
    out = dict(regs)
    for alias, name in _REG_ALIASES.items():
        if alias in out and name not in out:
            out[name] = out[alias]
    return out


def resolve(
    mem: MappedMemory, regs: dict[str, int], kallsyms: dict[str, int], defines: dict[str, int], options: dict[str, str]
) -> Target:
    """Descriptor format, roots and layout of a 32-bit ARM Linux image (see the module doc)."""
    for name in defines:
        if name not in _DEFINES:
            raise UsageError(f"--define {name}: unknown for arm (known: {', '.join(sorted(_DEFINES))})")
    notes: list[str] = []
    regs = _regs(regs)
    unknown = sorted(set(regs) - set(REGISTERS) - set(_REG_ALIASES))
    if unknown:
        notes.append(f"register(s) {', '.join(unknown)} not used for arm (known: {', '.join(REGISTERS)})")
    ttbr0, ttbr1, ttbcr = regs.get("ttbr0"), regs.get("ttbr1"), regs.get("ttbcr")
    if ttbr0 is None and ttbr1 is None:
        raise RootError(
            "no page-table root: 32-bit ARM cores carry no TTBRs; pass --reg ttbr0=0x... --reg ttbr1=0x... "
            "--reg ttbcr=0x... (QEMU's gdbstub: p/x $TTBR0_EL1, $TTBR1_EL1, $TTBCR)"
        )
    if ttbcr is None:
        wide = any(v is not None and v >> 32 for v in (ttbr0, ttbr1))
        ttbcr = (arm.TTBCR_EAE | (2 << arm.TTBCR_T1SZ_SHIFT)) if wide else 0
        notes.append(
            f"no TTBCR (--reg ttbcr=...): assuming {'LPAE with T1SZ=2 (TTBRs wider than 32 bits)' if wide else 'short descriptors with N=0'}"
        )
    sctlr = regs.get("sctlr", 0)
    lpae = arm.is_lpae(ttbcr)
    roots: dict[str, int] = {}
    modes: dict[str, PagingMode] = {}
    unavailable: dict[str, str] = {}
    if lpae:
        t0sz, t1sz = ttbcr & 7, (ttbcr >> arm.TTBCR_T1SZ_SHIFT) & 7
        kmode = arm.LPAE
        user_mode = arm.lpae_mode(t0sz)
        up_mode = arm.lpae_mode(t1sz, upper=True)
        if ttbr0 is not None:
            roots["current_user"] = check_root(mem, user_mode, arm.ttbr_lpae_base(ttbr0, t0sz), "TTBR0")
            modes["current_user"] = user_mode
            if t0sz == 0:
                roots["current_kernel"] = roots["current_user"]
                modes["current_kernel"] = user_mode
        ttbr1_pa = arm.ttbr_lpae_base(ttbr1, t1sz) if ttbr1 is not None else None
        if "current_kernel" not in roots and ttbr1_pa is not None and t1sz:
            roots["current_kernel"] = check_root(mem, up_mode, ttbr1_pa, "TTBR1")
            modes["current_kernel"] = up_mode
        kernel = _swapper_lpae(mem, ttbr1_pa, t1sz, notes)
        translate_root = (up_mode, ttbr1_pa) if ttbr1_pa is not None and t1sz else (user_mode, roots.get("current_user"))
    else:
        n = ttbcr & arm.TTBCR_N_MASK
        afe = bool(sctlr & arm.SCTLR_AFE)
        dacr = regs.get("dacr")
        kmode = arm.short_mode(0, afe=afe, dacr=dacr)
        user_mode = arm.short_mode(n, afe=afe, dacr=dacr)
        up_mode = arm.short_mode(n, upper=True, afe=afe, dacr=dacr)
        if ttbr0 is not None:
            roots["current_user"] = check_root(mem, user_mode, arm.ttbr_short_base(ttbr0, n), "TTBR0")
            modes["current_user"] = user_mode
        if n == 0 and ttbr0 is not None:
            roots["current_kernel"], modes["current_kernel"] = roots["current_user"], user_mode
        elif ttbr1 is not None:
            roots["current_kernel"] = check_root(mem, up_mode, arm.ttbr_short_base(ttbr1, upper=True), "TTBR1")
            modes["current_kernel"] = up_mode
        kernel = None
        if ttbr1 is not None and n == 0:
            kernel = arm.ttbr_short_base(ttbr1, upper=True)
            notes.append("swapper_pg_dir taken from TTBR1 (Linux loads it there and runs with TTBCR.N = 0)")
        translate_root = (modes.get("current_kernel"), roots.get("current_kernel"))
    sym = kallsyms.get("swapper_pg_dir")
    if sym is not None and translate_root[1] is not None:
        from ..translate import translate

        t = translate(mem, translate_root[0], translate_root[1], sym)
        if t.ok:
            kernel = t.pa
            notes[:] = [n for n in notes if not n.startswith(("swapper_pg_dir taken", "TTBR1 does not sit"))]
        else:
            notes.append(f"swapper_pg_dir {sym:#x} does not translate through the TTBR tables ({t.fault})")
    if kernel is None:
        fallback = "current_kernel" if "current_kernel" in roots else "current_user"
        if fallback not in roots:
            raise RootError("no usable root: give TTBR0 (or TTBR1 with TTBCR) or --kallsyms with swapper_pg_dir")
        kernel = roots[fallback]
        notes.append(f"no swapper_pg_dir: dumping {fallback}'s table (its kernel part is copied from swapper_pg_dir)")
    roots["kernel"] = check_root(mem, kmode, kernel, "swapper_pg_dir")
    modes["kernel"] = kmode
    if not lpae:
        # the same tables read as the MMU reads them: extract keeps the hardware PTE tables too
        for view, hw in (("kernel", "kernel_hw"), ("current_kernel", "current_hw")):
            if view in roots:
                m = modes[view]
                roots[hw] = roots[view]
                modes[hw] = arm.short_mode(m.extra["n"], linux=False, upper=m.extra["upper"], afe=m.extra["afe"],
                                           dacr=m.extra["dacr"])
    if "current_user" not in roots:
        unavailable["current_user"] = "no TTBR0 (--reg ttbr0=...)"
    page_offset = defines.get("PAGE_OFFSET")
    if page_offset is None:
        page_offset = _find_page_offset(mem, modes.get("kernel_hw", kmode), roots["kernel"], sym, notes)
    layout = Layout(lpae=lpae, page_offset=page_offset)
    for name, value in defines.items():
        setattr(layout, _DEFINES[name], value)
        layout.known.add(_DEFINES[name])
    layout.modes = modes
    _fill_layout(mem, modes.get("kernel_hw", kmode), roots["kernel"], layout, kallsyms, notes)
    return Target(mem, kmode, roots, layout, notes, False, None, unavailable)


def _find_page_offset(mem: MappedMemory, mode: PagingMode, root: int, sym: int | None, notes: list[str]) -> int:
    """PAGE_OFFSET: the configured split (CONFIG_VMSPLIT_*) under which swapper_pg_dir's own tables
    map its VA onto its PA. swapper_pg_dir = PAGE_OFFSET + TEXT_OFFSET - PG_DIR_SIZE, less than
    16 MiB in, and PHYS_OFFSET is 16 MiB aligned (ARM_PATCH_PHYS_VIRT), so its VA is PAGE_OFFSET
    plus its PA modulo 16 MiB; with --kallsyms the VA is known."""
    from ..translate import translate

    for po in PAGE_OFFSETS:
        va = sym if sym is not None else po + (root & (SZ_16M - 1))
        if not po <= va < po + SZ_16M:
            continue
        t = translate(mem, mode, root, va)
        if t.ok and t.pa == root:
            return po
    notes.append(f"swapper_pg_dir does not map itself under any usual PAGE_OFFSET: assuming {PAGE_OFFSET_DEFAULT:#x} "
                 "(--define PAGE_OFFSET=... for another split)")
    return PAGE_OFFSET_DEFAULT


def _swapper_lpae(mem: MappedMemory, ttbr1_pa: int | None, t1sz: int, notes: list[str]) -> int | None:
    """swapper_pg_dir from TTBR1 = swapper_pg_dir + TTBR1_OFFSET (proc-v7-3level.S), checked:
    the pgd entry for TTBR1's region must point at TTBR1's table."""
    if ttbr1_pa is None or t1sz not in (1, 2):
        return None
    cand = ttbr1_pa - (0x4000 if t1sz == 2 else 16)
    idx = 3 if t1sz == 2 else 2
    try:
        e = int.from_bytes(mem.read(cand + 8 * idx, 8), "little")
    except MemoryReadError:
        e = None
    if cand >= 0 and e is not None and (t1sz == 1 or e & (arm.PHYS_MASK_3L & ~0xFFF) == ttbr1_pa):
        notes.append(f"swapper_pg_dir taken as TTBR1 - TTBR1_OFFSET ({cand:#x})")
        return cand
    notes.append("TTBR1 does not sit at swapper_pg_dir + TTBR1_OFFSET (give --kallsyms with swapper_pg_dir)")
    return None


def _read_u32(mem: MappedMemory, mode: PagingMode, root: int, va: int) -> int | None:
    from ..translate import translate

    t = translate(mem, mode, root, va)
    if not t.ok or not mem.contains(t.pa, 4):
        return None
    return int.from_bytes(mem.read(t.pa, 4), "little")


def _fill_layout(mem: MappedMemory, mode: PagingMode, root: int, layout: Layout, kallsyms: dict[str, int],
                 notes: list[str]) -> None:
    if "vmalloc_start" in layout.known:
        layout.__post_init__()
        return
    if "high_memory" not in layout.known and "high_memory" in kallsyms:
        v = _read_u32(mem, mode, root, kallsyms["high_memory"])
        if v is None:
            notes.append(f"high_memory at {kallsyms['high_memory']:#x} could not be read from the image")
        else:
            layout.high_memory = v
            layout.known.add("high_memory")
    if layout.high_memory is None:
        layout.high_memory = direct_map_end(mem, mode, root, layout.page_offset)
        if layout.high_memory is None:
            notes.append("the direct map at PAGE_OFFSET is not mapped: the vmalloc() Area marker is a guess "
                         "(--define VMALLOC_START=... or high_memory=...)")
        else:
            notes.append(f"high_memory taken as the end of the direct map, {layout.high_memory:#x} "
                         "(--kallsyms with high_memory, or --define VMALLOC_START=..., give the kernel's)")
    layout.__post_init__()


def direct_map_end(mem: MappedMemory, mode: PagingMode, root: int, page_offset: int) -> int | None:
    """The first unmapped address at or after PAGE_OFFSET: high_memory when lowmem is mapped whole."""
    runs = root_runs(mem, mode, root)
    start = runs.start.tolist()
    klevel = runs.klevel.tolist()
    val = runs.val.tolist()
    base = mode.canonical_va(0)
    present = True
    first = True
    for i, s in enumerate(start):
        s += base
        nxt = (start[i + 1] + base) if i + 1 < len(start) else 1 << 32
        if klevel[i] != SKIP_KLEVEL:
            present = klevel[i] <= MISSING_BASE or (klevel[i] >= 0 and val[i] != 0)
        if nxt <= page_offset:
            continue
        if first:
            first = False
            if not present:
                return None
        if not present:
            return max(s, page_offset)
    return None


def dump(target: Target, view: str, out: TextIO, fmt: str = "text") -> int:
    """Write the kernel's kernel_page_tables text of `view` to `out`; returns the lines written."""
    root = target.root(view)
    mode = target.mode_for(view)
    runs = iter_runs(target.mem, mode, root)  # streamed: drive() takes the chunks as they come
    records: list[dict] | None = [] if fmt == "json" else None
    st = ArmState(target.layout, out if records is None else None, records=records)
    drive(st, mode, runs, target.layout.ranges())
    return st.lines if records is None else write_json_dump(out, mode, view, root, records)


def checkwx(target: Target) -> WxResult:
    """ptdump_check_wx() of arch/arm/mm/dump.c on the kernel view, with its messages (the WARN_ONCE
    prints `%pS` of the first W+X range's start: here its address)."""
    mode = target.mode_for("kernel")
    runs = iter_runs(target.mem, mode, target.root("kernel"))
    st = ArmState(target.layout, None, check_wx=True)
    drive(st, mode, runs, target.layout.ranges())
    lines = []
    if st.wx_ranges:
        lines.append(f"arm/mm: Found insecure W+X mapping at address {st.wx_ranges[0][0]:#x}")
    if st.wx_pages:
        lines.append(f"Checked W+X mappings: FAILED, {st.wx_pages} W+X pages found")
    else:
        lines.append("Checked W+X mappings: passed, no W+X pages found")
    return WxResult(st.wx_pages, st.wx_ranges, lines)
