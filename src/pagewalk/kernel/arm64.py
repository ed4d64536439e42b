"""The arm64 Linux kernel: roots from TTBR1_EL1/TCR_EL1 or VMCOREINFO, layout, ptdump, W+X.

Mirrors arch/arm64/mm/ptdump.c (debugfs kernel_page_tables, ptdump_check_wx()) of the Debian 6.1
and 6.12 kernels. The address markers are computed with the formulas of that version's
arch/arm64/include/asm/memory.h, pgtable.h and fixmap.h, from VMCOREINFO's NUMBER()s where the
kernel exports them (MODULES_VADDR/END, VMALLOC_START/END, VMEMMAP_START/END, VA_BITS,
TCR_EL1_T1SZ), so KASLR and the LPA2 runtime VA size need no guessing. FIXADDR_START (6.1) and
FIXADDR_TOT_START (6.12) depend on the kernel configuration: Debian's are the defaults,
`--define` gives another kernel's.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np

from ..arch import arm64
from ..errors import RootError, UsageError
from ..memory.base import MappedMemory
from ..runs import discover, iter_runs
from ..target import Target, check_root
from ..ptdump.core import drive
from ..ptdump.arm64 import Arm64State
from . import WxResult, write_json_dump

TOP = 1 << 64
SZ_8M, SZ_16M, SZ_32M, SZ_128M, SZ_256M, SZ_1G, SZ_2G = 8 << 20, 16 << 20, 32 << 20, 128 << 20, 256 << 20, 1 << 30, 2 << 30
STRUCT_PAGE_SIZE = 64  # sizeof(struct page) (STRUCT_PAGE_MAX_SHIFT 6 in 6.1); VMCOREINFO SIZE(page)
# FIXADDR_TOP - FIXADDR_START (6.1) / FIXADDR_TOT_SIZE (6.12) of Debian's arm64 kernels
DEFAULT_FIXADDR_SIZE = {"6.1": 0x40B000, "6.12": 0x3D9000}

_HOW_TO_GET_REGS = (
    "read them from QEMU's gdbstub (qemu -s, then gdb: `p/x $TTBR1_EL1`, `p/x $TCR_EL1`, "
    "`p/x $MAIR_EL1`) and pass --reg ttbr1_el1=0x... --reg tcr_el1=0x... [--reg mair_el1=0x...]"
)


def series_of(version: str | None) -> str:
    """The ptdump format series of a kernel release: "6.12" for v6.9+ (LPA2 runtime folding,
    the new marker order), "6.1" before."""
    if not version:
        return "6.12"
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        raise UsageError(f"kernel version {version!r}: expected MAJOR.MINOR[...]")
    return "6.12" if (int(m.group(1)), int(m.group(2))) >= (6, 9) else "6.1"


@dataclass
class Layout:
    """The arm64 kernel's VA layout (memory.h) and ptdump's address markers and ranges."""

    series: str
    va_bits: int  # CONFIG_ARM64_VA_BITS (VMCOREINFO NUMBER(VA_BITS))
    vabits_actual: int  # 64 - TCR_EL1.T1SZ
    page_shift: int
    struct_page_size: int = STRUCT_PAGE_SIZE
    numbers: dict[str, int] = field(default_factory=dict)  # VMCOREINFO / --define overrides
    kasan: tuple[int, int] | None = None
    modes: dict = field(default_factory=dict)  # view -> the mode of its TTBR half
    mair: int | None = None  # MAIR_EL1 when given

    def _n(self, name: str, default: int) -> int:
        return self.numbers.get(name, default) % TOP

    @property
    def va_bits_min(self) -> int:
        if self.va_bits > 48:
            return 47 if self.page_shift == 14 and self.series != "6.1" else 48
        return self.va_bits

    @property
    def page_offset(self) -> int:
        return (TOP - (1 << self.va_bits)) % TOP

    @property
    def page_offset_actual(self) -> int:
        """_PAGE_OFFSET(vabits_actual): where the linear map really starts."""
        return TOP - (1 << self.vabits_actual)

    @property
    def page_end(self) -> int:
        return TOP - (1 << (self.va_bits_min - 1))

    def base_addr(self) -> int:
        """ptdump_walk()'s range start: kernel_ptdump_info.base_addr."""
        return self.page_offset if self.series == "6.1" else self.page_offset_actual

    def ranges(self) -> list[tuple[int, int]]:
        return [(self.base_addr(), TOP - 1)]

    def wx_ranges(self) -> list[tuple[int, int]]:
        """ptdump_check_wx(): {PAGE_OFFSET (6.1) / _PAGE_OFFSET(vabits_actual) (6.12), ~0UL}."""
        return self.ranges()

    def markers(self) -> list[tuple[int, str | None]]:
        """address_markers[] in array order, END ({-1, NULL}) last."""
        ps = self.page_shift
        m: list[tuple[int, str | None]] = [
            (self._n("PAGE_OFFSET", self.page_offset), "Linear Mapping start"),
            (self._n("PAGE_END", self.page_end), "Linear Mapping end"),
        ]
        if self.kasan:
            m += [(self.kasan[0], "Kasan shadow start"), (self.kasan[1], "Kasan shadow end")]
        modules_vaddr = self._n("MODULES_VADDR", self.page_end)
        if self.series == "6.1":
            modules_end = self._n("MODULES_END", modules_vaddr + SZ_128M)
            vmemmap_shift = ps - (self.struct_page_size.bit_length() - 1)
            vmemmap_start = self._n("VMEMMAP_START", TOP - (1 << (self.va_bits - vmemmap_shift)))
            vmemmap_size = (self.page_end - self.page_offset) >> vmemmap_shift
            vmemmap_end = self._n("VMEMMAP_END", vmemmap_start + vmemmap_size)
            pci_io_end = vmemmap_start - SZ_8M
            pci_io_start = self._n("PCI_IO_START", pci_io_end - SZ_16M)
            pci_io_end = self._n("PCI_IO_END", pci_io_start + SZ_16M)
            fixaddr_top = self._n("FIXADDR_TOP", vmemmap_start - SZ_32M)
            fixaddr_start = self._n("FIXADDR_START", fixaddr_top - DEFAULT_FIXADDR_SIZE["6.1"])
            m += [
                (modules_vaddr, "Modules start"),
                (modules_end, "Modules end"),
                (self._n("VMALLOC_START", modules_end), "vmalloc() area"),
                (self._n("VMALLOC_END", vmemmap_start - SZ_256M), "vmalloc() end"),
                (fixaddr_start, "Fixmap start"),
                (fixaddr_top, "Fixmap end"),
                (pci_io_start, "PCI I/O start"),
                (pci_io_end, "PCI I/O end"),
                (vmemmap_start, "vmemmap start"),
                (vmemmap_end, "vmemmap end"),
            ]
        else:
            modules_end = self._n("MODULES_END", modules_vaddr + SZ_2G)
            vmemmap_end = self._n("VMEMMAP_END", TOP - SZ_1G)
            vmemmap_size = ((self.page_end - self.page_offset) >> ps) * self.struct_page_size
            vmemmap_start = self._n("VMEMMAP_START", vmemmap_end - vmemmap_size)
            unused = ((self.page_offset_actual - self.page_offset) >> ps) * self.struct_page_size
            if self.va_bits == self.va_bits_min:
                vmalloc_end = vmemmap_start - SZ_8M
            else:
                vmalloc_end = vmemmap_start + unused - SZ_8M
            pci_io_start = self._n("PCI_IO_START", vmemmap_end + SZ_8M)
            fixaddr_top = self._n("FIXADDR_TOP", TOP - SZ_8M)
            m += [
                (modules_vaddr, "Modules start"),
                (modules_end, "Modules end"),
                (self._n("VMALLOC_START", modules_end), "vmalloc() area"),
                (self._n("VMALLOC_END", vmalloc_end), "vmalloc() end"),
                # virt_to_page(_PAGE_OFFSET(vabits_actual))
                (vmemmap_start + unused, "vmemmap start"),
                (vmemmap_end, "vmemmap end"),
                (pci_io_start, "PCI I/O start"),
                (self._n("PCI_IO_END", pci_io_start + SZ_16M), "PCI I/O end"),
                (self._n("FIXADDR_TOT_START", fixaddr_top - DEFAULT_FIXADDR_SIZE["6.12"]), "Fixmap start"),
                (fixaddr_top, "Fixmap end"),
            ]
        m.append((TOP - 1, None))
        return m


