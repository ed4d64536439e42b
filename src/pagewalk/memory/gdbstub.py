"""A live QEMU guest through its gdbstub: the GDB remote serial protocol, spoken directly (no gdb).

What is used of the protocol (GDB manual, "Remote Protocol"; QEMU gdbstub/gdbstub.c):

- packets `$data#cs` with a two-digit checksum, `+`/`-` acks, and no-ack mode (`QStartNoAckMode`)
  where the stub offers it (QEMU 7.2 does not); replies are run-length decoded (`X*n`: n-29 more
  copies of X) and then unescaped (`}` then the byte xor 0x20);
- `qSupported` for `PacketSize` (QEMU: 0x1000, so at most 2048 bytes per `m` read);
- stopping: QEMU stops the VM itself when a debugger connects and when any byte arrives while it
  runs; we send `\\x03` (interrupt) and wait for the stop reply wherever the guest may be running,
  check with `?`, and resume with `c` on close;
- `Qqemu.PhyMemMode:1` (QEMU's own packet): `m` then reads guest-physical memory. QEMU keeps this
  mode in a global, not per connection, so close() sets it back to 0;
- `m addr,len` in PacketSize chunks, `g` (every register of the core XML) and `p n` (one
  register), `qXfer:features:read:target.xml` (and its `xi:include`s) to find registers by name
  and number: x86-64 cr0/cr3/cr4/efer (QEMU puts them in `org.gnu.gdb.i386.core`, inside `g`),
  arm64 TTBR0_EL1/TTBR1_EL1/TCR_EL1/MAIR_EL1/SCTLR (QEMU 7.2's `org.qemu.gdb.arm.sys.regs`, by
  `p`), riscv satp (`org.gnu.gdb.riscv.csr`, by `p`) -- found by name, whatever the feature;
- `qRcmd` (QEMU's `monitor` commands): `info mtree -f` for the guest's RAM ranges.

`GdbMemory` serves the walker the interface of `MappedMemory` from a page cache filled over the
socket: every page is read once, whole tables per request, and the guest stays stopped from
open to close, so the view is one consistent snapshot (unless `keep_running`).
"""

from __future__ import annotations

import re
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable

import numpy as np

from ..errors import MemoryReadError, PagewalkError
from .base import CpuState, check_table_size, in_ranges

PAGE = 4096

# Registers a page-table walk can need, by their lower-case names in QEMU's target XML.
WANTED_REGS = {
    "x86_64": ("cr0", "cr2", "cr3", "cr4", "efer"),
    "arm64": ("ttbr0_el1", "ttbr1_el1", "tcr_el1", "mair_el1", "sctlr_el1", "id_aa64mmfr0_el1"),
    "riscv64": ("satp",),
    "riscv32": ("satp",),
}

# Other names QEMU gives them (QEMU 7.2's arm64 XML calls SCTLR_EL1 by its AArch32 name).
_REG_ALIASES = {"sctlr_el1": ("sctlr",)}

# RAM assumed when the stub cannot tell (no `qRcmd info mtree -f`): the ranges where every PC/virt
# board of that architecture has RAM and nothing else, so no device register is ever read (reads
# in physical mode go to MMIO too, with its side effects). x86: below the VGA hole, and 1 MiB up
# to 3 GiB (the lowest start of i440fx's and q35's PCI hole; RAM above 4 GiB is left out). arm64
# virt: RAM from 1 GiB to the high PCIe window at 256 GiB. riscv virt: RAM from 2 GiB up.
DEFAULT_RAM = {
    "x86_64": [(0, 0xA0000), (0x100000, 0xC0000000)],
    "arm64": [(0x40000000, 0x4000000000)],
    "riscv64": [(0x80000000, 0x4000000000)],
    "riscv32": [(0x80000000, 0x100000000)],
}

_XML_ARCH = {"i386:x86-64": "x86_64", "aarch64": "arm64", "riscv:rv64": "riscv64", "riscv:rv32": "riscv32"}

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


# -- helpers shared with qmp.py -----------------------------------------------------------------


