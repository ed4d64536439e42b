"""Analyses beyond the kernel's dump, written once against the generic walk (like the kernel's
other walk users: hmm, mincore, pagemap): every architecture with a mode and its bits (an
ARCH_BITS row, or the arch module's own `mode.extra["arch_bits"]`) gets them all.

* `mappings(target, view)`: the leaf mappings as interval arrays (VA, size, PA, level, entry,
  effective permissions), the data under everything else;
* `stats(target, view)`: tables per level, bytes of page tables, leaves by size, sharing;
* `aliases(target, view)`: physical ranges mapped at more than one VA, W/X ones flagged;
* `diff(target_a, target_b, ...)`: added, removed, changed, remapped, moved ranges;
* `check(target)`: named security findings with severities and the entries that prove them;
* `pagemap(target, va_start, va_end)` / `mincore(...)`: per-page PFNs / residency;
* `write_map(target, path)`: a self-contained HTML map of the address space.

JSON output of the commands is described in SCHEMAS.md next to this file. The submodules are
imported on first use of a name (PEP 562), so `pagewalk dump` never loads them.

>>> from pagewalk.analysis import check  # doctest: +SKIP
>>> check(resolve(open_image("core.elf"))).exit_status()  # doctest: +SKIP
0
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below are imported on first use (PEP 562): `pagewalk dump` never pays for them
    from .aliases import Alias, AliasMember, AliasResult, aliases, find_aliases
    from .check import CHECKS, CheckResult, Finding, check
    from .diff import Change, DiffResult, Shift, compare, diff
    from .mappings import (
        ARCH_BITS,
        Mappings,
        compute,
        decode,
        mappings,
        mincore,
        pagemap,
    )
    from .stats import Stats, stats

SCHEMA_VERSION = 1

_LAZY = {
    **dict.fromkeys(("Alias", "AliasMember", "AliasResult", "aliases", "find_aliases"), "aliases"),
    **dict.fromkeys(("CHECKS", "CheckResult", "Finding", "check"), "check"),
    **dict.fromkeys(("Change", "DiffResult", "Shift", "compare", "diff"), "diff"),
    **dict.fromkeys(("ARCH_BITS", "Mappings", "compute", "decode", "mappings", "mincore", "pagemap"), "mappings"),
    **dict.fromkeys(("Stats", "stats"), "stats"),
}
_SHADOWED = {"aliases", "check", "diff", "mappings", "stats"}  # submodules named like their main function


class _Package(types.ModuleType):
    """The package's module type: importing the submodule `stats` does not rebind the package's
    `stats` (the function, as the eager imports this replaces left it)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    """Import the submodule that defines `name` on first access (PEP 562)."""
    sub = _LAZY.get(name)
    if sub is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{sub}", __name__), name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ARCH_BITS",
    "CHECKS",
    "SCHEMA_VERSION",
    "Alias",
    "AliasMember",
    "AliasResult",
    "Change",
    "CheckResult",
    "DiffResult",
    "Finding",
    "Mappings",
    "Shift",
    "Stats",
    "aliases",
    "check",
    "compare",
    "compute",
    "decode",
    "diff",
    "find_aliases",
    "mappings",
    "mincore",
    "pagemap",
    "stats",
    "write_map",
]


def write_map(*args, **kwargs):
    """See `pagewalk.analysis.htmlmap.write_map`."""
    from .htmlmap import write_map as _write_map

    return _write_map(*args, **kwargs)