# --define names (and the VMCOREINFO NUMBER()s of the same name) the layout accepts
_DEFINES = (
    "PAGE_OFFSET", "PAGE_END", "MODULES_VADDR", "MODULES_END", "VMALLOC_START", "VMALLOC_END",
    "VMEMMAP_START", "VMEMMAP_END", "PCI_IO_START", "PCI_IO_END", "FIXADDR_START", "FIXADDR_TOT_START",
    "FIXADDR_TOP", "KASAN_SHADOW_START", "KASAN_SHADOW_END",
)
_VMCOREINFO_NUMBERS = ("MODULES_VADDR", "MODULES_END", "VMALLOC_START", "VMALLOC_END", "VMEMMAP_START", "VMEMMAP_END")


def _vi_int(vi: dict[str, str], key: str, base: int = 0) -> int | None:
    v = vi.get(key)
    if v is None or v == "":
        return None
    try:
        return int(v, base) if base else int(v, 16) if key.startswith("SYMBOL(") else int(v, 0)
    except ValueError:
        return None


def resolve(
    mem: MappedMemory, regs: dict[str, int], kallsyms: dict[str, int], defines: dict[str, int], options: dict[str, str]
) -> Target:
    """Roots, paging modes and layout of an arm64 Linux image (--reg or VMCOREINFO)."""
    vi = mem.cpu.vmcoreinfo
    notes: list[str] = []
    version = options.get("kernel_version") or vi.get("OSRELEASE")
    series = series_of(version)
    if not version:
        notes.append("no kernel version (VMCOREINFO OSRELEASE or --kernel-version): using the 6.12 ptdump format")
    ttbr1, ttbr0, tcr = regs.get("ttbr1_el1"), regs.get("ttbr0_el1"), regs.get("tcr_el1")
    page_size = _vi_int(vi, "PAGESIZE", 10)
    t1sz = _vi_int(vi, "NUMBER(TCR_EL1_T1SZ)")
    va_bits_cfg = defines.get("VA_BITS", _vi_int(vi, "NUMBER(VA_BITS)"))
    pa_max = _vi_int(vi, "NUMBER(MAX_PHYSMEM_BITS)", 10)
    swapper = _vi_int(vi, "SYMBOL(swapper_pg_dir)")
    voffset = _vi_int(vi, "NUMBER(kimage_voffset)")

    # -- the TTBR1 (kernel) half's mode
    if tcr is not None:
        try:
            mode = arm64.mode_from_tcr(tcr, upper=True, kernel=series)
        except ValueError as e:
            raise RootError(f"--reg tcr_el1: {e}") from None
    elif page_size and t1sz is not None:
        granule = page_size
        va = 64 - t1sz
        ds = va > 48 and granule != 65536
        pa_bits = 52 if (pa_max == 52) else 48
        try:
            mode = arm64.make_mode(granule, va, upper=True, ds=ds, pa_bits=pa_bits, kernel=series)
        except ValueError as e:  # a corrupt VMCOREINFO: PAGESIZE or TCR_EL1_T1SZ out of range
            raise RootError(f"VMCOREINFO PAGESIZE={page_size} NUMBER(TCR_EL1_T1SZ)={t1sz}: {e}; {_HOW_TO_GET_REGS}") from None
        notes.append(
            f"TCR_EL1 from VMCOREINFO: {granule >> 10}K granule, T1SZ {t1sz} ({va}-bit kernel VAs)"
            + (", LPA2 (TCR.DS)" if ds else "")
        )
    else:
        have = "no VMCOREINFO" if not vi else "VMCOREINFO without NUMBER(TCR_EL1_T1SZ)/PAGESIZE"
        missing = ["tcr_el1"] + ([] if ttbr1 is not None else ["ttbr1_el1"])
        raise RootError(
            f"arm64 needs the MMU registers: missing {', '.join(missing)} ({have}; a QEMU arm64 ELF core "
            f"holds no system registers): {_HOW_TO_GET_REGS}"
        )
    pa52 = mode.pa_bits == 52
    roots: dict[str, int] = {}
    unavailable: dict[str, str] = {}
    if swapper is not None and voffset is not None:
        pa = (swapper - voffset) % TOP
        roots["kernel"] = check_root(mem, mode, pa, "swapper_pg_dir (VMCOREINFO)")
    if ttbr1 is not None:
        cur = arm64.ttbr_baddr(ttbr1, pa52)
        try:
            roots["current_kernel"] = check_root(mem, mode, cur, "TTBR1_EL1")
        except RootError as e:
            if "kernel" not in roots:
                raise
            unavailable["current_kernel"] = str(e)
        if "kernel" not in roots:
            roots["kernel"] = roots["current_kernel"]
    modes = {"kernel": mode, "current_kernel": mode}
    if ttbr0 is not None and tcr is not None:
        try:
            umode = arm64.mode_from_tcr(tcr, upper=False, kernel=series)
            roots["current_user"] = check_root(mem, umode, arm64.ttbr_baddr(ttbr0, umode.pa_bits == 52), "TTBR0_EL1")
            modes["current_user"] = umode
        except (ValueError, RootError) as e:
            if not roots:
                raise RootError(f"TTBR0_EL1: {e}") from None
            unavailable["current_user"] = f"TTBR0_EL1: {e}"
    else:
        unavailable["current_user"] = "the user half needs --reg ttbr0_el1=0x... and --reg tcr_el1=0x..."
    if not roots:
        raise RootError(
            "arm64: no page-table root: missing ttbr1_el1 (or ttbr0_el1 for the user half) and the image has "
            f"no VMCOREINFO SYMBOL(swapper_pg_dir)/NUMBER(kimage_voffset): {_HOW_TO_GET_REGS}"
        )
    if "kernel" not in roots:
        # only the user half: its mode is the target's, the kernel views say how to get theirs
        mode = modes["current_user"]
        why = "no TTBR1_EL1 (--reg ttbr1_el1=...) and no VMCOREINFO swapper_pg_dir; the TTBR0 half is --view current_user"
        unavailable["kernel"] = unavailable["current_kernel"] = why

    numbers: dict[str, int] = {}
    for name in _VMCOREINFO_NUMBERS:
        v = _vi_int(vi, f"NUMBER({name})")
        if v is not None:
            numbers[name] = v
    for name, value in defines.items():
        if name == "VA_BITS":
            continue
        if name not in _DEFINES:
            raise UsageError(f"--define {name}: unknown for arm64 (known: VA_BITS, {', '.join(_DEFINES)})")
        numbers[name] = value
    if va_bits_cfg is None:
        va_bits_cfg = 52 if series == "6.12" and mode.extra["granule"] != 16384 else 48
        va_bits_cfg = max(va_bits_cfg, mode.va_bits)
        notes.append(f"CONFIG_ARM64_VA_BITS assumed {va_bits_cfg} (Debian's; give --define VA_BITS=...)")
    kasan = None
    if "KASAN_SHADOW_START" in numbers and "KASAN_SHADOW_END" in numbers:
        kasan = (numbers.pop("KASAN_SHADOW_START"), numbers.pop("KASAN_SHADOW_END"))
    layout = Layout(
        series=series,
        va_bits=va_bits_cfg,
        vabits_actual=mode.va_bits,
        page_shift=mode.extra["granule"].bit_length() - 1,
        struct_page_size=_vi_int(vi, "SIZE(page)", 10) or STRUCT_PAGE_SIZE,
        numbers=numbers,
        kasan=kasan,
    )
    layout.modes = modes
    layout.mair = regs.get("mair_el1")
    # translate's AttrIndx text: through MAIR_EL1 when known, Linux's layout of this version else
    mair_source = "the image's registers" if mem.cpu.regs.get("mair_el1") == layout.mair else "--reg mair_el1"
    for m in {id(m): m for m in modes.values()}.values():
        m.extra["kernel_version"] = version
        if layout.mair is not None:
            m.extra["mair"] = (layout.mair, mair_source)
    return Target(mem, mode, roots, layout, notes, False, version, unavailable)


