"""The PhysicalMemory protocol and its mmap-backed implementation shared by every format."""

from __future__ import annotations

import mmap
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


class MappedMemory:
    """Physical memory served from one mmapped file through a sorted segment list.

    `seg_pa[i]`..`seg_end[i]` lives at file offset `seg_off[i]`. Reads never copy more than
    asked; tables come back as numpy views of the mapping. Scalar access (read, contains, runs)
    goes through the sorted segment list with bisect and never imports numpy; the numpy arrays
    of the segments are built on first vectorised use.
    """

    def __init__(self, path: str, segments: list[tuple[int, int, int]], cpu: CpuState | None = None):
        self.path = path
        self._file = open(path, "rb")
        size = self._file.seek(0, 2)
        self.file_size = size
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        if self._mm is not None and hasattr(mmap, "MADV_RANDOM"):
            # tables are scattered: no read-ahead around each one (it would only fill memory)
            self._mm.madvise(mmap.MADV_RANDOM)
        segs = sorted((pa, n, off) for pa, n, off in segments if n > 0)
        self._segs = segs
        self._seg_starts = [s[0] for s in segs]  # bisect keys of the scalar path
        self.cpu = cpu or CpuState()
        self._views: dict[str, np.ndarray] = {}
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

    @cached_property
    def _bytes(self) -> np.ndarray:
        """The whole file as bytes (zero-copy)."""
        if self._mm is None or self._closed:
            return np.zeros(0, np.uint8)
        return np.frombuffer(self._mm, dtype=np.uint8)

    def _segment(self, pa: int) -> int:
        """Index of the segment that starts at or below `pa` (-1: none), as np.searchsorted(seg_pa,
        np.uint64(pa), side="right") - 1 gives it."""
        if not 0 <= pa < 1 << 64:
            np.uint64(pa)  # the OverflowError the vectorised lookup raises for such a PA
        return bisect_right(self._seg_starts, pa) - 1

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
            out += self._mm[off : off + n]
            pa += n
            size -= n
        return bytes(out)

    def read_u64(self, pa: int, byteorder: str = "<") -> int:
        return int.from_bytes(self.read(pa, 8), "little" if byteorder == "<" else "big")

    # -- typed, vectorised access ------------------------------------------------------------
    def _typed(self, dtype: np.dtype, phase: int) -> np.ndarray:
        """The whole file as an array of `dtype` starting at byte `phase` (zero-copy)."""
        key = f"{dtype.str}/{phase}"
        v = self._views.get(key)
        if v is None:
            n = (self.file_size - phase) // dtype.itemsize
            v = np.frombuffer(self._mm, dtype=dtype, count=n, offset=phase) if n > 0 else np.zeros(0, dtype)
            self._views[key] = v
        return v

    def table(self, pa: int, count: int, dtype: np.dtype) -> np.ndarray:
        """`count` entries of `dtype` at `pa` as a read-only view (MemoryReadError if absent)."""
        dtype = np.dtype(dtype)
        off = self._locate(pa, count * dtype.itemsize)
        return np.frombuffer(self._mm, dtype=dtype, count=count, offset=off)

    def table_bytes(self, pa: int, nbytes: int) -> bytes:
        """The bytes of `table(pa, ...)` (`nbytes` in one segment, else MemoryReadError), without numpy."""
        off = self._locate(pa, nbytes)
        return self._mm[off : off + nbytes]

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

        Missing tables come back as rows of zeros with mask False.
        """
        dtype = np.dtype(dtype)
        isz = dtype.itemsize
        largest = int((self.seg_end - self.seg_pa).max()) if len(self.seg_pa) else 0
        check_table_size(np.asarray(pas), count * isz, largest)
        off, ok = self.file_offsets(pas, count * isz)
        if len(off) == 0:
            return np.zeros((0, count), dtype), ok
        phase = off % isz
        out = np.zeros((len(off), count), dtype)
        for ph in sorted(set(phase[ok].tolist())):  # (np.unique would import numpy.ma: ~20 ms)
            sel = ok & (phase == ph)
            view = self._typed(dtype, int(ph))
            idx = (off[sel] - ph) // isz
            out[sel] = view[idx[:, None] + np.arange(count)]
        return out, ok

    def gather(self, pas: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """One value of `dtype` at each PA, and whether the image holds it."""
        t, ok = self.gather_tables(pas, 1, dtype)
        return t[:, 0], ok

    def release(self) -> None:
        """Unmap the file pages read so far (they stay in the page cache); bounds the RSS of big walks."""
        if self._mm is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mm.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        self._views.clear()
        self._closed = True
        self.__dict__.pop("_bytes", None)  # its export of the mapping goes (an empty array if asked again)
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass  # a caller still holds a view; the mapping goes with it
        self._file.close()

    def __enter__(self) -> "MappedMemory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