def parse_mtree_ram(text: str) -> list[tuple[int, int]]:
    """RAM and ROM ranges of the system address space in HMP `info mtree -f` output, merged.

    These are the blocks QEMU's dump-guest-memory writes (RAM-backed regions of "memory"), so a
    live view holds the same physical addresses as that guest's ELF core.
    """
    out: list[tuple[int, int]] = []
    in_memory = False
    for line in text.splitlines():
        if line.startswith("FlatView #"):
            in_memory = False
            continue
        if line.strip().startswith('AS "memory"'):
            in_memory = True
            continue
        if not in_memory:
            continue
        m = re.match(r"\s*([0-9a-fA-F]+)-([0-9a-fA-F]+) \(prio -?\d+, (\w+)\)", line)
        if not m or m.group(3) not in ("ram", "rom"):
            continue
        a, b = int(m.group(1), 16), int(m.group(2), 16) + 1
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return sorted(out)


_X86_INFO_REGS = re.compile(r"\b(CR[0-4]|EFER)=([0-9a-fA-F]+)")
_RISCV_INFO_REGS = re.compile(r"^\s*(satp|mstatus|sstatus|priv)\s+([0-9a-fA-F]+)\s*$", re.MULTILINE)


def parse_info_registers(text: str) -> tuple[str | None, dict[str, int]]:
    """(architecture, registers) from HMP `info registers` (first vCPU): x86 CR0-4/EFER, riscv satp."""
    regs: dict[str, int] = {}
    first_cpu = re.split(r"\n(?=CPU#[1-9])", text, maxsplit=1)[0]
    for name, val in _X86_INFO_REGS.findall(first_cpu):
        regs.setdefault(name.lower(), int(val, 16))
    if "cr3" in regs:
        arch = "x86_64" if re.search(r"\bRAX=", first_cpu) else "i386"
        return arch, regs
    for name, val in _RISCV_INFO_REGS.findall(first_cpu):
        regs.setdefault(name, int(val, 16))
    if "satp" in regs:
        return ("riscv64" if re.search(r"\bpc\s+[0-9a-f]{16}\b", first_cpu) else "riscv32"), regs
    if re.search(r"\bPC=[0-9a-f]{16}\b", first_cpu) and "X00=" in first_cpu:
        return "arm64", regs
    return None, regs


def merge_runs(runs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in runs if b > a):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


# -- the memory interface over a page cache -----------------------------------------------------


