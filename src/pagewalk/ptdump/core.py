"""The generic ptdump driver: the kernel's note_page() event stream, one event per run.

mm/ptdump.c calls note_page(addr, level, val) for every leaf, every PTE slot and every hole,
in address order, per `ptdump_range`, then flushes with note_page(0, -1, 0). An architecture's
note_page() only acts when the state changes or an address marker is reached, so events equal
to the current state can be dropped. `drive()` therefore feeds one event per run, plus the
event the kernel would deliver at the first entry at or after each address marker inside a run
(markers are where the kernel splits runs that are otherwise equal).
"""

from __future__ import annotations

import bisect
from typing import Iterator, Protocol

from ..bits import align_up
from ..mode import PagingMode
from ..runs import SKIP_KLEVEL, Runs

TOP = 1 << 64


class NoteState(Protocol):
    """An architecture's note_page() state machine."""

    def note(self, va: int, level: int, val: int, key: int, eff: int) -> None: ...

    def next_marker(self) -> int | None:
        """Start address of the marker the next event may cross (None when there is none)."""
        ...

    def flush(self) -> None: ...


class MarkerState:
    """What every note_page() port shares: its output and the address marker ahead of it.

    Subclasses set `markers` ((start, name, ...) in the kernel's array order, END last), `marker`
    (index of the current one), `level` (-1 before the first event) and `out`.
    """

    markers: list
    marker: int
    level: int
    out: object

    def _print(self, s: str) -> None:
        if self.out is not None:
            self.out.write(s)

    def next_marker(self) -> int | None:
        if self.level == -1 or self.marker + 1 >= len(self.markers):
            return None
        return self.markers[self.marker + 1][0]


def run_extents(mode: PagingMode, runs: Runs) -> Iterator[tuple[int, int, int, int, int, int, int]]:
    """(va, end, klevel, val, key, eff, entry_span) of every run, canonical VAs, in address order.

    A run that crosses the middle of the root's span is split there: the two halves of a
    canonical address space are not adjacent.
    """
    half = 1 << (mode.va_bits - 1)
    top = 1 << mode.va_bits
    high = TOP - top if mode.canonical else 0
    # a mode whose VAs are an offset from a base (arm64's TTBR1 region is the top 2^va_bits)
    base = 0 if mode.canonical else mode.canonical_va(0)
    starts = runs.start.tolist()
    klevel = runs.klevel.tolist()
    val = runs.val.tolist()
    key = runs.key.tolist()
    eff = runs.eff.tolist()
    spans = [1 << lvl.shift for lvl in mode.levels]
    hw = runs.hw.tolist()
    n = len(starts)
    for k in range(n):
        if klevel[k] == SKIP_KLEVEL:
            continue  # no event in entries the kernel skips; the previous run goes on over them
        s = starts[k]
        e = starts[k + 1] if k + 1 < n else top
        span = spans[hw[k]]
        if mode.canonical and s < half < e:
            yield s, half, klevel[k], val[k], key[k], eff[k], span
            s = half
        if mode.canonical and s >= half:
            yield s + high, (e + high) if e < top else TOP, klevel[k], val[k], key[k], eff[k], span
        else:
            yield base + s, base + e, klevel[k], val[k], key[k], eff[k], span


def drive(state: NoteState, mode: PagingMode, runs: Runs, ranges: list[tuple[int, int]]) -> None:
    """Feed `state` the note_page() events of walking `ranges` (ptdump_walk_pgd), then flush."""
    extents = list(run_extents(mode, runs))
    starts = [x[0] for x in extents]
    for r_start, r_end in ranges:
        k = max(0, bisect.bisect_right(starts, r_start) - 1)
        while k < len(extents):
            s, e, klevel, val, key, eff, span = extents[k]
            if s >= r_end:
                break
            k += 1
            if e <= r_start:
                continue
            va = max(s, r_start)
            end = min(e, r_end)
            state.note(va, klevel, val, key, eff)
            last = va
            while True:
                m = state.next_marker()
                if m is None or m >= end:
                    break
                p = max(align_up(m, span), last + span)
                if p >= end:
                    break
                state.note(p, klevel, val, key, eff)
                last = p
    state.flush()
