"""Analyses beyond the kernel's dump, written once against the generic walk (like the kernel's
other walk users: hmm, mincore, pagemap): every architecture with a mode and an ARCH_BITS row
gets them all.

* `mappings(target, view)`: the leaf mappings as interval arrays (VA, size, PA, level, entry,
  effective permissions), the data under everything else;
* `stats(target, view)`: tables per level, bytes of page tables, leaves by size, sharing;
* `aliases(target, view)`: physical ranges mapped at more than one VA, W/X ones flagged;
* `diff(target_a, target_b, ...)`: added, removed, changed, remapped, moved ranges;
* `check(target)`: named security findings with severities and the entries that prove them;
* `pagemap(target, va_start, va_end)` / `mincore(...)`: per-page PFNs / residency;
* `write_map(target, path)`: a self-contained HTML map of the address space.

JSON output of the commands is described in SCHEMAS.md next to this file.

>>> from pagewalk.analysis import check  # doctest: +SKIP
>>> check(resolve(open_image("core.elf"))).exit_status()  # doctest: +SKIP
0
"""

from __future__ import annotations

from .aliases import Alias, AliasMember, AliasResult, aliases, find_aliases
from .check import CHECKS, CheckResult, Finding, check
from .diff import Change, DiffResult, Shift, compare, diff
from .mappings import ARCH_BITS, Mappings, compute, decode, mappings, mincore, pagemap
from .stats import Stats, stats

SCHEMA_VERSION = 1

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
