"""kdump-compressed dumps: makedumpfile's `KDUMP` format, plain or in its flattened stream form.

Layout (makedumpfile `diskdump_mod.h`, QEMU `include/sysemu/dump.h`), in blocks of `block_size`
bytes (= the page size):

* block 0: `disk_dump_header` ("KDUMP   ", header_version, utsname, ..., block_size,
  sub_hdr_size, bitmap_blocks, max_mapnr);
* block 1: `kdump_sub_header` (phys_base, dump_level, split, start/end_pfn, offset/size of
  VMCOREINFO, of the ELF notes and of the erase info, 64-bit max_mapnr from version 6);
* `bitmap_blocks` blocks: the 1st bitmap (pages that exist) then the 2nd (pages dumped), one bit
  per PFN, least significant bit first;
* one 24-byte `page_desc` (offset, size, flags, page_flags) per set bit of the 2nd bitmap, in PFN
  order; each points at the page's data, compressed (zlib 0x1, lzo 0x2, snappy 0x4, zstd 0x20) or
  raw (flags 0). Zero pages excluded with `-d 1` all point at one shared page of zeros; pages
  excluded otherwise (free, cache, user, ...) have a clear bit: they are not in the image.

64-bit dumps put block_size at header offset 428, 32-bit ones (QEMU's packed DiskDumpHeader32,
i386 makedumpfile) at 416; the fields are in the dumped machine's byte order.

The flattened form (QEMU <= 8.1 `dump-guest-memory` kdump formats, `makedumpfile -F`) starts with
a 4096-byte "makedumpfile" header, then records {be64 offset, be64 size, data} ending with
offset -1; `makedumpfile -R` writes each record's data at its offset. Here the records are only
indexed (output range -> file offset), so a flattened dump is read in place.

Pages are decompressed on demand into a bounded LRU cache. Only zlib is in the standard library;
lzo needs `lzallright` (or `python-lzo`), snappy and zstd need `cramjam` (or `python-snappy`,
`zstandard`).
"""

from __future__ import annotations

import bisect
import heapq
import io
import mmap
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable
from itertools import pairwise

import numpy as np

from ..errors import FormatError, MemoryReadError
from .base import CpuState, MappedMemory, check_table_size
from .elfcore import _split_notes
from .notes import parse_notes

KDUMP_SIGNATURE = b"KDUMP   "
FLAT_SIGNATURE = b"makedumpfile"
_FLAT_HEADER_SIZE = 4096  # MAX_SIZE_MDF_HEADER
_DESC_SIZE = 24  # page_desc: u64 offset, u32 size, u32 flags, u64 page_flags

ZLIB, LZO, SNAPPY, ZSTD = 0x1, 0x2, 0x4, 0x20
_INCOMPLETE = 0x8  # DUMP_DH_COMPRESSED_INCOMPLETE in header.status
_ALGOS = {ZLIB: "zlib", LZO: "lzo", SNAPPY: "snappy", ZSTD: "zstd"}
_PACKAGES = {LZO: "lzallright", SNAPPY: "cramjam", ZSTD: "cramjam"}

_CACHE_BYTES = 64 << 20  # decompressed pages kept (LRU)
_MAX_NOTES = 64 << 20

# utsname.machine -> pagewalk's architecture names (those of memory.elfcore)
_UNAME_ARCH = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "i386": "i386",
    "i486": "i386",
    "i586": "i386",
    "i686": "i386",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "riscv64": "riscv64",
    "riscv32": "riscv32",
    "ppc64": "ppc64",
    "ppc64le": "ppc64",
    "s390x": "s390x",
    "S390X": "s390x",  # QEMU's dump-guest-memory writes ELF_MACHINE_UNAME, upper case on s390x
    "mips": "mips",
    "mips64": "mips",
}
_32BIT = {"i386", "arm", "riscv32", "mips"}


def _arch_of(machine: str) -> str | None:
    if not machine:
        return None
    if machine in _UNAME_ARCH:
        return _UNAME_ARCH[machine]
    if machine.startswith("arm"):
        return "arm"
    if machine.startswith("mips"):
        return "mips"
    return machine


# -- decompressors -------------------------------------------------------------------------------


class _Corrupt(Exception):
    """A page's data do not decompress to exactly one page."""


