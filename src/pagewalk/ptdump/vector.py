"""The ptdump event stream as arrays: every note_page() break of a walk, computed with numpy.

`drive()` in core.py feeds an architecture's note_page() one event at a time; that is the
reference, and fine for a kernel's few thousand runs. A table set with a million runs needs the
same answer without a Python call per run. For state machines of the x86/arm64 shape — a break
when (level, key, effective) changes or when the next address marker is reached, one marker per
event — the breaks can be found for all runs at once:

1. runs → events clipped to the `ptdump_range`s, in the root table's offset space (no 2^64
   overflow; canonical addresses are made only for printing);
2. a marker fires at the first entry at or after it, and not before the entry after the previous
   marker fired (x86 advances one marker per note_page() call);
3. lines start where the state changes or a marker fires; each ends where the next starts, the
   last one at the final flush (address 0, as note_page(st, 0, -1, 0) prints it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..mode import PagingMode
from ..runs import SKIP_KLEVEL, Runs

U = np.uint64


@dataclass
class Breaks:
    """Lines of a ptdump: start offsets, their state, and where each marker fired."""

    start: np.ndarray  # uint64 offsets in the root table's span
    klevel: np.ndarray
    key: np.ndarray
    eff: np.ndarray
    val: np.ndarray
    marker_at: list[int | None]  # per marker i >= 1: the offset where it fired (None: never)


def to_offset(mode: PagingMode, va: int) -> int:
    """A VA (or marker address, possibly non-canonical) in the root table's offset space."""
    top = 1 << mode.va_bits
    if not mode.canonical:
        return min(va, top)
    half = top >> 1
    if va < half:
        return va
    if va < (1 << 64) - half:
        return half  # in the non-canonical gap: the upper half starts here
    return va - ((1 << 64) - top)


def to_va(mode: PagingMode, off: np.ndarray) -> np.ndarray:
    """Offsets back to canonical VAs (uint64; the top of the space wraps to 0, as in the kernel)."""
    if not mode.canonical:
        return off
    half = U(1 << (mode.va_bits - 1))
    high = U(((1 << 64) - (1 << mode.va_bits)) & ((1 << 64) - 1))
    with np.errstate(over="ignore"):
        return np.where(off >= half, off + high, off)


def breaks(
    mode: PagingMode, runs: Runs, ranges: list[tuple[int, int]], markers: list[int], eff_if_zero: bool = True
) -> Breaks:
    """Line starts of a ptdump over `ranges` with address `markers` (marker 0 is the first header)."""
    top = 1 << mode.va_bits
    spans = np.array([1 << lvl.shift for lvl in mode.levels], dtype=U)
    s = runs.start
    e = np.empty_like(s)
    if len(s):
        e[:-1] = s[1:]
        e[-1] = top
    if mode.canonical:
        half = U(top >> 1)
        inside = (s < half) & (e > half)
        if inside.any():  # the two halves are not adjacent: split a run that spans the middle
            k = int(np.nonzero(inside)[0][0]) + 1
            s = np.insert(s, k, half)
            e = np.insert(e, k, e[k - 1])
            e[k - 1] = half
            runs = Runs(
                runs.off, s,
                np.insert(runs.klevel, k, runs.klevel[k - 1]), np.insert(runs.hw, k, runs.hw[k - 1]),
                np.insert(runs.val, k, runs.val[k - 1]), np.insert(runs.key, k, runs.key[k - 1]),
                np.insert(runs.eff, k, runs.eff[k - 1]), np.insert(runs.zero, k, runs.zero[k - 1]),
            )
    parts = []
    for r_start, r_end in ranges:
        rs = to_offset(mode, r_start)
        re = top if r_end >= (1 << 64) - 1 else to_offset(mode, r_end)
        sel = (e > U(rs)) & (s < U(re))
        idx = np.nonzero(sel)[0]
        if len(idx) == 0:
            continue
        cs = np.maximum(s[idx], U(rs))
        ce = np.minimum(e[idx], U(re))
        parts.append((idx, cs, ce))
    if not parts:
        empty = np.zeros(0, U)
        return Breaks(empty, np.zeros(0, np.int8), empty, empty, empty, [None] * (len(markers) - 1))
    idx = np.concatenate([p[0] for p in parts])
    ev_s = np.concatenate([p[1] for p in parts])
    ev_e = np.concatenate([p[2] for p in parts])
    # entries the kernel skips make no event: drop them (their extent stays a gap between events)
    real = runs.klevel[idx] != SKIP_KLEVEL
    if not real.all():
        idx, ev_s, ev_e = idx[real], ev_s[real], ev_e[real]
        if len(idx) == 0:
            empty = np.zeros(0, U)
            return Breaks(empty, np.zeros(0, np.int8), empty, empty, empty, [None] * (len(markers) - 1))
    klevel = runs.klevel[idx]
    key = runs.key[idx]
    val = runs.val[idx]
    eff = runs.eff[idx]
    if eff_if_zero:
        eff = np.where(val == 0, U(0), eff)
    span = spans[runs.hw[idx]]
    # markers: the first entry at or after each, one per event
    fired: list[int | None] = []
    q_min = int(ev_s[0]) + 1
    n = len(ev_s)
    for m in markers[1:]:
        q = max(to_offset(mode, m), q_min)
        k = int(np.searchsorted(ev_e, U(q), side="right")) if q < top else n
        if k >= n:
            fired.append(None)
            q_min = top + 1
            continue
        st = int(ev_s[k])
        if q <= st:
            p = st
        else:
            sp = int(span[k])
            p = (q + sp - 1) & ~(sp - 1)
            if p >= int(ev_e[k]):
                if k + 1 >= n:
                    fired.append(None)
                    q_min = top + 1
                    continue
                p = int(ev_s[k + 1])
        fired.append(p)
        q_min = p + 1
    # state changes between consecutive events (the kernel's coalescing rule)
    change = np.ones(n, dtype=bool)
    change[1:] = (klevel[1:] != klevel[:-1]) | (key[1:] != key[:-1]) | (eff[1:] != eff[:-1])
    starts = ev_s[change]
    fire_pos = np.array([p for p in fired if p is not None], dtype=U)
    if len(fire_pos):
        starts = np.sort(np.concatenate([starts, fire_pos]))
        keep = np.ones(len(starts), dtype=bool)
        keep[1:] = starts[1:] != starts[:-1]
        starts = starts[keep]
    owner = np.searchsorted(ev_s, starts, side="right") - 1
    return Breaks(starts, klevel[owner], key[owner], eff[owner], val[owner], fired)
