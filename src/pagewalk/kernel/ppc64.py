"""The powerpc book3s64 Linux kernel (ppc64el and big-endian ppc64): the root from the process
table, the radix tree's geometry from its own entries, ptdump (debugfs kernel_page_tables) and
the W+X check; also the hash MMU's Linux tables (`disable_radix`).

Mirrors arch/powerpc/mm/ptdump/ptdump.c and book3s64.c of v6.1. The kernel's addresses (quadrant
3, EA 0xc000…) are always translated through process-table entry 0, whose radix tree is
init_mm.pgd = swapper_pg_dir: that is the `kernel` view. Where the root comes from, first that
is there wins:

* `--reg prtb0=…`: the first doubleword of process-table entry 0 (RTS1‖RPDB‖RTS2‖RPDS, Power ISA
  "Process Table"), e.g. the `prtb0=` of the oracle module's line; or `--reg rpdb=PA` with
  optional `--reg rts=N` (tree of 2^(N+31) bytes, default 21) and `--reg rpds=N` (root of 2^N
  entries, default 13);
* `--reg pgd=PA`: init_mm.pgd's PA, radix or hash (told apart by the root's directory entries:
  radix ones carry NLS, or `--kernel-config radix|hash`);
* `--reg prtb=PA` (the process table's base: PATE doubleword 1's PRTB, the guest's process_tb)
  or `--reg ptcr=…` (the Partition Table Control Register, bare metal/powernv; the partition-table
  entry of LPID 0 gives PRTB): entry 0 is read from the image;
* `--kallsyms` (System.map): `process_tb` (a pointer, read out of the image), else
  `swapper_pg_dir` (PA = VA - PAGE_OFFSET).

QEMU's pseries cores carry none of the SPRs (the partition table lives in QEMU, PTCR is 0);
`pagewalk extract --reg prtb0=…` stores the value in the small core. The index sizes below the
root come from the directory entries' NLS fields (`probe_nls()`). With the hash MMU the kernel's
Linux tables (8/10/10/8 index bits with 64K pages) are walked from KERN_VIRT_START as the kernel's
ptdump does; the hashed page table the MMU uses is not read. Debian's ppc64el kernels have
CONFIG_DEBUG_WX=n, so they print no W+X verdict; `checkwx` runs ptdump_check_wx()'s logic.
"""

from __future__ import annotations

from typing import TextIO

import numpy as np

from ..arch import ppc64
from ..errors import MemoryReadError, RootError, UsageError
from ..memory.base import MappedMemory
from ..ptdump.core import drive, entry_reader
from ..ptdump.ppc64 import Layout, Ppc64State
from ..runs import iter_runs
from ..target import Target, check_root
from . import WxResult, write_json_dump

# kernel variables the layout or the root is read from; `extract` keeps their pages
LAYOUT_SYMBOLS = ("process_tb",)

_DEFINES = {
    "PAGE_OFFSET": "page_offset",
    "VMALLOC_START": "vmalloc_start",
    "VMALLOC_END": "vmalloc_end",
    "KERN_IO_START": "kernel_io_start",
    "KERN_IO_END": "kernel_io_end",
    "H_VMEMMAP_START": "vmemmap_marker",
}
PAGE_OFFSET = ppc64.QUADRANT3
PATE_HR = 1 << 63  # partition-table entry doubleword 0, bit 0: Host Radix
PATB_MASK = 0x0FFFFFFFFFFFF000  # PTCR PATB (bits 4:51), PATE doubleword 1 PRTB (bits 4:51)

REG_HELP = """\
  ppc64    (book3s64) prtb0 (process-table entry 0, doubleword 0: RTS1||RPDB||RTS2||RPDS), or rpdb
           (radix root PA) [rts, default 21 = 52-bit; rpds, default 13], or pgd (init_mm.pgd PA, radix
           or hash: --kernel-config radix|hash if the entries do not tell), or prtb (process table PA) /
           ptcr (bare metal) to read entry 0 from the image. QEMU pseries cores have no SPRs:
           `pagewalk extract --reg prtb0=...` stores it; --kallsyms System.map gives process_tb or
           swapper_pg_dir instead. Radix index sizes below the root come from the entries' NLS."""


def _u64(mem: MappedMemory, pa: int) -> int:
    """A big-endian doubleword (process and partition tables are big-endian, like the tree)."""
    return int.from_bytes(mem.read(pa, 8), "big")


Found = tuple[str | None, int, int, int, str]  # (MMU if known, RTS, root PA, RPDS, where from)