def _zlib(data: bytes, page_size: int) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, page_size)
    except zlib.error as e:
        raise _Corrupt(f"corrupt zlib data ({e})") from None
    if len(out) != page_size or not d.eof:
        raise _Corrupt(f"zlib data give {'more' if len(out) == page_size else len(out)} bytes, not a page")
    return out


def _load_lzo() -> Callable[[bytes, int], bytes]:
    try:
        import lzallright

        comp = lzallright.LZOCompressor()

        def lzo(data: bytes, page_size: int) -> bytes:
            try:
                return comp.decompress(data, output_size_hint=page_size)
            except lzallright.LZOError as e:
                raise _Corrupt(f"corrupt lzo data ({e})") from None

        return lzo
    except ImportError:
        pass
    import lzo as pylzo  # python-lzo

    def lzo_py(data: bytes, page_size: int) -> bytes:
        try:
            return pylzo.decompress(data, False, page_size)
        except pylzo.error as e:
            raise _Corrupt(f"corrupt lzo data ({e})") from None

    return lzo_py


def _load_snappy() -> Callable[[bytes, int], bytes]:
    try:
        import cramjam

        def snappy(data: bytes, page_size: int) -> bytes:
            try:
                n = cramjam.snappy.decompress_raw_len(data)
                if n != page_size:
                    raise _Corrupt(f"snappy data claim {n} bytes, not a page")
                buf = bytearray(page_size)
                got = cramjam.snappy.decompress_raw_into(data, buf)
            except cramjam.DecompressionError as e:
                raise _Corrupt(f"corrupt snappy data ({e})") from None
            if got != page_size:
                raise _Corrupt(f"snappy data give {got} bytes, not a page")
            return bytes(buf)

        return snappy
    except ImportError:
        pass
    import snappy as pysnappy  # python-snappy

    def snappy_py(data: bytes, page_size: int) -> bytes:
        try:
            if pysnappy.uncompressed_length(data) != page_size:
                raise _Corrupt("snappy data do not hold one page")
            return pysnappy.uncompress(data)
        except Exception as e:  # python-snappy raises several exception types
            if isinstance(e, _Corrupt):
                raise
            raise _Corrupt(f"corrupt snappy data ({e})") from None

    return snappy_py


def _load_zstd() -> Callable[[bytes, int], bytes]:
    try:
        import cramjam

        def zstd(data: bytes, page_size: int) -> bytes:
            buf = bytearray(page_size + 1)  # one byte more: a frame holding more than a page fails
            try:
                got = cramjam.zstd.decompress_into(data, buf)
            except cramjam.DecompressionError as e:
                raise _Corrupt(f"corrupt zstd data ({e})") from None
            if got != page_size:
                raise _Corrupt(f"zstd data give {got} bytes, not a page")
            return bytes(buf[:page_size])

        return zstd
    except ImportError:
        pass
    import zstandard  # the zstandard package

    dctx = zstandard.ZstdDecompressor()

    def zstd_py(data: bytes, page_size: int) -> bytes:
        # a bounded read: decompress() trusts the frame's content size (an allocation of any size)
        try:
            with dctx.stream_reader(io.BytesIO(data)) as r:
                out = r.read(page_size + 1)
        except zstandard.ZstdError as e:
            raise _Corrupt(f"corrupt zstd data ({e})") from None
        if len(out) != page_size:
            raise _Corrupt(f"zstd data give {len(out)} bytes, not a page")
        return out

    return zstd_py


_LOADERS = {LZO: _load_lzo, SNAPPY: _load_snappy, ZSTD: _load_zstd}


def decompressor(algo: int) -> Callable[[bytes, int], bytes]:
    """The function decompressing one page of `algo` (ZLIB, LZO, SNAPPY, ZSTD).

    FormatError naming the package to install when the library is missing.
    """
    if algo == ZLIB:
        return _zlib
    try:
        return _LOADERS[algo]()
    except ImportError:
        name = _ALGOS[algo]
        raise FormatError(
            f"this kdump file has {name}-compressed pages; reading them needs the Python package "
            f"'{_PACKAGES[algo]}' (pip install {_PACKAGES[algo]})"
        ) from None


