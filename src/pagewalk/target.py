"""From an image and the command line to what a walk needs: paging mode, roots, layout.

The root comes from the image where it is there (the QEMU CPU-state note: CR3/CR4; VMCOREINFO:
SYMBOL(init_top_pgt) and NUMBER(phys_base)), from `--reg` otherwise; command-line registers
win over the image. Every guess is written to `notes`, which the CLI prints on stderr.
"""

from __future__ import annotations

from ._record import Record
from .errors import PagewalkError, RootError, UsageError
from .memory.base import MappedMemory
from .mode import PagingMode

class Target(Record):
    """A paging mode and the roots of the views a kernel's debugfs would offer."""

    _fields = ("mem", "mode", "roots", "layout", "notes", "pti", "kernel_version", "unavailable", "kernel", "quiet")

    def __init__(
        self,
        mem: MappedMemory,
        mode: PagingMode,
        roots: dict[str, int],
        layout: object = None,
        notes: list[str] | None = None,
        pti: bool = False,
        kernel_version: str | None = None,
        unavailable: dict[str, str] | None = None,
        kernel: object = None,
        quiet: bool = False,
    ) -> None:
        self.mem = mem
        self.mode = mode
        self.roots = roots  # view name -> root table PA
        self.layout = layout  # the kernel's address-space layout (markers, ptdump ranges)
        self.notes = [] if notes is None else notes
        self.pti = pti
        self.kernel_version = kernel_version
        self.unavailable = {} if unavailable is None else unavailable  # view -> why it has no root
        self.kernel = kernel  # the pagewalk.kernel module that formats and checks this architecture
        self.quiet = quiet  # no notes on stderr from the commands themselves (the CLI's -q)

    def mode_for(self, view: str) -> PagingMode:
        """The paging mode of a view (arm64's TTBR0 half may differ from the TTBR1 one)."""
        modes = getattr(self.layout, "modes", None) or {}
        return modes.get(view, self.mode)

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


def check_root(mem: MappedMemory, mode: PagingMode, pa: int, what: str) -> int:
    if pa % mode.root_align:
        raise RootError(f"{what} root {pa:#x} is not aligned to {mode.root_align:#x}")
    size = mode.levels[0].entries * mode.entry_bytes
    if not mem.contains(pa, size):
        raise RootError(f"{what} root table at PA {pa:#x} is not in the image (its memory: {runs_text(mem)})")
    return pa


def runs_text(mem: MappedMemory) -> str:
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
    **options: str,
) -> Target:
    """Work out mode, roots and layout for `mem`; raise RootError when there is no root.

    >>> target = resolve(open_image("core.elf"))  # doctest: +SKIP
    >>> target.mode.name  # doctest: +SKIP
    'x86_64-5level'
    """
    from .kernel import support_for

    regs = {**mem.cpu.regs, **(regs or {})}
    arch = arch or mem.cpu.arch
    kernel = support_for(arch)
    options = {"pti": pti, "arch": arch, **{k: v for k, v in options.items() if v is not None}}
    target = kernel.resolve(mem, regs, kallsyms or {}, defines or {}, options)
    target.kernel = kernel
    return target