def _root_from_regs(mem: MappedMemory, regs: dict[str, int], notes: list[str]) -> Found | None:
    """The root out of the registers, or None when they say nothing."""
    if "prtb0" in regs and ppc64.decode_prtb0(regs["prtb0"])[1]:
        rts, rpdb, rpds = ppc64.decode_prtb0(regs["prtb0"])
        return "radix", rts, rpdb, rpds, f"prtb0 {regs['prtb0']:#x}"
    if "rpdb" in regs:
        rpdb = regs["rpdb"] & ppc64.NLB_MASK
        return "radix", regs.get("rts", ppc64.LINUX_RTS), rpdb, regs.get("rpds", ppc64.LINUX_RPDS), "rpdb"
    if "pgd" in regs:
        return None, ppc64.LINUX_RTS, regs["pgd"], ppc64.LINUX_RPDS, f"pgd {regs['pgd']:#x}"
    if "prtb0" in regs:
        notes.append(f"prtb0 {regs['prtb0']:#x} has no radix tree (RPDB 0): a hash-MMU kernel?")
        return None
    prtb = regs.get("prtb")
    what = "prtb"
    if prtb is None and regs.get("ptcr"):
        patb = regs["ptcr"] & PATB_MASK
        try:
            dw0, dw1 = _u64(mem, patb), _u64(mem, patb + 8)
        except MemoryReadError:
            raise RootError(
                f"PTCR {regs['ptcr']:#x}: the partition table at PA {patb:#x} is not in the image"
            ) from None
        if not dw0 & PATE_HR:
            notes.append(f"PTCR {regs['ptcr']:#x}: partition 0 uses the hash MMU (PATE HR=0)")
            return None
        prtb, what = dw1 & PATB_MASK, f"the partition table at PA {patb:#x}"
    if prtb is None:
        return None
    try:
        prtb0 = _u64(mem, prtb & PATB_MASK)
    except MemoryReadError:
        raise RootError(f"the process table at PA {prtb & PATB_MASK:#x} ({what}) is not in the image") from None
    rts, rpdb, rpds = ppc64.decode_prtb0(prtb0)
    if not rpdb:
        notes.append(f"process-table entry 0 is {prtb0:#x}: no radix tree (a hash-MMU kernel?)")
        return None
    return "radix", rts, rpdb, rpds, f"process-table entry 0 {prtb0:#x} ({what})"


def _root_from_kallsyms(mem: MappedMemory, kallsyms: dict[str, int], notes: list[str]) -> Found | None:
    va = kallsyms.get("process_tb")
    if va is not None and va >= PAGE_OFFSET:
        try:
            raw = mem.read(va - PAGE_OFFSET, 8)
        except MemoryReadError:
            raw = None
        if raw is not None:
            # kernel data: little-endian on ppc64el, big-endian on ppc64; the pointer is a
            # linear-map address in one of the two orders (NULL on a hash-MMU kernel)
            for order in ("little", "big"):
                ptr = int.from_bytes(raw, order)
                if ptr >> 60 == 0xC:
                    try:
                        prtb0 = _u64(mem, ptr - PAGE_OFFSET)
                    except MemoryReadError:
                        notes.append(f"process_tb {ptr:#x}: the process table is not in the image")
                        break
                    rts, rpdb, rpds = ppc64.decode_prtb0(prtb0)
                    if rpdb:
                        return "radix", rts, rpdb, rpds, f"process-table entry 0 {prtb0:#x} (process_tb {ptr:#x})"
                    break
    va = kallsyms.get("swapper_pg_dir")
    if va is not None and va >= PAGE_OFFSET:
        return None, ppc64.LINUX_RTS, va - PAGE_OFFSET, ppc64.LINUX_RPDS, f"swapper_pg_dir {va:#x}"
    return None


def _detect_mmu(mem: MappedMemory, root: int, notes: list[str]) -> str:
    """radix or hash from the root's directory entries: radix ones carry the next level's NLS,
    the hash MMU's Linux tables do not (RADIX_PGD_VAL_BITS vs HASH_PGD_VAL_BITS)."""
    n = 1 << ppc64.HASH_64K.levels[0].bits  # both roots have at least these entries
    try:
        raw = mem.read(root, 8 * n)
    except MemoryReadError:
        raise RootError(f"the root table at PA {root:#x} is not in the image") from None
    e = np.frombuffer(raw, dtype=">u8").astype(np.uint64)
    pde = e[((e & np.uint64(ppc64._PAGE_PRESENT)) != 0) & ((e & np.uint64(ppc64._PAGE_PTE)) == 0)]
    if len(pde) and not (pde & np.uint64(ppc64.NLS_MASK)).any():
        notes.append("the root's directory entries carry no NLS: the hash MMU's Linux tables")
        return "hash"
    if not len(pde):
        notes.append("no directory entry in the first 256 root entries: assuming the radix MMU")
    return "radix"


