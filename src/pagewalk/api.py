"""The library's front door: dump, check W+X, translate and extract, on a resolved Target."""

from __future__ import annotations

from .kernel import WxResult
from .target import Target

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up: README "How it is fast")
if TYPE_CHECKING:
    from typing import TextIO

    from .runs import Runs

__all__ = ["WxResult", "checkwx", "dump", "runs_of", "table_pages"]


def dump(target: Target, view: str, out: TextIO, fmt: str = "text") -> int:
    """Write the kernel's ptdump of `view` (kernel, current_kernel, current_user) to `out`.

    Returns the number of ranges written.
    >>> dump(resolve(open_image("core.elf")), "kernel", sys.stdout)  # doctest: +SKIP
    """
    return target.kernel.dump(target, view, out, fmt)


def checkwx(target: Target) -> WxResult:
    """The kernel's W+X check for the target's architecture, with the kernel's messages.

    >>> checkwx(target).passed  # doctest: +SKIP
    True
    """
    return target.kernel.checkwx(target)


def table_pages(target: Target, views: list[str] | None = None) -> dict[int, int]:
    """PA -> size of every page-table page reachable from the given views (all by default)."""
    from .runs import (
        discover,  # the walk's module (numpy): dump and checkwx do without it
    )

    out: dict[int, int] = {}
    for view in views or list(target.roots):
        root = target.roots[view]
        mode = target.mode_for(view)
        for i, lt in enumerate(discover(target.mem, mode, root)):
            size = mode.levels[i].entries * mode.entry_bytes
            for pa in lt.pas[lt.ok].tolist():
                out[pa] = size
    return out


def runs_of(target: Target, view: str = "kernel") -> Runs:
    """The compressed run list of a view (the data behind dump and checkwx)."""
    from .runs import root_runs

    return root_runs(target.mem, target.mode_for(view), target.root(view))