def _mode_of(target: Target, view: str):
    return target.layout.modes.get(view, target.mode)


CONTIGUOUS_LISTED = 5  # inconsistent runs named in the note; the rest are counted


def contiguous_report(
    mem: MappedMemory, mode, root: int, limit: int | None = None
) -> tuple[int, list[tuple[int, int, str, int]]]:
    """The inconsistent contiguous runs (Arm ARM D8.6.1) reachable from `root`: their number, and
    (VA, size, level name, CONT_* problem bits) of the first `limit` (all when None) in table
    order; a table reached through several entries is checked once and named at its first VA.
    Whole tables per numpy operation: the upper levels from discover(), the last level read in
    chunks."""
    check = mode.extra["contiguous_check"]
    lts = discover(mem, mode, root)
    table_va = [np.zeros(1, np.uint64)]  # VA offset of each distinct table (its first parent entry)
    for i, lt in enumerate(lts[:-1]):
        t_idx, e_idx = np.nonzero(lt.child >= 0)
        entry_va = table_va[i][t_idx] + (e_idx.astype(np.uint64) << np.uint64(mode.levels[i].shift))
        nxt = np.zeros(len(lts[i + 1].pas), np.uint64)
        nxt[lt.child[t_idx, e_idx][::-1]] = entry_va[::-1]  # reversed: the first parent wins
        table_va.append(nxt)
    found: list[tuple[int, int, str, int]] = []
    total = 0
    for i, lt in enumerate(lts):
        lvl = mode.levels[i]
        run = arm64.contiguous_entries(mode.extra["granule"], mode.extra["start_level"] + i)
        if not run or not lt.ok.any():
            continue
        step = 1024 if lt.entries is None else len(lt.pas)
        for c0 in range(0, len(lt.pas), step):
            if lt.entries is None:
                ent, ok = mem.gather_tables(lt.pas[c0 : c0 + step], lvl.entries, mode.dtype)
            else:
                ent, ok = lt.entries, lt.ok
            prob = check(i, ent)
            prob[~ok] = 0
            t_bad, g_bad = np.nonzero(prob)
            total += len(t_bad)
            room = len(t_bad) if limit is None else max(0, limit - len(found))
            for t, g in zip(t_bad[:room].tolist(), g_bad[:room].tolist()):
                va = int(table_va[i][c0 + t]) + g * run * lvl.entry_span
                found.append((mode.canonical_va(va), run * lvl.entry_span, lvl.name, int(prob[t, g])))
    return total, found


