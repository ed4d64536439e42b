"""The PhysicalMemory protocol and its file-backed implementation shared by every format."""

from __future__ import annotations

import os
from bisect import bisect_right
from functools import cached_property

# numpy on first use: opening an image and scalar reads do not need it
from .._lazynp import np
from .._record import Record
from ..errors import MemoryReadError


class CpuState(Record):
    """What an image says about the machine: registers, VMCOREINFO, architecture."""

    _fields = ("arch", "regs", "vmcoreinfo", "notes")

    def __init__(
        self,
        arch: str | None = None,
        regs: dict[str, int] | None = None,
        vmcoreinfo: dict[str, str] | None = None,
        notes: list[tuple[str, int, bytes]] | None = None,
    ) -> None:
        self.arch = arch  # "x86_64", "aarch64", ...
        self.regs = {} if regs is None else regs  # lower-case names: cr3, cr4, ...
        self.vmcoreinfo = {} if vmcoreinfo is None else vmcoreinfo
        self.notes = [] if notes is None else notes  # (name, type, desc) as found


def in_ranges(starts: np.ndarray, ends: np.ndarray, pas: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """For sorted ranges starts[i]..ends[i]: the range holding each PA, and whether all `size`
    bytes from it lie in that one range (index 0 where not)."""
    pas = np.asarray(pas, dtype=np.uint64)
    if len(starts) == 0:
        return np.zeros(len(pas), np.int64), np.zeros(len(pas), bool)
    i = np.searchsorted(starts, pas, side="right").astype(np.int64) - 1
    ok = i >= 0
    ic = np.where(ok, i, 0)
    ok &= pas >= starts[ic]
    ok &= pas + np.uint64(size) <= ends[ic]
    return ic, ok


# Bytes of zero rows one gather_tables() call may allocate for tables that no piece of the image
# can hold (a table bigger than every segment: a size computed from corrupt registers or headers)
GATHER_LIMIT = 256 << 20


def check_table_size(pas: np.ndarray, nbytes: int, largest: int) -> None:
    """Refuse to gather tables of `nbytes` that cannot be in the image (larger than its `largest`
    contiguous piece) when their rows of zeros alone would exceed GATHER_LIMIT: a clear error
    instead of an allocation of gigabytes."""
    if nbytes > largest and len(pas) * nbytes > GATHER_LIMIT:
        raise MemoryReadError(
            int(pas[0]), nbytes, f"a table of {nbytes:#x} bytes, larger than any memory in the image: corrupt registers?"
        )


def __getattr__(name: str):
    if name == "PhysicalMemory":  # typing's Protocol: loaded on first use (PEP 562), not on start-up
        from .protocol import PhysicalMemory

        return PhysicalMemory
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# gather_tables() reads tables adjacent in the file with one pread() straight into the rows; items
# smaller than _PREAD_SMALL bytes (gather()'s entries) also when at most _PREAD_GAP bytes apart,
# into buffers of at most _PREAD_SPAN bytes (a pread costs about what copying 16-64 KiB does;
# measured: a gap allowance makes table reads slower, entry reads up to 10 times faster)
_PREAD_SMALL = 256
_PREAD_GAP = 64 << 10
_PREAD_SPAN = 4 << 20


def _pread_into(fd: int, buf: memoryview, offset: int) -> int:
    """pread() into all of `buf` from `offset`, across short reads; the bytes read (fewer at EOF)."""
    done = 0
    while done < len(buf):
        k = os.preadv(fd, [buf[done:]], offset + done)
        if k <= 0:
            break
        done += k
    return done


class MappedMemory:
    """Physical memory served from one file through a sorted segment list.

    `seg_pa[i]`..`seg_end[i]` lives at file offset `seg_off[i]`. Every read is a pread() of the
    bytes asked for (tables nearby in the file: one pread for many), never a mapping of the
    file: the page cache maps its large folios whole, so reading a table through a mapping
    would keep megabytes of the file in the process's RSS. Scalar access (read, contains,
    runs) goes through the sorted segment list with bisect and never imports numpy; the numpy
    arrays of the segments are built on first vectorised use. (The name stays from when the
    file was mmapped.)
    """

    def __init__(self, path: str, segments: list[tuple[int, int, int]], cpu: CpuState | None = None):
        self.path = path
        self._file = open(path, "rb")
        size = self._file.seek(0, 2)
        self.file_size = size
        segs = sorted((pa, n, off) for pa, n, off in segments if n > 0)
        self._segs = segs
        self._seg_starts = [s[0] for s in segs]  # bisect keys of the scalar path
        self.cpu = cpu or CpuState()
        self._closed = False

    # the segment list as numpy arrays, for the vectorised paths (built on first use)
    @cached_property
    def seg_pa(self) -> np.ndarray:
        return np.array([s[0] for s in self._segs], dtype=np.uint64)

    @cached_property
    def seg_end(self) -> np.ndarray:
        return np.array([s[0] + s[1] for s in self._segs], dtype=np.uint64)

    @cached_property
    def seg_off(self) -> np.ndarray:
        return np.array([s[2] for s in self._segs], dtype=np.int64)

    def _segment(self, pa: int) -> int:
        """Index of the segment that starts at or below `pa` (-1: none), as np.searchsorted(seg_pa,
        np.uint64(pa), side="right") - 1 gives it."""
        if not 0 <= pa < 1 << 64:
            np.uint64(pa)  # the OverflowError the vectorised lookup raises for such a PA
        return bisect_right(self._seg_starts, pa) - 1

    def _pread(self, off: int, n: int) -> bytes:
        """`n` bytes of the file at `off`, read with pread(): no mapped page stays behind (a page
        cache large folio is mapped whole: a few scalar reads through the mapping would keep
        megabytes each). As slicing the mapping: fewer bytes at the end of the file."""
        if self._closed:
            raise ValueError("read of closed file")
        if n <= 0 or off >= self.file_size:
            return b""
        data = os.pread(self._file.fileno(), n, off)
        if len(data) < n and off + len(data) < self.file_size:
            data += self._pread(off + len(data), n - len(data))  # a short read before EOF
        return data

    # -- scalar access ---------------------------------------------------------------------
    def runs(self) -> list[tuple[int, int]]:
        """(first PA, end PA) of every contiguous piece of physical memory the image holds."""
        out: list[tuple[int, int]] = []
        for pa, n, _ in self._segs:
            if out and out[-1][1] == pa:
                out[-1] = (out[-1][0], pa + n)
            else:
                out.append((pa, pa + n))
        return out

    def _locate(self, pa: int, size: int) -> int:
        i = self._segment(pa)
        if i < 0:
            raise MemoryReadError(pa, size)
        seg_pa, seg_n, seg_off = self._segs[i]
        if pa + size > seg_pa + seg_n:
            # A read may straddle two adjacent segments; callers that need that use read().
            raise MemoryReadError(pa, size)
        return seg_off + (pa - seg_pa)

    def contains(self, pa: int, size: int = 1) -> bool:
        try:
            self._locate(pa, size)
        except MemoryReadError:
            return False
        return True

    def read(self, pa: int, size: int) -> bytes:
        """`size` bytes at `pa`, across segment boundaries where they are contiguous."""
        out = bytearray()
        while size > 0:
            i = self._segment(pa)
            if i < 0:
                raise MemoryReadError(pa, size)
            seg_pa, seg_n, seg_off = self._segs[i]
            if pa >= seg_pa + seg_n:
                raise MemoryReadError(pa, size)
            n = min(size, seg_pa + seg_n - pa)
            off = seg_off + (pa - seg_pa)
            out += self._pread(off, n)
            pa += n
            size -= n
        return bytes(out)

    def read_u64(self, pa: int, byteorder: str = "<") -> int:
        return int.from_bytes(self.read(pa, 8), "little" if byteorder == "<" else "big")

    # -- typed, vectorised access ------------------------------------------------------------
    def table(self, pa: int, count: int, dtype: np.dtype) -> np.ndarray:
        """`count` entries of `dtype` at `pa` as a read-only array (MemoryReadError if absent)."""
        dtype = np.dtype(dtype)
        return np.frombuffer(self._table_bytes(pa, count * dtype.itemsize), dtype=dtype, count=count)

    def table_bytes(self, pa: int, nbytes: int) -> bytes:
        """The bytes of `table(pa, ...)` (`nbytes` in one segment, else MemoryReadError), without numpy."""
        return self._table_bytes(pa, nbytes)

    def _table_bytes(self, pa: int, nbytes: int) -> bytes:
        data = self._pread(self._locate(pa, nbytes), nbytes)
        if len(data) < nbytes:
            raise MemoryReadError(pa, nbytes)  # a segment past the end of the file
        return data

    def file_offsets(self, pas: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """File offsets of many PAs, and whether `size` bytes from each lie in one segment."""
        pas = np.asarray(pas, dtype=np.uint64)
        ic, ok = in_ranges(self.seg_pa, self.seg_end, pas, size)
        if len(self.seg_pa) == 0:
            return ic, ok
        off = self.seg_off[ic] + (pas - self.seg_pa[ic]).astype(np.int64)
        return np.where(ok, off, 0), ok

    def gather_tables(self, pas: np.ndarray, count: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """Many tables at once: a (len(pas), count) array and a mask of the tables the image holds.

        Missing tables come back as rows of zeros with mask False (so do tables of a segment the
        file does not back). The bytes are pread() into the rows, tables adjacent in the file
        with one call: memory is the rows, whatever the image's size.
        """
        dtype = np.dtype(dtype)
        nbytes = count * dtype.itemsize
        largest = int((self.seg_end - self.seg_pa).max()) if len(self.seg_pa) else 0
        check_table_size(np.asarray(pas), nbytes, largest)
        off, ok = self.file_offsets(pas, nbytes)
        out = np.zeros((len(off), count), dtype)
        rows = np.flatnonzero(ok)
        if len(rows) == 0 or nbytes == 0:
            return out, ok
        o = off[rows]
        if len(o) > 1 and not bool((o[1:] >= o[:-1]).all()):
            order = np.argsort(o)  # (rows are distinct: no need of a stable sort)
            o, rows = o[order], rows[order]
        short = self._pread_rows(out.view(np.uint8), rows, o)
        if short is not None:
            ok = ok.copy()
            ok[short] = False  # past the end of the file (a segment list the file does not back)
        return out, ok

    def _pread_rows(self, out: np.ndarray, rows: np.ndarray, off: np.ndarray) -> np.ndarray | None:
        """Fill the byte rows `out[rows[k]]` from file offsets `off[k]` (sorted ascending), with
        one pread per group of nearby offsets. Returns the rows the file could not fill whole
        (left zero), or None."""
        fd = self._file.fileno()
        n, nbytes = len(off), out.shape[1]
        flat = out.reshape(-1)
        # a group goes on while the next offset is at most gap_max bytes past the last end
        gap_max = _PREAD_GAP if nbytes < _PREAD_SMALL else 0
        gap = np.empty(n, np.int64)
        gap[0] = gap_max + 1
        gap[1:] = off[1:] - off[:-1] - nbytes
        starts = np.flatnonzero(gap > gap_max)
        ends = np.empty(len(starts), np.int64)
        ends[:-1] = starts[1:]
        ends[-1] = n
        # groups read straight into `out`: tables adjacent in the file going to consecutive rows
        link = np.ones(n, bool)
        link[1:] = (gap[1:] == 0) & (rows[1:] == rows[:-1] + 1)
        link[starts] = True
        bad = np.cumsum(~link)
        direct = bad[ends - 1] == bad[starts]
        row_t = np.dtype((np.void, nbytes))
        out_v = out.reshape(-1).view(row_t)  # one item a row
        short: list[int] = []
        for a, b, d, first, r0 in zip(
            starts.tolist(), ends.tolist(), direct.tolist(), off[starts].tolist(), rows[starts].tolist()
        ):
            if d:
                r1 = r0 + b - a
                got = _pread_into(fd, memoryview(flat[r0 * nbytes : r1 * nbytes]), first)
                if got < (r1 - r0) * nbytes:
                    r = r0 + got // nbytes
                    flat[r * nbytes : r1 * nbytes] = 0
                    short.extend(range(r, r1))
                continue
            # nearby but not placeable directly (gaps, duplicates, rows out of order): read the
            # span in buffers of at most _PREAD_SPAN bytes and copy the rows out of each
            while a < b:
                first = int(off[a])
                c = b
                if int(off[b - 1]) + nbytes - first > _PREAD_SPAN:
                    c = a + max(1, int(np.searchsorted(off[a:b], first + _PREAD_SPAN - nbytes, side="right")))
                buf = np.empty(int(off[c - 1]) + nbytes - first, np.uint8)
                got = _pread_into(fd, memoryview(buf), first)
                rel = off[a:c] - first
                dst = rows[a:c]
                whole = rel + nbytes <= got
                if not whole.all():
                    short.extend(dst[~whole].tolist())
                    rel, dst = rel[whole], dst[whole]
                # every byte offset of the buffer as the start of one row: a row is one item
                starts_v = np.ndarray((len(buf) - nbytes + 1,), row_t, buffer=buf, strides=(1,))
                out_v[dst] = starts_v[rel]
                a = c
        return np.array(short, np.int64) if short else None

    def gather(self, pas: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """One value of `dtype` at each PA, and whether the image holds it."""
        t, ok = self.gather_tables(pas, 1, dtype)
        return t[:, 0], ok

    def release(self) -> None:
        """Drop what reading kept from the process's memory: nothing here, every read was a
        pread() into memory its caller owns (formats that cache pages drop them)."""

    def close(self) -> None:
        self._closed = True
        self._file.close()

    def __enter__(self) -> "MappedMemory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
