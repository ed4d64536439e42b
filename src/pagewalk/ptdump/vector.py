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

`BreakStream` does this a chunk of runs at a time (`runs.iter_runs()`), carrying what crosses a
chunk boundary: the state of the last event (a line starts only where it changes), the next
marker and the earliest entry it may fire at. `breaks()` is the same over one whole run list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..mode import PagingMode
from ..runs import SKIP_KLEVEL, Runs, with_ends

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


def to_va(mode: PagingMode, off: np.ndarray) -> np.ndarray:
    """Offsets back to canonical VAs (uint64; the top of the space wraps to 0, as in the kernel)."""
    if not mode.canonical:
        return off
    half = U(1 << (mode.va_bits - 1))
    high = U(((1 << 64) - (1 << mode.va_bits)) & ((1 << 64) - 1))
    with np.errstate(over="ignore"):
        return np.where(off >= half, off + high, off)


@dataclass
class Lines:
    """Line starts found in one chunk: offsets, their state, and the marker each one fires (0: none)."""

    start: np.ndarray  # uint64 offsets in the root table's span
    klevel: np.ndarray
    key: np.ndarray
    eff: np.ndarray
    val: np.ndarray
    fire: np.ndarray  # int64: index of the marker that fires at this line's start, 0 for none


class BreakStream:
    """`breaks()` a chunk at a time: feed (runs, end) pairs in VA order, get `Lines` back.

    Carried across chunks: the last event's (klevel, key, eff), the next marker to fire and the
    first offset it may fire at (one marker per event, as x86's note_page() advances them).
    After the last chunk, `marker_at` holds, per marker i >= 1, the offset where it fired (None:
    never).
    """

    def __init__(self, mode: PagingMode, ranges: list[tuple[int, int]], markers: list[int], eff_if_zero: bool = True):
        self.mode = mode
        self.top = top = 1 << mode.va_bits
        self.spans = np.array([1 << lvl.shift for lvl in mode.levels], dtype=U)
        self.ranges = [mode.span_range(r_start, r_end) for r_start, r_end in ranges]
        self.marker_off = [mode.span_offset(m) for m in markers[1:]]
        self.marker_at: list[int | None] = []
        self.eff_if_zero = eff_if_zero
        self.q_min: int | None = None
        self.prev: tuple[int, int, int] | None = None

    def _events(self, runs: Runs, end: int):
        s = runs.start
        e = np.empty_like(s)
        e[:-1] = s[1:]
        e[-1] = U(end)
        if self.mode.canonical:
            half = U(self.top >> 1)
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
        lo, hi = int(s[0]), end
        for rs, re in self.ranges:
            if re <= lo or rs >= hi:
                continue
            sel = (e > U(rs)) & (s < U(re))
            idx = np.nonzero(sel)[0]
            if len(idx) == 0:
                continue
            parts.append((idx, np.maximum(s[idx], U(rs)), np.minimum(e[idx], U(re))))
        if not parts:
            return None
        if len(parts) == 1:
            idx, ev_s, ev_e = parts[0]
        else:
            idx = np.concatenate([p[0] for p in parts])
            ev_s = np.concatenate([p[1] for p in parts])
            ev_e = np.concatenate([p[2] for p in parts])
        # entries the kernel skips make no event: drop them (their extent stays a gap between events)
        real = runs.klevel[idx] != SKIP_KLEVEL
        if not real.all():
            idx, ev_s, ev_e = idx[real], ev_s[real], ev_e[real]
            if len(idx) == 0:
                return None
        return runs, idx, ev_s, ev_e

    def feed(self, runs: Runs, end: int) -> Lines | None:
        """The lines that start in this chunk (None: it makes no event)."""
        ev = self._events(runs, end)
        if ev is None:
            return None
        runs, idx, ev_s, ev_e = ev
        klevel = runs.klevel[idx]
        key = runs.key[idx]
        val = runs.val[idx]
        eff = runs.eff[idx]
        if self.eff_if_zero:
            eff = np.where(val == 0, U(0), eff)
        span = self.spans[runs.hw[idx]]
        n = len(ev_s)
        top = self.top
        # markers: the first entry at or after each, one per event
        if self.q_min is None:
            self.q_min = int(ev_s[0]) + 1
        fired_pos: list[int] = []
        fired_idx: list[int] = []
        while len(self.marker_at) < len(self.marker_off):
            q = max(self.marker_off[len(self.marker_at)], self.q_min)
            if q >= top:
                self.marker_at += [None] * (len(self.marker_off) - len(self.marker_at))
                break
            k = int(np.searchsorted(ev_e, U(q), side="right"))
            if k >= n:
                break  # not in this chunk: it fires in a later one, or never
            st = int(ev_s[k])
            if q <= st:
                p = st
            else:
                sp = int(span[k])
                p = (q + sp - 1) & ~(sp - 1)
                if p >= int(ev_e[k]):
                    if k + 1 >= n:
                        break  # at the next event: the first of a later chunk
                    p = int(ev_s[k + 1])
            self.marker_at.append(p)
            fired_pos.append(p)
            fired_idx.append(len(self.marker_at))
            self.q_min = p + 1
        # state changes between consecutive events (the kernel's coalescing rule)
        change = np.ones(n, dtype=bool)
        change[1:] = (klevel[1:] != klevel[:-1]) | (key[1:] != key[:-1]) | (eff[1:] != eff[:-1])
        if self.prev is not None:
            change[0] = (int(klevel[0]), int(key[0]), int(eff[0])) != self.prev
        self.prev = (int(klevel[-1]), int(key[-1]), int(eff[-1]))
        starts = ev_s[change]
        fire = np.zeros(len(starts), np.int64)
        if fired_pos:
            fp = np.array(fired_pos, dtype=U)
            starts = np.concatenate([starts, fp])
            fire = np.concatenate([fire, np.array(fired_idx, np.int64)])
            order = np.argsort(starts, kind="stable")
            starts, fire = starts[order], fire[order]
            # a marker firing where the state changes too: one line, the marker's
            dup = np.zeros(len(starts), dtype=bool)
            dup[:-1] = starts[:-1] == starts[1:]
            fire[1:][dup[:-1]] = np.maximum(fire[1:][dup[:-1]], fire[:-1][dup[:-1]])
            starts, fire = starts[~dup], fire[~dup]
        owner = np.searchsorted(ev_s, starts, side="right") - 1
        return Lines(starts, klevel[owner], key[owner], eff[owner], val[owner], fire)

    def finish(self) -> None:
        """After the last chunk: markers not fired yet never fire."""
        self.marker_at += [None] * (len(self.marker_off) - len(self.marker_at))


def breaks(
    mode: PagingMode, runs: Runs, ranges: list[tuple[int, int]], markers: list[int], eff_if_zero: bool = True
) -> Breaks:
    """Line starts of a ptdump over `ranges` with address `markers` (marker 0 is the first header)."""
    bs = BreakStream(mode, ranges, markers, eff_if_zero)
    got = [ln for r, end in with_ends(mode, runs) if (ln := bs.feed(r, end)) is not None]
    bs.finish()
    if not got:
        empty = np.zeros(0, U)
        return Breaks(empty, np.zeros(0, np.int8), empty, empty, empty, bs.marker_at)
    return Breaks(*(np.concatenate([getattr(g, c) for g in got]) for c in ("start", "klevel", "key", "eff", "val")), bs.marker_at)