# -- byte sources: the dump as a plain file, or as the records of a flattened stream --------------


class _Plain:
    """The dump file itself."""

    flattened = False

    def __init__(self, mm: mmap.mmap | None, size: int) -> None:
        self._mm = mm
        self.size = size
        self.data_bytes = size

    def read(self, off: int, n: int) -> bytes | None:
        """`n` bytes at `off`, or None when they run past the end of the file."""
        if off < 0 or n < 0 or off + n > self.size:
            return None
        return self._mm[off : off + n] if n else b""


class _Flattened:
    """A flattened stream indexed in place: sorted, disjoint (dump offset, end, file offset)."""

    flattened = True

    def __init__(self, mm: mmap.mmap, file_size: int, path: str, warnings: list[str]) -> None:
        self._mm = mm
        if file_size < _FLAT_HEADER_SIZE:
            raise FormatError(f"{path}: truncated flattened kdump (header of {file_size} bytes, not 4096)")
        ftype, _version = struct.unpack_from(">qq", mm, 16)
        if ftype != 1:
            raise FormatError(f"{path}: flattened kdump of unknown type {ftype} (expected 1)")
        recs: list[tuple[int, int, int]] = []  # (dump offset, size, file offset), in file order
        pos = _FLAT_HEADER_SIZE
        ended = False
        while pos + 16 <= file_size:
            off, size = struct.unpack_from(">qq", mm, pos)
            pos += 16
            if off == -1:
                ended = True
                break
            if off < 0 or size < 0 or off + size >= 1 << 63:
                raise FormatError(
                    f"{path}: corrupt flattened kdump: record at file offset {pos - 16:#x} "
                    f"has offset {off:#x} and size {size:#x}"
                )
            if pos + size > file_size:
                warnings.append(
                    f"truncated image: the flattened record at file offset {pos - 16:#x} runs past the end "
                    f"of the file ({pos + size - file_size:#x} bytes missing)"
                )
                size = file_size - pos
            if size:
                recs.append((off, size, pos))
            pos += size
        if not ended:
            warnings.append("truncated image: the flattened stream has no end marker")
        self.data_bytes = sum(r[1] for r in recs)
        segs = _paint(recs)
        self._start = [s[0] for s in segs]
        self._end = [s[1] for s in segs]
        self._foff = [s[2] for s in segs]
        self.size = self._end[-1] if segs else 0

    def read(self, off: int, n: int) -> bytes | None:
        """`n` bytes at dump offset `off` (zeros where no record wrote), None past the end."""
        if off < 0 or n < 0 or off + n > self.size:
            return None
        i = bisect.bisect_right(self._start, off) - 1
        if i >= 0 and off + n <= self._end[i]:  # the common case: one record holds it all
            fo = self._foff[i] + off - self._start[i]
            return self._mm[fo : fo + n]
        out = bytearray(n)
        i = max(i, 0)
        end = off + n
        while i < len(self._start) and self._start[i] < end:
            a, b = max(off, self._start[i]), min(end, self._end[i])
            if a < b:
                fo = self._foff[i] + a - self._start[i]
                out[a - off : b - off] = self._mm[fo : fo + (b - a)]
            i += 1
        return bytes(out)