class PageCachedMemory:
    """`MappedMemory`'s interface over a source that is slow per request (a socket, a monitor).

    Subclasses implement `_fetch(pa, size) -> bytes` for page-aligned ranges inside RAM. Every
    page is fetched once and kept; a batch request (a level of tables) fetches all its missing
    pages together, contiguous ones in one range, with progress reported through `progress`.
    `runs()` are the guest's RAM ranges; outside them nothing is read (MemoryReadError).
    """

    max_range = 64 * PAGE  # the largest range asked of the source in one go

    def __init__(self, ram: list[tuple[int, int]], cpu: CpuState, progress: Progress | None = None) -> None:
        self._ram = merge_runs(ram)
        self._ram_pa = np.array([a for a, _ in self._ram], dtype=np.uint64)
        self._ram_end = np.array([b for _, b in self._ram], dtype=np.uint64)
        self.cpu = cpu
        self.progress = progress
        self.warnings: list[str] = getattr(self, "warnings", [])
        self.little_endian = True
        self._pages: dict[int, bytes] = {}
        self.stats = {"requests": 0, "pages": 0, "seconds": 0.0}
        self.closed = False

    # subclasses -----------------------------------------------------------------------------
    def _fetch(self, pa: int, size: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _begin_batch(self) -> None:
        """Called before a batch of fetches (gdbstub with keep_running: stop the guest)."""

    def _end_batch(self) -> None:
        """Called after a batch of fetches."""

    # the memory interface --------------------------------------------------------------------
    def runs(self) -> list[tuple[int, int]]:
        """(first PA, end PA) of the guest's RAM."""
        return list(self._ram)

    def contains(self, pa: int, size: int = 1) -> bool:
        i = int(np.searchsorted(self._ram_pa, np.uint64(pa), side="right")) - 1
        return i >= 0 and pa >= int(self._ram_pa[i]) and pa + size <= int(self._ram_end[i])

    def read(self, pa: int, size: int) -> bytes:
        """`size` bytes at `pa` (MemoryReadError outside RAM)."""
        if size <= 0:
            return b""
        if pa < 0 or not self.contains(pa, size):
            raise MemoryReadError(pa, size)
        self._ensure(range(pa // PAGE, (pa + size - 1) // PAGE + 1))
        return self._cached(pa, size)

    def read_u64(self, pa: int, byteorder: str = "<") -> int:
        return int.from_bytes(self.read(pa, 8), "little" if byteorder == "<" else "big")

    def table(self, pa: int, count: int, dtype: np.dtype) -> np.ndarray:
        """`count` entries of `dtype` at `pa`, read-only."""
        dtype = np.dtype(dtype)
        return np.frombuffer(self.read(pa, count * dtype.itemsize), dtype=dtype)

    def file_offsets(self, pas: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """No file here: offsets are 0; the mask says which `size`-byte ranges lie in RAM."""
        _, ok = in_ranges(self._ram_pa, self._ram_end, pas, size)
        return np.zeros(len(ok), np.int64), ok

    def gather_tables(self, pas: np.ndarray, count: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """Many tables at once (rows of zeros, mask False, where not in RAM); one batch of reads."""
        dtype = np.dtype(dtype)
        pas = np.asarray(pas, dtype=np.uint64)
        nbytes = count * dtype.itemsize
        # no page table is larger than the largest granule's top level (64 KiB; ppc64 radix roots
        # reach 2^(RPDS+3)): a bigger one comes from corrupt registers, and would be read over the wire
        check_table_size(pas, nbytes, min(int((self._ram_end - self._ram_pa).max(initial=0)), 16 << 20))
        _, ok = self.file_offsets(pas, nbytes)
        out = np.zeros((len(pas), count), dtype)
        if not ok.any():
            return out, ok
        good = pas[ok].astype(np.int64)
        first = good // PAGE
        last = (good + nbytes - 1) // PAGE
        span = last - first + 1
        if int(span.max()) == 1:
            need = np.unique(first)
        else:
            need = np.unique(np.concatenate([np.arange(a, b + 1) for a, b in zip(first.tolist(), last.tolist())]))
        self._ensure(need.tolist())
        inpage = span == 1
        if (good % dtype.itemsize == 0).all() and inpage.any():
            up, inv = np.unique(first[inpage], return_inverse=True)
            buf = np.frombuffer(b"".join(self._pages[p] for p in up.tolist()), dtype=dtype)
            idx = (inv.astype(np.int64) * PAGE + good[inpage] % PAGE) // dtype.itemsize
            rows = np.flatnonzero(ok)[inpage]
            out[rows] = buf[idx[:, None] + np.arange(count)]
            rest = np.flatnonzero(ok)[~inpage]
        else:
            rest = np.flatnonzero(ok)
        for r in rest.tolist():
            out[r] = np.frombuffer(self._cached(int(pas[r]), nbytes), dtype=dtype)
        return out, ok

    def gather(self, pas: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """One value of `dtype` at each PA, and whether it is in RAM."""
        t, ok = self.gather_tables(pas, 1, dtype)
        return t[:, 0], ok

    def release(self) -> None:
        """Nothing to release: the cache holds only what was read (page tables, mostly)."""

    def close(self) -> None:
        self.closed = True
        self._pages.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the cache --------------------------------------------------------------------------------
    def _cached(self, pa: int, size: int) -> bytes:
        first, last = pa // PAGE, (pa + size - 1) // PAGE
        if first == last:
            o = pa - first * PAGE
            return self._pages[first][o : o + size]
        data = b"".join(self._pages[p] for p in range(first, last + 1))
        o = pa - first * PAGE
        return data[o : o + size]

    def _ensure(self, pages: Iterable[int]) -> None:
        """Fetch the pages not in the cache yet: contiguous ones as one range (up to max_range)."""
        if self.closed:
            raise PagewalkError("the live memory view is closed")
        missing = sorted(p for p in set(pages) if p not in self._pages)
        if not missing:
            return
        ranges: list[list[int]] = []
        per = max(1, self.max_range // PAGE)
        for p in missing:
            if ranges and p == ranges[-1][0] + ranges[-1][1] and ranges[-1][1] < per and self.contains(p * PAGE, PAGE):
                ranges[-1][1] += 1
            else:
                ranges.append([p, 1])
        total = len(missing) * PAGE
        done = 0
        t0 = time.monotonic()
        self._begin_batch()
        try:
            for p, n in ranges:
                pa, size = p * PAGE, n * PAGE
                if not self.contains(pa, size):
                    # a page that straddles the end of RAM (a table crossing it): read what exists
                    data = self._fetch_partial(pa, size)
                else:
                    data = self._fetch(pa, size)
                if len(data) != size:
                    raise PagewalkError(f"short read at {pa:#x}: {len(data)} of {size} bytes")
                for k in range(n):
                    self._pages[p + k] = data[k * PAGE : (k + 1) * PAGE]
                self.stats["requests"] += 1
                done += size
                if self.progress is not None:
                    self.progress(done, total)
        except BaseException:
            if self.progress is not None and done < total:
                self.progress(total, total)  # a failed batch still ends its progress display
            raise
        self._end_batch()
        self.stats["pages"] += len(missing)
        self.stats["seconds"] += time.monotonic() - t0

    def _fetch_partial(self, pa: int, size: int) -> bytes:
        out = bytearray(size)
        for a, b in self._ram:
            lo, hi = max(a, pa), min(b, pa + size)
            if lo < hi:
                out[lo - pa : hi - pa] = self._fetch(lo, hi - lo)
        return bytes(out)


# -- the protocol ---------------------------------------------------------------------------------


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def escape(data: bytes) -> bytes:
    """Binary-escape `$ # } *` as `}` + (byte xor 0x20)."""
    out = bytearray()
    for b in data:
        if b in b"$#}*":
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def decode_payload(raw: bytes) -> bytes:
    """A received packet's data: run-length expansion (`X*n`), then `}` unescaping."""
    if b"*" in raw:
        out = bytearray()
        i = 0
        while i < len(raw):
            c = raw[i]
            if c == 0x2A and out and i + 1 < len(raw):  # '*'
                out += bytes((out[-1],)) * (raw[i + 1] - 29)
                i += 2
                continue
            out.append(c)
            i += 1
        raw = bytes(out)
    if b"}" in raw:
        out = bytearray()
        i = 0
        while i < len(raw):
            if raw[i] == 0x7D and i + 1 < len(raw):
                out.append(raw[i + 1] ^ 0x20)
                i += 2
            else:
                out.append(raw[i])
                i += 1
        raw = bytes(out)
    return raw


def encode_packet(payload: bytes) -> bytes:
    data = escape(payload)
    return b"$" + data + b"#%02x" % checksum(data)


class GdbRemote:
    """One connection to a gdbstub: framing, acks, stop/resume, and the few requests pagewalk needs."""

    max_junk = 4096  # bytes that are not the protocol before we call the peer something else
    max_packet = 1 << 22

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.addr = f"{host}:{port}"
        self.timeout = timeout
        self.ack = True
        self.packet_size = 0x400
        self.features: dict[str, str] = {}
        self.running = False
        self._buf = bytearray()
        self._pending: list[bytes] = []
        self._junk = bytearray()
        self._retries = 0
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except ConnectionRefusedError:
            raise PagewalkError(f"no gdbstub at {self.addr} (connection refused)") from None
        except TimeoutError:
            raise PagewalkError(f"no gdbstub at {self.addr} (no answer within {timeout:g} s)") from None
        except OSError as e:
            raise PagewalkError(f"no gdbstub at {self.addr} ({e.strerror or e})") from None
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # bytes ------------------------------------------------------------------------------------
    def _recv(self, timeout: float | None = None) -> None:
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            if self._junk:
                raise PagewalkError(
                    f"{self.addr} does not speak the GDB remote protocol (it sent {bytes(self._junk[:40])!r})"
                ) from None
            raise PagewalkError(f"gdbstub at {self.addr}: no reply within {self.sock.gettimeout():g} s") from None
        except OSError as e:
            raise PagewalkError(f"gdbstub at {self.addr}: connection closed ({e.strerror or e})") from None
        if not data:
            raise PagewalkError(f"gdbstub at {self.addr}: connection closed")
        self._buf += data

    def _send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise PagewalkError(f"gdbstub at {self.addr}: connection closed ({e.strerror or e})") from None

    def _event(self, timeout: float | None = None) -> tuple[str, bytes]:
        """The next thing the stub says: ("ack", b"+"/b"-") or ("packet", data)."""
        while True:
            buf = self._buf
            # skip what is not a packet or an ack
            i = 0
            while i < len(buf) and buf[i] not in b"$%+-":
                i += 1
            if i:
                self._junk += buf[:i]
                del buf[:i]
                if len(self._junk) > self.max_junk:
                    raise PagewalkError(
                        f"{self.addr} does not speak the GDB remote protocol (it sent {bytes(self._junk[:40])!r})"
                    )
            if buf and buf[0] in b"+-":
                c = bytes(buf[:1])
                del buf[:1]
                return "ack", c
            if buf:
                end = buf.find(b"#")
                if end >= 0 and len(buf) >= end + 3:
                    raw = bytes(buf[1:end])
                    cs = bytes(buf[end + 1 : end + 3])
                    notification = buf[0] == 0x25  # '%'
                    del buf[: end + 3]
                    try:
                        ok = int(cs, 16) == checksum(raw)
                    except ValueError:
                        ok = False
                    if notification:
                        continue  # non-stop notifications: not used by pagewalk
                    if not ok:
                        if not self.ack:
                            raise PagewalkError(f"gdbstub at {self.addr}: corrupt packet (bad checksum)")
                        self._send_raw(b"-")
                        self._retries += 1
                        if self._retries > 5:
                            raise PagewalkError(f"gdbstub at {self.addr}: corrupt packets (bad checksums)")
                        continue
                    self._retries = 0
                    if self.ack:
                        self._send_raw(b"+")
                    self._junk.clear()
                    return "packet", decode_payload(raw)
                if len(buf) > self.max_packet:
                    raise PagewalkError(f"gdbstub at {self.addr}: packet longer than {self.max_packet} bytes")
            self._recv(timeout)

    def send(self, payload: bytes) -> None:
        """Send one packet; in ack mode wait for its `+` (resend on `-`)."""
        pkt = encode_packet(payload)
        for _ in range(5):
            self._send_raw(pkt)
            if not self.ack:
                return
            while True:
                kind, data = self._event()
                if kind == "packet":
                    self._pending.append(data)  # a stop reply that crossed our packet
                    continue
                break
            if data == b"+":
                return
            if self._junk:  # `-` inside someone else's banner ("SSH-2.0-..."), not a nack
                raise PagewalkError(
                    f"{self.addr} does not speak the GDB remote protocol (it sent {bytes(self._junk[:40])!r})"
                )
        raise PagewalkError(f"gdbstub at {self.addr}: packet refused 5 times (`-` acks)")

    def receive(self, timeout: float | None = None) -> bytes:
        if self._pending:
            return self._pending.pop(0)
        while True:
            kind, data = self._event(timeout)
            if kind == "packet":
                return data

    def request(self, payload: bytes, *, stop_reply: bool = False, timeout: float | None = None) -> bytes:
        """Send a packet and return its reply; stray stop replies are skipped unless one is wanted."""
        self.send(payload)
        while True:
            r = self.receive(timeout)
            if _is_exit(r):
                raise PagewalkError(f"gdbstub at {self.addr}: the guest exited ({r.decode(errors='replace')})")
            if not stop_reply and r[:1] in (b"T", b"S") and _is_stop_reply(r):
                continue
            return r

    # requests ---------------------------------------------------------------------------------
    def handshake(self) -> None:
        """Stop the target, learn PacketSize, switch off acks where allowed, check that it is stopped."""
        # QEMU stops the VM when a debugger connects (and sends a stop reply); another stub may
        # be running: an interrupt stops it, and a stopped QEMU ignores the byte.
        self._send_raw(b"\x03")
        r = self.request(b"qSupported:swbreak+;hwbreak+;vContSupported+")
        for item in r.decode("ascii", "replace").split(";"):
            if "=" in item:
                k, v = item.split("=", 1)
                self.features[k] = v
            elif item:
                self.features[item[:-1] if item[-1:] in "+-?" else item] = item[-1:]
        try:
            self.packet_size = max(64, int(self.features.get("PacketSize", "400"), 16))
        except ValueError:
            self.packet_size = 0x400
        if self.features.get("QStartNoAckMode") == "+":
            if self.request(b"QStartNoAckMode") == b"OK":
                self.ack = False
        r = self.request(b"?", stop_reply=True)
        if not _is_stop_reply(r):
            raise PagewalkError(f"gdbstub at {self.addr}: unexpected answer to `?`: {r[:40]!r}")
        self.running = False

    def interrupt(self, timeout: float = 10.0) -> None:
        """Stop a running target: `\\x03`, then its stop reply."""
        self._send_raw(b"\x03")
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PagewalkError(f"gdbstub at {self.addr}: the guest did not stop within {timeout:g} s")
            r = self.receive(timeout=left)
            if _is_stop_reply(r):
                self.running = False
                return
            if _is_exit(r):
                raise PagewalkError(f"gdbstub at {self.addr}: the guest exited ({r.decode(errors='replace')})")

    def resume(self) -> None:
        """`c`: continue all vCPUs (no reply until the guest stops again)."""
        self.send(b"c")
        self.running = True

    def monitor(self, command: str, timeout: float | None = None) -> str | None:
        """QEMU monitor command through `qRcmd`; its output, or None when the stub has no qRcmd."""
        self.send(b"qRcmd," + command.encode().hex().encode())
        out = bytearray()
        while True:
            r = self.receive(timeout)
            if r[:1] in (b"T", b"S") and _is_stop_reply(r):
                continue
            if r == b"":
                return None
            if r[:1] == b"O" and r != b"OK":
                try:
                    out += bytes.fromhex(r[1:].decode())
                except ValueError:
                    pass
                continue
            if r == b"OK":
                return out.decode("utf-8", "replace")
            if r[:1] == b"E":
                return None
            # some stubs answer with the output as one hex packet
            try:
                return (out + bytes.fromhex(r.decode())).decode("utf-8", "replace")
            except ValueError:
                return None

    def xfer(self, obj: str, annex: str) -> bytes | None:
        """`qXfer:OBJ:read:ANNEX` in PacketSize pieces; None if unsupported."""
        out = bytearray()
        chunk = max(32, self.packet_size - 32)
        while True:
            r = self.request(b"qXfer:%s:read:%s:%x,%x" % (obj.encode(), annex.encode(), len(out), chunk))
            if r == b"" or r[:1] == b"E":
                return None
            if r[:1] not in (b"m", b"l"):
                raise PagewalkError(f"gdbstub at {self.addr}: bad qXfer reply {r[:40]!r}")
            out += r[1:]
            if r[:1] == b"l" or len(r) == 1:
                return bytes(out)

    def read_memory(self, addr: int, size: int) -> bytes:
        """`m` reads in PacketSize chunks (halved when the stub refuses a size)."""
        out = bytearray()
        # PacketSize/2 bytes of data make a PacketSize reply of hex; QEMU takes exactly that much
        # (MAX_PACKET_LENGTH / 2). A power of two keeps the reads page-aligned.
        chunk = getattr(self, "_mchunk", 1 << max(4, (self.packet_size // 2).bit_length() - 1))
        while len(out) < size:
            n = min(chunk, size - len(out))
            a = addr + len(out)
            r = self.request(b"m%x,%x" % (a, n))
            if r[:1] == b"E" or r == b"":
                if n > 64 and r[:1] == b"E":
                    chunk = max(64, 1 << ((n - 1).bit_length() - 1))  # the stub takes less than PacketSize says
                    self._mchunk = chunk
                    continue
                raise MemoryReadError(a, n, f"gdbstub: {r.decode(errors='replace') or 'empty reply'}")
            try:
                data = bytes.fromhex(r.decode("ascii"))
            except ValueError:
                raise PagewalkError(f"gdbstub at {self.addr}: bad memory reply {r[:40]!r}") from None
            if not data:
                raise MemoryReadError(a, n, "gdbstub: empty reply")
            out += data[:n]
        return bytes(out)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _is_exit(r: bytes) -> bool:
    return re.fullmatch(rb"[WX][0-9a-fA-F]{2}(;.*)?", r) is not None


def _is_stop_reply(r: bytes) -> bool:
    return (r[:1] == b"S" and len(r) == 3) or (r[:1] == b"T" and len(r) >= 3 and all(
        c in b"0123456789abcdefABCDEF" for c in r[1:3]))


# -- registers from the target description --------------------------------------------------------


def _target_regs(remote: GdbRemote) -> tuple[str | None, list[tuple[str, int, int, str]]]:
    """(architecture, [(name, regnum, bitsize, feature)]) from target.xml and its includes."""
    arch: str | None = None
    regs: list[tuple[str, int, int, str]] = []
    nxt = [0]
    seen: set[str] = set()

    def load(annex: str, feature: str) -> None:
        if annex in seen or len(seen) > 32:
            return
        seen.add(annex)
        data = remote.xfer("features", annex)
        if data is None:
            return
        # QEMU writes `<xi:include>` without declaring the xi prefix: drop prefixes before parsing
        text = re.sub(rb"<!DOCTYPE[^>]*>", b"", data)
        text = re.sub(rb"<(/?)[A-Za-z_][\w.-]*:", rb"<\1", text)
        text = re.sub(rb"\sxmlns(:[\w.-]+)?=(\"[^\"]*\"|'[^']*')", b"", text)
        try:
            root = ET.fromstring(text)
        except ET.ParseError:
            return
        _walk(root, feature)

    def _walk(el: ET.Element, feature: str) -> None:
        nonlocal arch
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "architecture" and el.text:
            arch = el.text.strip()
        elif tag == "feature":
            feature = el.get("name", feature)
        elif tag == "include":
            href = el.get("href")
            if href:
                load(href, feature)
        elif tag == "reg":
            n = int(el.get("regnum", nxt[0]))
            regs.append((el.get("name", ""), n, int(el.get("bitsize", "0")), feature))
            nxt[0] = n + 1
        for child in el:
            _walk(child, feature)

    load("target.xml", "")
    return arch, regs


# -- the live memory ------------------------------------------------------------------------------


class GdbMemory(PageCachedMemory):
    """Guest-physical memory and registers of a QEMU guest through its gdbstub.

    The guest is stopped from open to close (QEMU stops it when we connect) and resumed on close
    (`resume=False` leaves it stopped). With `keep_running=True` it runs between reads: it is
    stopped only while a batch of pages is read, so tables can change under the walk (a warning
    says so). `ram` overrides the RAM ranges (default: `info mtree -f` over qRcmd, else
    DEFAULT_RAM for the architecture). `vcpu` selects the CPU whose registers are read (0-based;
    default 0, as QMP and dump-guest-memory; None: the stub's current one).

    >>> with GdbMemory("localhost", 1234) as mem:  # doctest: +SKIP
    ...     mem.cpu.regs["cr3"]
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        keep_running: bool = False,
        resume: bool = True,
        timeout: float = 5.0,
        ram: list[tuple[int, int]] | None = None,
        vcpu: int | None = 0,
        progress: Progress | None = None,
    ) -> None:
        self.warnings: list[str] = []
        self.keep_running = keep_running
        self.resume_on_close = resume
        self.remote = GdbRemote(host, port, timeout)
        self._phys = False
        try:
            self._open(ram, vcpu, progress)
        except BaseException:
            self._shutdown()
            raise

    def _open(self, ram: list[tuple[int, int]] | None, vcpu: int | None, progress: Progress | None) -> None:
        r = self.remote
        r.handshake()
        if r.request(b"Qqemu.PhyMemMode:1") != b"OK":
            raise PagewalkError(
                f"gdbstub at {r.addr} has no physical-memory mode (Qqemu.PhyMemMode): not QEMU's gdbstub?"
            )
        self._phys = True
        if vcpu is not None:
            # QEMU's thread ids are vCPU index + 1; after a stop the "current" vCPU is whichever
            # ran last, while QMP's `info registers` and dump-guest-memory's first note are vCPU 0
            if r.request(b"Hg%x" % (vcpu + 1)) != b"OK" and vcpu != 0:
                raise PagewalkError(f"gdbstub at {r.addr}: no vCPU {vcpu}")
        xml_arch, reglist = _target_regs(r)
        arch = _XML_ARCH.get(xml_arch or "", xml_arch)
        regs = self._read_registers(reglist, arch)
        if arch is None or (arch in WANTED_REGS and not any(k in regs for k in WANTED_REGS[arch])):
            # no target description: QEMU's monitor still prints the registers
            text = r.monitor("info registers")
            if text:
                a2, regs2 = parse_info_registers(text)
                arch = arch or a2
                for k, v in regs2.items():
                    regs.setdefault(k, v)
        if ram is None:
            text = r.monitor("info mtree -f")
            ram = parse_mtree_ram(text) if text else []
            if not ram:
                ram = DEFAULT_RAM.get(arch or "", [(0, 0xC0000000)])
                self.warnings.append(
                    "the gdbstub did not list the guest's RAM (monitor `info mtree -f`): assuming "
                    + ", ".join(f"{a:#x}-{b:#x}" for a, b in ram)
                )
        super().__init__(ram, CpuState(arch=arch, regs=regs), progress)
        if self.keep_running:
            self.warnings.append(
                "the guest keeps running between reads (keep_running): its page tables can change "
                "during the walk, so the view may be torn"
            )
            r.resume()

    def _read_registers(self, reglist: list[tuple[str, int, int, str]], arch: str | None) -> dict[str, int]:
        """Registers by name: everything `g` returns, then the wanted system registers by `p n`."""
        r = self.remote
        regs: dict[str, int] = {}
        byname = {name.lower(): (num, bits) for name, num, bits, _ in reglist}
        g = r.request(b"g")
        if g and g[:1] != b"E":
            off = 0
            for name, num, bits, _ in sorted(reglist, key=lambda t: t[1]):
                n = bits // 4
                if off + n > len(g):
                    break
                v = _reg_value(g[off : off + n])
                if v is not None and name:
                    regs[name.lower()] = v
                off += n
        for name in WANTED_REGS.get(arch or "", ()):
            if name in regs:
                continue
            found = [n for n in (name, *_REG_ALIASES.get(name, ())) if n in byname]
            if not found:
                continue
            num, bits = byname[found[0]]
            reply = r.request(b"p%x" % num)
            if reply and reply[:1] != b"E":
                v = _reg_value(reply[: bits // 4])
                if v is not None:
                    regs[name] = v
        return regs

    # batches: with keep_running the guest is stopped only while a batch is read
    def _begin_batch(self) -> None:
        if self.remote.running:
            self.remote.interrupt()

    def _end_batch(self) -> None:
        if self.keep_running and not self.closed:
            self.remote.resume()

    def _fetch(self, pa: int, size: int) -> bytes:
        return self.remote.read_memory(pa, size)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._shutdown()

    def _shutdown(self) -> None:
        """Physical mode off (QEMU keeps it globally), resume unless told not to, hang up."""
        r = self.remote
        try:
            r.timeout = min(r.timeout, 2.0)
            if r.running and (self._phys or not self.resume_on_close):
                r.interrupt(timeout=2.0)
            if self._phys:
                r.request(b"Qqemu.PhyMemMode:0")
                self._phys = False
            if self.resume_on_close and not r.running:
                r.resume()
        except PagewalkError:
            pass  # the connection is gone: nothing more to undo
        finally:
            self.closed = True
            r.close()


def _reg_value(hexbytes: bytes) -> int | None:
    """A register in target byte order (little-endian here); None when the stub says `xx`."""
    if not hexbytes or b"x" in hexbytes:
        return None
    try:
        return int.from_bytes(bytes.fromhex(hexbytes.decode()), "little")
    except ValueError:
        return None
