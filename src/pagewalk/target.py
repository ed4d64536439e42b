"""From an image and the command line to what a walk needs: paging mode, roots, layout.

The root comes from the image where it is there (the QEMU CPU-state note: CR3/CR4; VMCOREINFO:
SYMBOL(init_top_pgt) and NUMBER(phys_base)), from `--reg` otherwise; command-line registers
win over the image. Every guess is written to `notes`, which the CLI prints on stderr.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .arch import x86
from .errors import PagewalkError, RootError, UsageError
from .memory.base import MappedMemory
from .mode import PagingMode
from .ptdump.x86 import Layout

START_KERNEL_MAP = 0xFFFFFFFF80000000  # __START_KERNEL_map


@dataclass
class Target:
    """A paging mode and the roots of the views a kernel's debugfs would offer."""

    mem: MappedMemory
    mode: PagingMode
    roots: dict[str, int]  # view name -> root table PA
    layout: Layout | None = None
    notes: list[str] = field(default_factory=list)
    pti: bool = False
    kernel_version: str | None = None
    unavailable: dict[str, str] = field(default_factory=dict)  # view -> why it has no root

    def root(self, view: str) -> int:
        if view in self.unavailable and view not in self.roots:
            raise RootError(self.unavailable[view])
        if view not in self.roots:
            have = ", ".join(sorted(self.roots))
            raise UsageError(f"view {view!r} is not available for this image (available: {have})")
        return self.roots[view]


def parse_int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        try:
            return int(text, 16)
        except ValueError:
            raise UsageError(f"not a number: {text!r}") from None


def parse_assignments(items: list[str] | None, what: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"{what} takes NAME=VALUE, got {item!r}")
        out[name.strip().lower() if what == "--reg" else name.strip()] = parse_int(value.strip())
    return out


def read_kallsyms(path: str) -> dict[str, int]:
    """`ADDRESS TYPE NAME` lines (/proc/kallsyms, System.map) as name -> address."""
    out: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    try:
                        out.setdefault(parts[2], int(parts[0], 16))
                    except ValueError:
                        continue
    except OSError as e:
        raise PagewalkError(f"{path}: {e.strerror}") from None
    return out


def _check_root(mem: MappedMemory, mode: PagingMode, pa: int, what: str) -> int:
    if pa % mode.root_align:
        raise RootError(f"{what} root {pa:#x} is not aligned to {mode.root_align:#x}")
    size = mode.levels[0].entries * mode.entry_bytes
    if not mem.contains(pa, size):
        raise RootError(f"{what} root table at PA {pa:#x} is not in the image (its memory: {_runs_text(mem)})")
    return pa


def _runs_text(mem: MappedMemory) -> str:
    runs = mem.runs()
    shown = ", ".join(f"{a:#x}-{b:#x}" for a, b in runs[:4])
    return shown + (f", … ({len(runs)} pieces)" if len(runs) > 4 else "") if runs else "none"


def resolve(
    mem: MappedMemory,
    arch: str | None = None,
    regs: dict[str, int] | None = None,
    kallsyms: dict[str, int] | None = None,
    defines: dict[str, int] | None = None,
    pti: str = "auto",
) -> Target:
    """Work out mode, roots and layout for `mem`; raise RootError when there is no root."""
    regs = {**mem.cpu.regs, **(regs or {})}
    arch = arch or mem.cpu.arch
    if arch in ("amd64", "x86-64"):
        arch = "x86_64"
    if arch is None:
        raise UsageError("the image does not say its architecture: pass --arch")
    if arch != "x86_64":
        raise UsageError(f"architecture {arch!r} is not supported yet (supported: x86_64)")
    return _resolve_x86_64(mem, regs, kallsyms or {}, defines or {}, pti)


def _resolve_x86_64(
    mem: MappedMemory, regs: dict[str, int], kallsyms: dict[str, int], defines: dict[str, int], pti: str
) -> Target:
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
    if "SYMBOL(init_top_pgt)" in vi and "NUMBER(phys_base)" in vi:
        sym = int(vi["SYMBOL(init_top_pgt)"], 16)
        phys_base = int(vi["NUMBER(phys_base)"]) & ((1 << 64) - 1)
        kernel = (sym - START_KERNEL_MAP + phys_base) & ((1 << 64) - 1)
        roots["kernel"] = _check_root(mem, mode, kernel, "init_top_pgt (VMCOREINFO)")
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
            roots["current_kernel"] = _check_root(mem, mode, cur, "CR3")
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
    lower_user = user[: top.entries // 2]
    kernel_half_k = kern[top.entries // 2 :]
    kernel_half_u = user[top.entries // 2 :]
    if not user[i_cea] or not kern[i_cea]:
        return False
    # the user copy maps a small subset of the kernel half; the kernel maps much more of it
    mapped_u = int(np.count_nonzero(kernel_half_u))
    mapped_k = int(np.count_nonzero(kernel_half_k))
    return mapped_u < mapped_k and (mapped_u <= 4 or bool(lower_user.any()) or True)


def _x86_layout(
    mem: MappedMemory,
    mode: PagingMode,
    root: int,
    l5: bool,
    kallsyms: dict[str, int],
    defines: dict[str, int],
    notes: list[str],
) -> Layout:
    from .translate import translate

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
