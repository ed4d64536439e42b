"""The library's front door: dump, check W+X, translate and extract, on a resolved Target."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from .ptdump.core import drive
from .ptdump.x86 import X86State, format_fast
from .runs import Runs, discover, root_runs
from .target import Target

JSON_SCHEMA_VERSION = 1


def dump(target: Target, view: str, out: TextIO, fmt: str = "text") -> int:
    """Write the kernel's ptdump of `view` (kernel, current_kernel, current_user) to `out`.

    Returns the number of ranges written.
    >>> dump(resolve(open_image("core.elf")), "kernel", sys.stdout)  # doctest: +SKIP
    """
    root = target.root(view)
    runs = root_runs(target.mem, target.mode, root)
    if fmt != "json":
        return format_fast(target.mode, runs, target.layout, out).ranges_written
    records: list[dict] = []
    st = X86State(target.layout, None, records=records)
    drive(st, target.mode, runs, target.layout.ranges())
    doc = {
        "schema": "pagewalk.dump",
        "version": JSON_SCHEMA_VERSION,
        "arch": target.mode.arch,
        "mode": target.mode.name,
        "view": view,
        "root_pa": root,
        "ranges": records,
    }
    out.write(json.dumps(doc, indent=1))
    out.write("\n")
    return len(records)


@dataclass
class WxResult:
    """The W+X verdict of one walk, with the kernel's lines and the insecure ranges."""

    wx_pages: int
    ranges: list[tuple[int, int]]
    lines: list[str]

    @property
    def passed(self) -> bool:
        return self.wx_pages == 0


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


def table_pages(target: Target, views: list[str] | None = None) -> dict[int, int]:
    """PA -> size of every page-table page reachable from the given views (all by default)."""
    out: dict[int, int] = {}
    mode = target.mode
    for view in views or list(target.roots):
        root = target.roots[view]
        for i, lt in enumerate(discover(target.mem, mode, root)):
            size = mode.levels[i].entries * mode.entry_bytes
            for pa in lt.pas[lt.ok].tolist():
                out[pa] = size
    return out


def runs_of(target: Target, view: str = "kernel") -> Runs:
    """The compressed run list of a view (the data behind dump and checkwx)."""
    return root_runs(target.mem, target.mode, target.root(view))


def pages_of(pas: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(pas, np.uint64) & ~np.uint64(4095))