def _paint(recs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Disjoint (start, end, file offset) pieces of records in which a later record wins."""
    order = sorted(range(len(recs)), key=lambda i: recs[i][0])
    overlapping = any(
        recs[a][0] + recs[a][1] > recs[b][0] for a, b in pairwise(order)
    )
    if not overlapping:
        return [(recs[i][0], recs[i][0] + recs[i][1], recs[i][2]) for i in order]
    # sweep over every record boundary; the live record with the highest index wins each piece
    bounds = sorted({r[0] for r in recs} | {r[0] + r[1] for r in recs})
    starts = sorted((r[0], i) for i, r in enumerate(recs))
    live: list[tuple[int, int]] = []  # heap of (-index, end)
    out: list[tuple[int, int, int]] = []
    k = 0
    for a, b in pairwise(bounds):
        while k < len(starts) and starts[k][0] <= a:
            i = starts[k][1]
            heapq.heappush(live, (-i, recs[i][0] + recs[i][1]))
            k += 1
        while live and live[0][1] <= a:
            heapq.heappop(live)
        if not live:
            continue
        i = -live[0][0]
        fo = recs[i][2] + a - recs[i][0]
        if out and out[-1][1] == a and out[-1][2] + (a - out[-1][0]) == fo:
            out[-1] = (out[-1][0], b, out[-1][2])
        else:
            out.append((a, b, fo))
    return out


# -- bit counting -----------------------------------------------------------------------------------

_POP8 = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)


def _popcount64(words: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (numpy >= 2 has bitwise_count; else a byte table)."""
    words = np.ascontiguousarray(words, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words).astype(np.int64)
    return _POP8[words.view(np.uint8)].reshape(-1, 8).sum(axis=1, dtype=np.int64)


# -- the image ------------------------------------------------------------------------------------


class KdumpMemory(MappedMemory):
    """A kdump-compressed file (plain or flattened): pages decompressed on demand.

    Same interface as the mmapped formats; `file_offsets` only says which tables the image holds
    (the offsets it returns are 0: pages live compressed in the file).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.warnings: list[str] = []
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._decomp: dict[int, Callable[[bytes, int], bytes]] = {}
        self._bad: dict[int, str] = {}  # pfn -> why its data are unusable (reported once)
        self._runs: list[tuple[int, int]] | None = None
        self._file = open(path, "rb")  # noqa: SIM115 - kept open until close()
        try:
            self._open(path)
        except BaseException:
            self.close()
            raise

    def _open(self, path: str) -> None:
        size = self._file.seek(0, 2)
        self.file_size = size
        if size == 0:
            raise FormatError(f"{path}: empty file")
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        if hasattr(mmap, "MADV_RANDOM"):
            self._mm.madvise(mmap.MADV_RANDOM)
        head = self._mm[:16]
        if head.startswith(FLAT_SIGNATURE):
            self._src: _Plain | _Flattened = _Flattened(self._mm, size, path, self.warnings)
        elif head.startswith(KDUMP_SIGNATURE):
            self._src = _Plain(self._mm, size)
        elif head.startswith(b"DISKDUMP"):
            raise FormatError(f"{path}: an old diskdump file (DISKDUMP), not a kdump-compressed one")
        else:
            raise FormatError(f"{path}: not a kdump-compressed file (no KDUMP or makedumpfile signature)")
        self.flattened = self._src.flattened
        src = self._src

        hdr = src.read(0, min(512, src.size))
        if hdr is None or len(hdr) < 464 or not hdr.startswith(KDUMP_SIGNATURE):
            what = "the flattened records hold no" if self.flattened else "truncated"
            raise FormatError(f"{path}: {what} kdump header")
        machine = hdr[12 + 4 * 65 : 12 + 5 * 65].split(b"\0")[0].decode("ascii", "replace")
        self.machine = machine
        arch = _arch_of(machine)
        layouts = [(64, "<"), (64, ">"), (32, "<"), (32, ">")]
        if arch in _32BIT:
            layouts = layouts[2:] + layouts[:2]
        chosen = None
        for bits, e in layouts:
            version = struct.unpack_from(e + "I", hdr, 8)[0]
            bs_at = 428 if bits == 64 else 416
            block_size = struct.unpack_from(e + "I", hdr, bs_at)[0]
            if 1 <= version <= 1000 and 512 <= block_size <= 1 << 20 and block_size & (block_size - 1) == 0:
                chosen = bits, e, version, bs_at
                break
        if chosen is None:
            raise FormatError(f"{path}: corrupt kdump header (no sane header version and block size)")
        bits, e, version, bs_at = chosen
        self.little_endian = e == "<"
        self.word_bits = bits
        self.header_version = version
        status = struct.unpack_from(e + "I", hdr, bs_at - 4)[0]
        block_size, sub_hdr_size, bitmap_blocks, max_mapnr32 = struct.unpack_from(e + "IIII", hdr, bs_at)
        self.status = status
        self.page_size = block_size
        self.nr_cpus = struct.unpack_from(e + "i", hdr, bs_at + 32)[0]

        # sub-header (block 1)
        sub = src.read(block_size, 104 if bits == 64 else 80) if sub_hdr_size else None
        if sub_hdr_size and sub is None:
            raise FormatError(f"{path}: truncated kdump file (no sub-header)")
        names = ["phys_base", "dump_level", "split", "start_pfn", "end_pfn", "off_vmci", "size_vmci",
                 "off_note", "size_note", "off_erase", "size_erase", "start64", "end64", "max_mapnr64"]
        fields = dict.fromkeys(names, 0)
        if sub is not None:
            # QEMU's KdumpSubHeader32 is packed, as i386 makedumpfile lays it out
            v = struct.unpack_from(e + ("QiiQQQQQQQQQQQ" if bits == 64 else "IiiIIQIQIQIQQQ"), sub, 0)
            got = dict(zip(names, v))
            keep = ["phys_base", "dump_level"]
            if version >= 2:
                keep += ["split", "start_pfn", "end_pfn"]
            if version >= 3:
                keep += ["off_vmci", "size_vmci"]
            if version >= 4:
                keep += ["off_note", "size_note"]
            if version >= 6:
                keep += ["start64", "end64", "max_mapnr64"]
            fields.update({k: got[k] for k in keep})
        self.phys_base = fields["phys_base"]
        self.dump_level = fields["dump_level"]

        # bitmaps
        bitmap_off = block_size * (1 + sub_hdr_size)
        bitmap_len = block_size * bitmap_blocks
        if bitmap_len == 0 or bitmap_len % 2:
            raise FormatError(f"{path}: corrupt kdump header (bitmap of {bitmap_blocks} blocks)")
        if bitmap_off + bitmap_len > src.size or bitmap_len > src.data_bytes:
            raise FormatError(
                f"{path}: truncated or corrupt kdump file: its bitmaps ({bitmap_len:#x} bytes at {bitmap_off:#x}) "
                f"run past the end of the data ({src.size:#x})"
            )
        half = bitmap_len // 2
        nbits = half * 8
        max_mapnr = fields["max_mapnr64"] if version >= 6 else max_mapnr32
        if max_mapnr > nbits:
            self.warnings.append(
                f"the header's max_mapnr {max_mapnr:#x} exceeds its bitmap ({nbits:#x} pages); pages past it ignored"
            )
            max_mapnr = nbits
        self.max_mapnr = max_mapnr
        raw2 = src.read(bitmap_off + half, half)
        raw1 = src.read(bitmap_off, min(half, (max_mapnr + 7) // 8))
        assert raw1 is not None and raw2 is not None  # both inside the range checked above
        self._bitmap1 = bytes(raw1)  # pages that exist: says why a page is absent
        nwords = (max_mapnr + 63) // 64
        words = np.zeros(nwords, dtype=np.uint64)
        b2 = np.frombuffer(raw2, dtype=np.uint8, count=min(half, nwords * 8))
        words.view(np.uint8)[: len(b2)] = b2
        if max_mapnr % 64 and nwords:
            words[-1] &= np.uint64((1 << (max_mapnr % 64)) - 1)
        if fields["split"] and version >= 2:
            lo = fields["start64"] if version >= 6 else fields["start_pfn"]
            hi = fields["end64"] if version >= 6 else fields["end_pfn"]
            self._mask_outside(words, lo, hi)
        self._words = words.astype("<u8", copy=False)
        pop = _popcount64(words)
        self._cum = np.zeros(nwords + 1, dtype=np.int64)
        np.cumsum(pop, out=self._cum[1:])
        ndumped = int(self._cum[-1])
        self.dumped_pages = ndumped

        # page descriptors
        self._desc_off = bitmap_off + bitmap_len
        avail = max(0, (src.size - self._desc_off) // _DESC_SIZE)
        self._ndesc = min(ndumped, avail)
        if self._ndesc < ndumped:
            self.warnings.append(
                f"truncated image: {ndumped - self._ndesc} of {ndumped} page descriptors run past the end of the file"
            )
        self._desc_dtype = np.dtype([("offset", e + "u8"), ("size", e + "u4"), ("flags", e + "u4"), ("pflags", e + "u8")])
        if status & _INCOMPLETE:
            self.warnings.append("the dump is marked incomplete (makedumpfile ran out of space or was stopped)")

        # compression: fail now, with the package to install, if a library is missing
        for algo in (LZO, SNAPPY, ZSTD):
            if status & algo:
                try:
                    self._decomp[algo] = decompressor(algo)
                except FormatError as err:
                    raise FormatError(f"{path}: {err}") from None
        self.compression = [name for flag, name in _ALGOS.items() if status & flag] or ["none"]

        # notes and VMCOREINFO
        notes: list[tuple[str, int, bytes]] = []
        if fields["size_note"]:
            blob = self._region(fields["off_note"], fields["size_note"], "ELF notes")
            if blob:
                notes = _split_notes(blob, self.little_endian, self.warnings)
        if fields["size_vmci"] and not any(n[0] == "VMCOREINFO" for n in notes):
            text = self._region(fields["off_vmci"], fields["size_vmci"], "VMCOREINFO")
            if text:
                notes.append(("VMCOREINFO", 0, text))
        self.cpu: CpuState = parse_notes(notes, arch or machine or "unknown", self.little_endian)
        if arch is None:
            self.cpu.arch = None

    @staticmethod
    def _mask_outside(words: np.ndarray, lo: int, hi: int) -> None:
        """Clear the bits of PFNs outside [lo, hi) (a split dump holds only its part)."""
        n = len(words) * 64
        lo, hi = max(0, min(lo, n)), max(0, min(hi, n))
        bits = np.unpackbits(words.view(np.uint8), bitorder="little")
        bits[:lo] = 0
        bits[hi:] = 0
        words.view(np.uint8)[:] = np.packbits(bits, bitorder="little")

    def _region(self, off: int, size: int, what: str) -> bytes | None:
        if size > min(_MAX_NOTES, self._src.data_bytes):
            self.warnings.append(f"the {what} size {size:#x} is absurd; ignored")
            return None
        data = self._src.read(off, size)
        if data is None:
            self.warnings.append(f"the {what} ({size:#x} bytes at {off:#x}) run past the end of the file; ignored")
        return data

    # -- pages -------------------------------------------------------------------------------------
    @property
    def _shift(self) -> int:
        return self.page_size.bit_length() - 1

    def _rank(self, pfns: np.ndarray) -> np.ndarray:
        """Number of dumped pages below each PFN (0 <= pfn <= max_mapnr)."""
        pfns = np.asarray(pfns, dtype=np.int64)
        w = pfns >> 6
        b = (pfns & 63).astype(np.uint64)
        wc = np.minimum(w, max(len(self._words) - 1, 0))
        if len(self._words) == 0:
            return np.zeros(len(pfns), np.int64)
        below = self._words[wc] & ((np.uint64(1) << b) - np.uint64(1))
        below = np.where(w < len(self._words), below, np.uint64(0))
        return self._cum[w] + _popcount64(below)

    def _dumped(self, pfn: int) -> int | None:
        """Index of the page descriptor of `pfn`, or None when the dump does not hold it."""
        if pfn < 0 or pfn >= self.max_mapnr:
            return None
        w, b = divmod(pfn, 64)
        word = int(self._words[w])
        if not (word >> b) & 1:
            return None
        rank = int(self._cum[w]) + (word & ((1 << b) - 1)).bit_count()
        return rank if rank < self._ndesc else None

    def _page(self, pfn: int) -> bytes | None:
        """The page `pfn` decompressed, or None when the image does not hold it (or it is corrupt)."""
        pg = self._cache.get(pfn)
        if pg is not None:
            self._cache.move_to_end(pfn)
            return pg
        if pfn in self._bad:
            return None
        idx = self._dumped(pfn)
        if idx is None:
            return None
        ps = self.page_size
        raw = self._src.read(self._desc_off + idx * _DESC_SIZE, _DESC_SIZE)
        if raw is None:
            return None
        off, size, flags, _ = struct.unpack_from(("<" if self.little_endian else ">") + "QIIQ", raw)
        try:
            pg = self._decode(off, size, flags)
        except _Corrupt as e:
            self._bad[pfn] = str(e)
            if len(self._bad) == 1:
                self.warnings.append(f"corrupt page data in the dump (first: PFN {pfn:#x}: {e}); such pages are treated as absent")
            return None
        self._cache[pfn] = pg
        if len(self._cache) * ps > _CACHE_BYTES:
            self._cache.popitem(last=False)
        return pg

    def _decode(self, off: int, size: int, flags: int) -> bytes:
        ps = self.page_size
        if size == 0 and off == 0:
            raise _Corrupt("no page data (an incomplete dump)")
        if size > 2 * ps:
            raise _Corrupt(f"page descriptor gives {size:#x} bytes of data")
        data = self._src.read(off, size)
        if data is None:
            raise _Corrupt(f"page data at {off:#x} run past the end of the file (truncated image)")
        algo = flags & (ZLIB | LZO | SNAPPY | ZSTD)
        if algo == 0:
            if size != ps:
                raise _Corrupt(f"uncompressed page of {size:#x} bytes")
            return bytes(data)
        if algo not in _ALGOS:
            raise _Corrupt(f"page flags {flags:#x} name more than one compression")
        fn = self._decomp.get(algo)
        if fn is None:
            fn = self._decomp[algo] = decompressor(algo)
        out = fn(bytes(data), ps)
        if len(out) != ps:
            raise _Corrupt(f"{_ALGOS[algo]} data give {len(out)} bytes, not a page")
        return bytes(out)

    def _why_absent(self, pa: int, size: int) -> str:
        """Why the first absent page of [pa, pa+size) is absent, when the bitmaps say."""
        sh = self._shift
        first, last = pa >> sh, (pa + size - 1) >> sh
        for pfn in range(first, min(last, first + 4096) + 1):
            if self._dumped(pfn) is not None:
                continue
            if pfn < self.max_mapnr and pfn < 8 * len(self._bitmap1) and (self._bitmap1[pfn >> 3] >> (pfn & 7)) & 1:
                return f"excluded from the dump by makedumpfile, dump level {self.dump_level}"
            break
        return ""

    def _page_or_raise(self, pfn: int, pa: int, size: int) -> bytes:
        pg = self._page(pfn)
        if pg is None:
            why = self._bad.get(pfn)
            raise MemoryReadError(pa, size, why or "")
        return pg

    # -- the PhysicalMemory interface --------------------------------------------------------------
    def runs(self) -> list[tuple[int, int]]:
        """(first PA, end PA) of every stretch of dumped pages (zero pages included)."""
        if self._runs is None:
            out: list[tuple[int, int]] = []
            sh = self._shift
            step = 1 << 20  # words per chunk: bounded memory for huge bitmaps
            for w0 in range(0, len(self._words), step):
                chunk = self._words[w0 : w0 + step]
                bits = np.unpackbits(chunk.view(np.uint8), bitorder="little").astype(np.int8)
                d = np.diff(np.concatenate(([0], bits, [0])))
                starts = np.nonzero(d == 1)[0] + w0 * 64
                ends = np.nonzero(d == -1)[0] + w0 * 64
                for a, b in zip(starts.tolist(), ends.tolist()):
                    if out and out[-1][1] == a << sh:
                        out[-1] = (out[-1][0], b << sh)
                    else:
                        out.append((a << sh, b << sh))
            self._runs = out
        return list(self._runs)

    def _held(self, pas: np.ndarray, size: int) -> np.ndarray:
        """Whether every page of [pa, pa+size) of each PA is dumped (by the bitmap alone)."""
        pas = np.asarray(pas, dtype=np.uint64)
        if size <= 0:
            size = 1
        sh = self._shift
        limit = self.max_mapnr << sh
        ok = (pas < np.uint64(limit)) & (np.uint64(size) <= np.uint64(limit) - np.minimum(pas, np.uint64(limit)))
        p0 = np.where(ok, pas >> np.uint64(sh), 0).astype(np.int64)
        p1 = np.where(ok, ((pas + np.uint64(size - 1)) >> np.uint64(sh)) + np.uint64(1), 0).astype(np.int64)
        r0, r1 = self._rank(p0), self._rank(p1)
        return ok & (r1 - r0 == p1 - p0) & (r1 <= self._ndesc)

    def contains(self, pa: int, size: int = 1) -> bool:
        if pa < 0 or size < 0 or pa + size > 1 << 64:
            return False
        sh = self._shift
        p0, p1 = pa >> sh, ((pa + max(size, 1) - 1) >> sh) + 1
        if p1 - p0 <= 16:  # a table or a word: page by page on ints (an array op costs ~50 us a call)
            return all(self._dumped(pfn) is not None for pfn in range(p0, p1))
        return bool(self._held(np.array([pa], dtype=np.uint64), size)[0])

    def read(self, pa: int, size: int) -> bytes:
        """`size` bytes at `pa`; MemoryReadError when a page of them is not in the image."""
        if size <= 0:
            return b""
        if not self.contains(pa, size):
            raise MemoryReadError(pa, size, self._why_absent(pa, size))
        ps, sh = self.page_size, self._shift
        out = bytearray()
        cur, end = pa, pa + size
        while cur < end:
            pg = self._page_or_raise(cur >> sh, pa, size)
            o = cur & (ps - 1)
            n = min(ps - o, end - cur)
            out += pg[o : o + n]
            cur += n
        return bytes(out)

    def table(self, pa: int, count: int, dtype: np.dtype) -> np.ndarray:
        """`count` entries of `dtype` at `pa` (MemoryReadError if absent)."""
        dtype = np.dtype(dtype)
        return np.frombuffer(self.read(pa, count * dtype.itemsize), dtype=dtype, count=count)

    def file_offsets(self, pas: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(zeros, held): pages are compressed, so only whether the image holds each range is known."""
        pas = np.asarray(pas, dtype=np.uint64)
        return np.zeros(len(pas), np.int64), self._held(pas, size)

    def gather_tables(self, pas: np.ndarray, count: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """Many tables at once: a (len(pas), count) array and a mask of the tables the image holds."""
        dtype = np.dtype(dtype)
        size = count * dtype.itemsize
        pas = np.asarray(pas, dtype=np.uint64)
        n = len(pas)
        check_table_size(pas, size, self.max_mapnr * self.page_size)
        out = np.zeros((n, count), dtype)
        ok = self._held(pas, size) if n else np.zeros(0, bool)
        if n == 0 or size == 0:
            return out, ok
        ps, sh = self.page_size, self._shift
        first = (pas >> np.uint64(sh)).astype(np.int64)
        last = ((pas + np.uint64(size - 1)) >> np.uint64(sh)).astype(np.int64)
        one = ok & (first == last)
        idx = np.nonzero(one)[0]
        if len(idx):
            upfn, inv = np.unique(first[idx], return_inverse=True)
            buf = np.zeros((len(upfn), ps), np.uint8)
            have = np.zeros(len(upfn), bool)
            for j, pfn in enumerate(upfn.tolist()):
                pg = self._page(pfn)
                if pg is not None:
                    buf[j] = np.frombuffer(pg, np.uint8)
                    have[j] = True
            inv = inv.reshape(-1)
            start = inv * ps + (pas[idx] & np.uint64(ps - 1)).astype(np.int64)
            rows = buf.reshape(-1)[start[:, None] + np.arange(size)]
            out[idx] = rows.view(dtype).reshape(len(idx), count)
            bad = ~have[inv]
            ok[idx[bad]] = False
            out[idx[bad]] = 0
        for i in np.nonzero(ok & ~one)[0].tolist():
            try:
                out[i] = np.frombuffer(self.read(int(pas[i]), size), dtype=dtype, count=count)
            except MemoryReadError:
                ok[i] = False
        return out, ok

    def release(self) -> None:
        """Drop the decompressed pages kept so far."""
        self._cache.clear()

    def close(self) -> None:
        self._cache.clear()
        mm = getattr(self, "_mm", None)
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass
            self._mm = None
        self._file.close()

    def describe(self) -> str:
        """One line: format, compression, pages held."""
        form = "flattened kdump" if self.flattened else "kdump"
        return (
            f"{form} v{self.header_version}, {'/'.join(self.compression)}, page size {self.page_size}, "
            f"{self.dumped_pages} of {self.max_mapnr} pages dumped, dump level {self.dump_level}"
        )


def is_kdump(head: bytes) -> bool:
    """Whether the first bytes of a file are those of a kdump-compressed dump (plain or flattened)."""
    return head.startswith((KDUMP_SIGNATURE, FLAT_SIGNATURE))


__all__ = ["LZO", "SNAPPY", "ZLIB", "ZSTD", "KdumpMemory", "decompressor", "is_kdump"]