def _note_contiguous(target: Target, view: str) -> None:
    """A note (target.notes, and stderr unless target.quiet) on inconsistent contiguous runs."""
    total, found = contiguous_report(target.mem, _mode_of(target, view), target.root(view), CONTIGUOUS_LISTED)
    if not total:
        return
    listed = "; ".join(
        f"{va:#x}-{(va + size) % TOP:#x} ({name}): {arm64.contiguous_problem_text(bits)}"
        for va, size, name, bits in found
    )
    more = f"; and {total - len(found)} more" if total > len(found) else ""
    text = (
        f"{total} inconsistent contiguous run{'s' if total > 1 else ''} (PTE_CONT) in the {view} "
        f"tables; Arm ARM D8.6.1 makes their translation CONSTRAINED UNPREDICTABLE (TLB conflict abort "
        f"or either entry's output): {listed}{more}"
    )
    target.notes.append(text)
    if not getattr(target, "quiet", False):
        print(f"pagewalk: note: {text}", file=sys.stderr)


def dump(target: Target, view: str, out: TextIO, fmt: str = "text") -> int:
    """Write the kernel's kernel_page_tables text of `view` (kernel, current_kernel, current_user).

    Returns the number of ranges written.
    """
    root = target.root(view)
    mode = _mode_of(target, view)
    lay: Layout = target.layout
    _note_contiguous(target, view)
    runs = iter_runs(target.mem, mode, root)  # streamed: drive() takes the chunks as they come
    if view == "current_user":
        # the user half, as ptdump_walk() walks a base below TASK_SIZE_64 (efi_page_tables-style
        # markers): the range ends there and so does the final flush
        end = 1 << mode.va_bits
        markers = [(0, "User space start"), (end, "User space end"), (TOP - 1, None)]
        ranges = [(0, end)]
    else:
        markers = lay.markers()
        ranges = lay.ranges()
        end = TOP - 1
    records: list[dict] | None = [] if fmt == "json" else None
    st = Arm64State(
        markers, out if fmt != "json" else None, series=lay.series, nlevels=len(mode.levels),
        page_size=mode.extra["granule"], records=records, end_address=end,
    )
    drive(st, mode, runs, ranges)
    if fmt != "json":
        return st.ranges_written
    return write_json_dump(out, mode, view, root, records or [])


