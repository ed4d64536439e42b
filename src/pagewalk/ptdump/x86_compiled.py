"""The compiled x86-64 ptdump: `format_fast(mode, iter_runs(...), layout, out)` without numpy.

`pagewalk._x86dump` (src/pagewalk/_x86dump.c) walks the tables, keeps the run lists of shared
tables as runs.py does, and runs note_page() of arch/x86/mm/dump_pagetables.c over them, writing
the text in chunks. This module gives it the mode, the memory, the ranges and markers in the
root's offset space (as `vector.BreakStream` does), and returns what format_fast() returns. It
imports nothing heavy: with it, `pagewalk dump` of an x86-64 kernel never loads numpy, whose
import alone takes longer than the whole walk of a million pages (README "How it is fast").

Tests hold it equal to the numpy path on every x86-64 capture, on random tables and on hostile
images (tests/test_x86_compiled.py). PAGEWALK_NO_COMPILED=1 in the environment turns it off.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up: README "How it is fast")
if TYPE_CHECKING:
    from typing import TextIO

from ..errors import RootError, run_limit_error

try:
    from .. import _x86dump
except ImportError:  # built without a C compiler: the numpy path serves
    _x86dump = None

MAX_WX_RANGES = 1 << 16  # ptdump.x86.MAX_WX_RANGES: W+X ranges listed; beyond, only counted
DEFAULT_MAX_STREAM_RUNS = 1 << 25  # runs.MAX_STREAM_RUNS's default (a test holds them equal)


class Result:
    """What format_fast() returns that callers use: lines written and the W+X accounting."""

    def __init__(self, ranges_written: int, wx_pages: int, wx_ranges: list[tuple[int, int]], wx_ranges_dropped: int):
        self.ranges_written = ranges_written
        self.wx_pages = wx_pages
        self.wx_ranges = wx_ranges
        self.wx_ranges_dropped = wx_ranges_dropped


def available(mode, layout) -> bool:
    """Whether the compiled path serves this mode: x86-64 4- and 5-level paging, when built."""
    return (
        _x86dump is not None
        and not os.environ.get("PAGEWALK_NO_COMPILED")
        and mode.extra.get("paging") in ("4level", "5level")
        and getattr(layout, "bits", None) == 64  # ptdump.x86.Layout (x86-64), not Layout32
    )


def _memory(mem):
    """The memory as the engine reads it: the file and its segments, or a table reader."""
    from ..memory.base import MappedMemory

    direct = (
        isinstance(mem, MappedMemory)
        and type(mem).gather_tables is MappedMemory.gather_tables
        and type(mem).file_offsets is MappedMemory.file_offsets
    )
    if direct:
        # tables are pread() from the file: no mapped pages count against the process
        return (mem._file.fileno(), list(mem._segs), False)

    def read_table(pa: int) -> bytes | None:
        import numpy as np

        rows, ok = mem.gather_tables(np.array([pa], np.uint64), 512, np.dtype("<u8"))
        return rows[0].tobytes() if ok[0] else None

    return read_table


_ASCII_SUPERSETS = {"utf-8", "utf8", "ascii", "us-ascii", "latin-1", "iso8859-1", "iso-8859-1", "cp1252"}


def _writer(out: TextIO | None):
    """(write, binary): a text file's byte buffer where it has one (its text layer flushed first;
    the dump is ASCII), else its own write()."""
    if out is None:
        return None, False
    buffer = getattr(out, "buffer", None)
    encoding = (getattr(out, "encoding", None) or "").lower()
    if buffer is not None and encoding in _ASCII_SUPERSETS and hasattr(buffer, "write"):
        out.flush()
        return buffer.write, True
    return out.write, False


def run(
    mem, mode, root: int, layout, out: TextIO | None, check_wx: bool = False, max_runs: int | None = -1
) -> Result:
    """The ptdump text of the table at `root` to `out` (None: W+X accounting only).

    `max_runs` as runs.iter_runs(): -1 for runs.MAX_STREAM_RUNS, 0 or None for no limit.
    """
    if not available(mode, layout):
        raise ValueError(f"the compiled ptdump serves x86-64 4/5-level paging, not {mode.name}")
    if max_runs == -1:
        max_runs = stream_limit()
    levels = [(lvl.shift, lvl.klevel, lvl.hole_depth) for lvl in mode.levels]
    ranges = [mode.span_range(r_start, r_end) for r_start, r_end in layout.ranges()]
    markers = [(mode.span_offset(m_va), name, max_lines) for m_va, name, max_lines in layout.markers()]
    write, binary = _writer(out)
    try:
        written, wx_pages, wx_ranges, dropped = _x86dump.x86_ptdump(
            _memory(mem), root, levels, mode.va_bits, ranges, markers, write, check_wx, max_runs or 0, MAX_WX_RANGES,
            binary,
        )
    except OverflowError:
        raise run_limit_error(max_runs) from None
    except LookupError as e:
        raise RootError(str(e)) from None
    return Result(written, wx_pages, [tuple(r) for r in wx_ranges], dropped)


def stream_limit() -> int:
    """runs.MAX_STREAM_RUNS as a front end set it (`--max-runs`), without importing runs.py (numpy)
    when nothing did: then it is still its default."""
    runs = sys.modules.get("pagewalk.runs")
    return runs.MAX_STREAM_RUNS if runs is not None else DEFAULT_MAX_STREAM_RUNS
