"""The generic ptdump text, for architectures whose kernel has no ptdump (mips, sparc64, arc).

One line per coalesced run of present leaves, in the spirit of the kernel's ptdump lines:

    ---[ vmalloc ]---
    0xc000000000002000-0xc000000000003000          4K pte  PRESENT WRITE ACCESSED MODIFIED GLOBAL VALID DIRTY CCA=2

columns: start and end VA (end exclusive, the width of the architecture's longs), the size in
the kernel's units (K M G T P E, as arm64 and riscv print it), the level that holds the leaves
(the mode's level names), then the entry's flags by the names the architecture's headers give
them (`mode.extra["generic_flags"]`: (name, mask) pairs; a single bit prints its name when set,
a wider field prints NAME=value). A run is cut where the entry's non-address bits
(`mode.ptdump_key_mask`), its level or its presence change, at the boundaries of the mode's VA
windows and at the section boundaries; addresses of the output pages are not compared, as the
kernel's ptdump does not compare them either. An upper entry whose table the image does not hold
gets a line `[table at PA … not in image]`. `--format json` gives the same lines as records of the
`pagewalk.dump` schema (start, end, size, marker, level, pa, prot, flags, entry).

What is "present" is the architecture's `pte_present()` (`mode.extra["present"](level, entries)`),
what is a leaf above the PTE level is its `p?d_leaf()` (the mode's classify()).

>>> dump(mem, mode, root_pa, sys.stdout, sections=[(0xc000000000000000, 0xc000010000000000, "vmalloc")])  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

import numpy as np

from ..memory.base import MappedMemory
from ..mode import PagingMode
from .core import scaled_size
from ..runs import MISSING_BASE, SKIP_KLEVEL, Runs, root_runs

TOP = 1 << 64
U64 = np.uint64


@dataclass
class Line:
    """One line of the generic dump: a run of equal present leaves, or a table not in the image."""

    start: int  # VA
    end: int  # VA, exclusive (may be 2**64)
    level: str
    entry: int  # raw value of the run's first entry
    pa: int  # output PA of the first entry (the missing table's PA for a missing line)
    flags: list[str]
    section: str = ""
    missing: bool = False


def flag_names(mode: PagingMode, entry: int) -> list[str]:
    """The names of `entry`'s flags, in the order of `mode.extra["generic_flags"]`.

    >>> flag_names(make_mode("8k"), 0x31f)  # doctest: +SKIP
    ['CACHEABLE', 'EXECUTE', 'WRITE', 'READ', 'ACCESSED', 'GLOBAL', 'PRESENT']
    """
    out = []
    for name, m in mode.extra.get("generic_flags", ()):
        if m & (m - 1) == 0:
            if entry & m:
                out.append(name)
            continue
        low = (m & -m).bit_length() - 1
        contiguous = ((m >> low) + 1) & (m >> low) == 0
        v = entry & m
        out.append(f"{name}={v >> low}" if contiguous else f"{name}={v:#x}")
    return out


def _boundaries(mode: PagingMode) -> list[int]:
    """Offsets in the root span where the VA jumps: window edges, or the canonical middle."""
    windows = getattr(mode, "windows", ())
    if windows:
        return sorted({lo for lo, _, _ in windows} | {hi for _, hi, _ in windows})
    if mode.canonical:
        return [1 << (mode.va_bits - 1)]
    return []


def vas_of(mode: PagingMode, rel: np.ndarray) -> np.ndarray:
    """VAs of offsets in the root's span (as mode.canonical_va() does for one)."""
    rel = np.asarray(rel, dtype=U64)
    if hasattr(mode, "vas_of"):
        return mode.vas_of(rel)
    if mode.canonical:
        half = U64(1 << (mode.va_bits - 1))
        with np.errstate(over="ignore"):
            return np.where(rel >= half, rel + U64(TOP - (1 << mode.va_bits)), rel)
    with np.errstate(over="ignore"):
        return rel + U64(mode.canonical_va(0) % TOP)