def resolve(
    mem: MappedMemory, regs: dict[str, int], kallsyms: dict[str, int], defines: dict[str, int], options: dict[str, str]
) -> Target:
    """Root and geometry from the process-table entry (registers, image or kallsyms), layout."""
    notes: list[str] = []
    found = _root_from_regs(mem, regs, notes) or _root_from_kallsyms(mem, kallsyms, notes)
    if found is None:
        raise RootError(
            "no page-table root: ppc64 images carry no SPRs; pass --reg prtb0=0x... (process-table "
            "entry 0, e.g. from the kernel: be64_to_cpu(process_tb->prtb0)), --reg rpdb=PA, --reg prtb=PA, "
            "--reg pgd=PA (init_mm.pgd, radix or hash), or --kallsyms System.map (process_tb / swapper_pg_dir)"
            + (f" ({'; '.join(notes)})" if notes else "")
        )
    mmu, rts, rpdb, rpds, source = found
    forced = options.get("kernel_config")
    if forced is not None and forced not in ("radix", "hash"):
        raise UsageError(f"--kernel-config {forced}: ppc64 knows radix and hash")
    if rpdb == 0:
        raise RootError(f"{source}: the root is at PA 0 (no tree)")
    if forced == "hash" or (forced is None and mmu is None and _detect_mmu(mem, rpdb, notes) == "hash"):
        mode = ppc64.HASH_64K
        root = check_root(mem, mode, rpdb, f"hash MMU Linux tables ({source})")
        notes.append("hash MMU: the kernel's Linux tables are walked (the MMU's hashed page table is not read)")
    else:
        mode, root = _radix(mem, rts, rpdb, rpds, source, notes)
    layout = Layout(va_bits=mode.va_bits, page_shift=mode.extra["page_shift"], radix=mode.extra["mmu"] == "radix")
    for name, value in defines.items():
        attr = _DEFINES.get(name)
        if attr is None:
            raise UsageError(f"--define {name}: unknown for ppc64 (known: {', '.join(sorted(_DEFINES))})")
        setattr(layout, attr, value)
        layout.known.add(attr)
    unavailable = {
        "current_user": "ppc64: a process's own tree is process-table entry PID (quadrant 0); "
        "pagewalk reads entry 0 only (the kernel's)",
    }
    return Target(mem, mode, {"kernel": root}, layout, notes, False, None, unavailable)


def _radix(
    mem: MappedMemory, rts: int, rpdb: int, rpds: int, source: str, notes: list[str]
) -> tuple[ppc64.Ppc64Mode, int]:
    """The radix mode of the tree at `rpdb`, its index sizes below the root from the entries' NLS."""
    try:
        base = ppc64.radix_mode(rts, rpds)
    except ValueError as e:
        raise RootError(f"{source}: {e}") from None
    # the root's table must be there before its entries are probed
    root = check_root(mem, base, rpdb, f"radix tree ({source})")
    nls, probe_notes = ppc64.probe_nls(mem, root, base)
    notes += probe_notes
    try:
        mode = ppc64.with_nls(base, nls)
    except ValueError as e:
        raise RootError(f"the tree's directory entries give an impossible geometry: {e}") from None
    bits = [lvl.bits for lvl in mode.levels]
    if bits != [13, 9, 9, 5]:
        notes.append(
            f"radix tree of {mode.va_bits} bits with {'/'.join(map(str, bits))} index bits "
            f"({mode.levels[-1].entry_span // 1024}K pages; Linux with 64K pages uses 13/9/9/5)"
        )
    return mode, root


def dump(target: Target, view: str, out: TextIO, fmt: str = "text") -> int:
    """Write the kernel's kernel_page_tables text of `view` to `out`; returns the ranges written.

    >>> t = resolve(open_image("core.elf"), regs={"prtb0": 0x40000000027400ad})  # doctest: +SKIP
    >>> dump(t, "kernel", sys.stdout)  # doctest: +SKIP
    """
    root = target.root(view)
    mode = target.mode
    runs = iter_runs(target.mem, mode, root)  # streamed: drive() takes the chunks as they come
    reader = entry_reader(target.mem, mode, root)
    rpn_mask = mode.extra["rpn_mask"]
    records: list[dict] | None = [] if fmt == "json" else None
    st = Ppc64State(target.layout, out if records is None else None, rpn_mask, entry_at=reader, records=records)
    drive(st, mode, runs, target.layout.ranges())
    return st.lines if records is None else write_json_dump(out, mode, view, root, records)


def checkwx(target: Target) -> WxResult:
    """ptdump_check_wx() of arch/powerpc/mm/ptdump/ptdump.c on the kernel view, with its messages.

    The kernel WARNs once, at the first W+X range ("%p/%pS": a hashed pointer and a symbol;
    here the address twice), then prints the verdict.
    """
    runs = iter_runs(target.mem, target.mode, target.root("kernel"))
    st = Ppc64State(target.layout, None, target.mode.extra["rpn_mask"], check_wx=True)
    drive(st, target.mode, runs, target.layout.ranges())
    lines = []
    if st.wx_ranges:
        a = st.wx_ranges[0][0]
        lines.append(f"powerpc/mm: Found insecure W+X mapping at address {a:#x}/{a:#x}")
    if st.wx_pages:
        lines.append(f"Checked W+X mappings: FAILED, {st.wx_pages} W+X pages found")
    else:
        lines.append("Checked W+X mappings: passed, no W+X pages found")
    return WxResult(st.wx_pages, st.wx_ranges, lines)