class Arm64WxResult(WxResult):
    """WxResult with the arm64 kernel's second count: the check also fails on non-UXN kernel pages."""

    _fields = WxResult._fields + ("uxn_pages", "uxn_ranges")

    def __init__(
        self,
        wx_pages: int,
        ranges: list[tuple[int, int]],
        lines: list[str],
        uxn_pages: int = 0,
        uxn_ranges: list[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__(wx_pages, ranges, lines)
        self.uxn_pages = uxn_pages
        self.uxn_ranges = [] if uxn_ranges is None else uxn_ranges

    @property
    def passed(self) -> bool:
        return self.wx_pages == 0 and self.uxn_pages == 0


def checkwx(target: Target) -> Arm64WxResult:
    """ptdump_check_wx(): walk the kernel's table from the linear map up, count W+X and non-UXN
    pages, and print the kernel's lines (the WARN_ONCE addresses unhashed)."""
    mode = target.mode
    lay: Layout = target.layout
    _note_contiguous(target, "kernel")
    runs = iter_runs(target.mem, mode, target.root("kernel"))
    st = Arm64State(
        [(0, None), (TOP - 1, None)], None, series=lay.series, nlevels=len(mode.levels), check_wx=True,
        page_size=mode.extra["granule"],
    )
    drive(st, mode, runs, lay.wx_ranges())
    lines: list[str] = []
    if st.wx_ranges:
        lines.append(f"arm64/mm: Found insecure W+X mapping at address {st.wx_ranges[0][0]:#x}")
    if st.uxn_ranges:
        lines.append(f"arm64/mm: Found non-UXN mapping at address {st.uxn_ranges[0][0]:#x}")
    if st.wx_pages or st.uxn_pages:
        lines.append(
            f"Checked W+X mappings: FAILED, {st.wx_pages} W+X pages found, {st.uxn_pages} non-UXN pages found"
        )
    else:
        lines.append("Checked W+X mappings: passed, no W+X pages found")
    return Arm64WxResult(st.wx_pages, st.wx_ranges, lines, st.uxn_pages, st.uxn_ranges)