def lines_of(mode: PagingMode, runs: Runs, sections: list[tuple[int, int, str]] | None = None) -> list[Line]:
    """The generic dump's lines from a root's run list (whole arrays; Python only per line)."""
    top = mode.top_span
    n = len(runs)
    if n == 0:
        return []
    starts = runs.start.astype(U64)
    bounds = np.array([b for b in _boundaries(mode) if 0 < b < top], dtype=U64)
    piece = np.union1d(starts, bounds)
    owner = np.searchsorted(starts, piece, side="right") - 1
    keep = owner >= 0
    piece, owner = piece[keep], owner[keep]
    ends_int = np.append(piece[1:], U64(0)).astype(object)
    ends_int[-1] = top
    klevel = runs.klevel[owner].astype(np.int64)
    hw = runs.hw[owner].astype(np.int64)
    val = runs.val[owner].astype(U64)
    present = np.zeros(len(piece), dtype=bool)
    present_fn = mode.extra["present"]
    leaf_klevel = np.array([lvl.klevel for lvl in mode.levels], dtype=np.int64)
    is_event = (klevel != SKIP_KLEVEL) & (klevel > MISSING_BASE) & (klevel == leaf_klevel[hw]) & ~runs.zero[owner]
    for i in range(len(mode.levels)):
        at = is_event & (hw == i)
        if at.any():
            present[at] = present_fn(i, val[at])
    missing = klevel <= MISSING_BASE
    # merge neighbouring pieces of one run that a boundary did not separate in VA terms:
    # pieces exist only at run starts and boundaries, so every piece is its own line
    pick = np.flatnonzero(present | missing)
    if len(pick) == 0:
        return []
    vas = vas_of(mode, piece[pick]).tolist()
    rel = piece[pick].tolist()
    ends_rel = ends_int[pick].tolist()
    out: list[Line] = []
    # output (or missing table) PA of every line's first entry, one classify() per level
    pas = np.zeros(len(pick), dtype=U64)
    for i, lvl in enumerate(mode.levels):
        at = hw[pick] == i
        if at.any():
            _, addr = mode.classify(i, val[pick][at])
            if i != len(mode.levels) - 1:
                addr = np.where(missing[pick][at], addr, addr & ~U64(lvl.entry_span - 1))
            pas[at] = addr
    hw_l, val_l, miss_l, pa_l = hw[pick].tolist(), val[pick].tolist(), missing[pick].tolist(), pas.tolist()
    for k in range(len(pick)):
        lvl = mode.levels[hw_l[k]]
        e = val_l[k]
        a = pa_l[k]
        start = vas[k]
        end = start + (ends_rel[k] - rel[k])
        if miss_l[k]:
            out.append(Line(start, end, lvl.name, e, a, [], missing=True))
        else:
            out.append(Line(start, end, lvl.name, e, a, flag_names(mode, e)))
    if not sections:
        return out
    clipped: list[Line] = []
    for s0, s1, name in sections:
        for ln in out:
            if ln.end <= s0 or ln.start >= s1:
                continue
            s, e = max(ln.start, s0), min(ln.end, s1)
            pa = ln.pa if ln.missing else ln.pa + (s - ln.start)
            clipped.append(Line(s, e, ln.level, ln.entry, pa, ln.flags, name, ln.missing))
    return clipped


def size_text(size: int) -> str:
    """The kernel's ptdump size column (arm64/riscv note_page(): units of 1024, KiB first).

    >>> size_text(8192), size_text(2 << 20)
    ('         8K', '         2M')
    """
    delta = size >> 10
    delta, unit = scaled_size(delta) if delta else (0, "K")
    return f"{delta:10d}{unit}"


def write_text(lines: list[Line], out: TextIO, va_bits: int = 64) -> int:
    """Write the lines (with `---[ section ]---` headers where the section changes)."""
    w = va_bits // 4
    mod = 1 << va_bits
    section = None
    n = 0
    for ln in lines:
        if ln.section and ln.section != section:
            out.write(f"---[ {ln.section} ]---\n")
            section = ln.section
        head = f"0x{ln.start % mod:0{w}x}-0x{ln.end % mod:0{w}x} {size_text(ln.end - ln.start)} "
        if ln.missing:
            out.write(head + f"[table at PA {ln.pa:#x} not in image] {ln.level}\n")
        else:
            out.write(head + f"{ln.level:<4} " + " ".join(ln.flags) + "\n")
        n += 1
    return n


def records(lines: list[Line], mode: PagingMode) -> list[dict]:
    """The lines as `pagewalk.dump` range records."""
    out = []
    for ln in lines:
        rec = {"start": ln.start, "end": ln.end, "size": ln.end - ln.start, "marker": ln.section, "level": ln.level}
        if ln.missing:
            rec["missing_table_pa"] = ln.pa
        else:
            rec.update(pa=ln.pa, prot=ln.entry & mode.ptdump_key_mask, flags=ln.flags, entry=ln.entry)
        out.append(rec)
    return out


def dump(
    mem: MappedMemory,
    mode: PagingMode,
    root_pa: int,
    out: TextIO,
    fmt: str = "text",
    *,
    view: str = "kernel",
    sections: list[tuple[int, int, str]] | None = None,
    va_bits: int = 64,
) -> int:
    """Walk `root_pa` and write the generic dump (text or JSON); returns the lines/records written."""
    lines = lines_of(mode, root_runs(mem, mode, root_pa), sections)
    if fmt != "json":
        return write_text(lines, out, va_bits)
    from ..kernel import write_json_dump

    recs = records(lines, mode)
    return write_json_dump(out, mode, view, root_pa, recs, format="generic")
