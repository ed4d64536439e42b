"""memory/gdbstub.py against a fake gdbstub (a thread on 127.0.0.1 that behaves like QEMU's).

The fake serves a small x86-64 page-table image built with PageTableBuilder, speaks the framing
(checksums, acks or no-ack mode, `}` escapes and `*` run-length encoding in its replies), stops
the "guest" on connect and on any byte while it runs (as QEMU does), and can misbehave: close the
connection, send garbage, go silent, corrupt a checksum.
"""

from __future__ import annotations

import io
import re
import socket
import threading
import time

import numpy as np
import pytest
from builders import X86_NX, X86_P, X86_RW, PageTableBuilder

from pagewalk.api import checkwx, dump
from pagewalk.arch.x86 import X86_64_4LEVEL
from pagewalk.errors import MemoryReadError, PagewalkError
from pagewalk.live import open_live, parse_gdb_address
from pagewalk.memory.gdbstub import (
    GdbMemory,
    checksum,
    decode_payload,
    encode_packet,
    parse_info_registers,
    parse_mtree_ram,
)
from pagewalk.target import resolve
from pagewalk.translate import translate

KERNEL_TEXT = 0xFFFFFFFF81000000
DIRECT_MAP = 0xFFFF888000000000
CR4 = 0x3506F0  # LA57 (bit 12) clear: 4-level paging
EFER = 0xD01

# Registers: the core feature is in `g`; cr4/efer only answer `p n` (as arm64/riscv system registers do).
TARGET_XML = (
    b'<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd">'
    b"<target><architecture>i386:x86-64</architecture>"
    b'<xi:include href="core.xml"/><xi:include href="sys.xml"/></target>'
)
CORE_XML = (
    b'<?xml version="1.0"?>\n<!-- escapes in replies: $ # } * -->\n'
    b'<feature name="org.gnu.gdb.i386.core">'
    b'<reg name="rax" bitsize="64" regnum="0"/><reg name="rip" bitsize="64"/>'
    b'<reg name="eflags" bitsize="32"/><reg name="cr0" bitsize="64"/><reg name="cr3" bitsize="64"/>'
    b"</feature>"
)
SYS_XML = (
    b'<?xml version="1.0"?><feature name="org.gnu.gdb.i386.sys">'
    b'<reg name="cr4" bitsize="64" regnum="40"/><reg name="efer" bitsize="64"/></feature>'
)


def rle(data: bytes) -> bytes:
    """gdbserver's run-length encoding: `c*N` = N-29 more copies of c (never N in `#$`)."""
    out = bytearray()
    i = 0
    while i < len(data):
        c = data[i]
        j = i
        while j + 1 < len(data) and data[j + 1] == c and j + 1 - i < 97:
            j += 1
        extra = j - i
        while extra + 29 in (ord("#"), ord("$")):
            extra -= 1
        if extra >= 3:
            out += bytes((c,)) + b"*" + bytes((extra + 29,))
            i += extra + 1
        else:
            out.append(c)
            i += 1
    return bytes(out)


def esc(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        out += bytes((0x7D, b ^ 0x20)) if b in b"$#}*" else bytes((b,))
    return bytes(out)


class FakeStub:
    """A gdbstub for one image: `mem` is physical memory from 0; one connection at a time."""

    def __init__(self, mem: bytes, regs: dict[str, int], *, packet_size=0x1000, noack=False, use_rle=True,
                 mtree=True, mode="ok"):
        self.mem = bytes(mem)
        self.regs = regs
        self.packet_size = packet_size
        self.offer_noack = noack
        self.use_rle = use_rle
        self.mtree = mtree
        self.mode = mode  # ok, close_after:N, garbage, silent, bad_checksum_once, no_phys
        self.log: list[bytes] = []
        self.m_sizes: list[int] = []
        self.running = True  # the guest runs until a debugger connects
        self.phys = False
        self.interrupts = 0
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.srv.settimeout(0.1)
        self.port = self.srv.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop = True
        self.srv.close()
        self.thread.join(5)

    # -- server ------------------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    self._session(conn)
                except OSError:
                    pass  # the client hung up mid-reply

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ack = True
        self.conn = conn
        self.bad_sent = False
        if self.mode == "banner":  # an SSH server, say: talks first, never in packets
            conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
            self.mode = "silent"
        if self.running:  # QEMU: vm_stop on connect, and a stop reply
            self.running = False
            self._put(b"T02thread:01;")
        buf = bytearray()
        while not self._stop:
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            buf += data
            while buf:
                if self.running:  # any byte stops a running QEMU guest and is consumed
                    self.running = False
                    self.interrupts += buf[0] == 3
                    del buf[:1]
                    self._put(b"T02thread:01;")
                    continue
                c = buf[0]
                if c != ord("$"):
                    del buf[:1]  # acks, a stray ^C, garbage
                    continue
                end = buf.find(b"#")
                if end < 0 or len(buf) < end + 3:
                    break
                raw, cs = bytes(buf[1:end]), bytes(buf[end + 1 : end + 3])
                del buf[: end + 3]
                assert int(cs, 16) == checksum(raw), f"client sent a bad checksum on {raw!r}"
                if self.ack:
                    conn.sendall(b"+")
                pkt = decode_payload(raw)
                self.log.append(pkt)
                if self.mode.startswith("close_after:") and len(self.log) > int(self.mode.split(":")[1]):
                    conn.close()
                    return
                if self.mode == "garbage" and len(self.log) > 1:
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n" * 200)
                    continue
                if self.mode == "silent" and len(self.log) > 1:
                    continue
                reply = self._handle(pkt)
                if reply is not None:
                    self._put(reply, binary=pkt.startswith(b"qXfer"))

    def _put(self, payload: bytes, binary: bool = False) -> None:
        data = esc(payload) if binary else payload
        if self.use_rle:
            data = rle(data)
        cs = checksum(data)
        if self.mode == "bad_checksum_once" and not self.bad_sent and len(data) > 100:
            self.bad_sent = True
            self.conn.sendall(b"$" + data + b"#%02x" % ((cs + 1) & 0xFF))
            # the client answers `-`; QEMU resends the packet
            self.conn.sendall(b"$" + data + b"#%02x" % cs)
            return
        self.conn.sendall(b"$" + data + b"#%02x" % cs)

    def _reg_hex(self, name: str, bits: int) -> bytes:
        return self.regs.get(name, 0).to_bytes(bits // 8, "little").hex().encode()

    def _handle(self, pkt: bytes) -> bytes | None:
        if pkt.startswith(b"qSupported"):
            extra = b";QStartNoAckMode+" if self.offer_noack else b""
            return b"PacketSize=%x;qXfer:features:read+" % self.packet_size + extra
        if pkt == b"QStartNoAckMode":
            self._put(b"OK")
            self.ack = False
            return None
        if pkt == b"?":
            return b"T05thread:01;"
        if pkt.startswith(b"Qqemu.PhyMemMode:"):
            if self.mode == "no_phys":
                return b""
            self.phys = pkt.endswith(b"1")
            return b"OK"
        if pkt.startswith(b"qXfer:features:read:"):
            annex, rng = pkt[len(b"qXfer:features:read:") :].split(b":")
            off, n = (int(x, 16) for x in rng.split(b","))
            doc = {b"target.xml": TARGET_XML, b"core.xml": CORE_XML, b"sys.xml": SYS_XML}.get(annex)
            if doc is None:
                return b"E00"
            part = doc[off : off + n]
            return (b"l" if off + n >= len(doc) else b"m") + part
        if pkt == b"g":
            return b"".join(
                self._reg_hex(n, b) for n, b in (("rax", 64), ("rip", 64), ("eflags", 32), ("cr0", 64), ("cr3", 64))
            )
        if pkt.startswith(b"p"):
            num = int(pkt[1:], 16)
            return {40: self._reg_hex("cr4", 64), 41: self._reg_hex("efer", 64)}.get(num, b"E00")
        if pkt.startswith(b"m"):
            a, n = (int(x, 16) for x in pkt[1:].split(b","))
            self.m_sizes.append(n)
            if not self.phys:
                return b"E14"  # virtual mode: the test image has no mapping for a PA
            if n > self.packet_size // 2:
                return b"E22"  # QEMU refuses more than MAX_PACKET_LENGTH / 2
            if a + n > len(self.mem):
                return b"E14"
            return self.mem[a : a + n].hex().encode()
        if pkt.startswith(b"qRcmd,"):
            cmd = bytes.fromhex(pkt[6:].decode()).decode()
            if cmd == "info mtree -f" and self.mtree:
                text = (
                    'FlatView #0\n AS "I/O", root: io\n  0000000000000000-0000000000000007 (prio 0, i/o): dma\n\n'
                    'FlatView #1\n AS "memory", root: system\n AS "cpu-memory-0", root: system\n'
                    f"  0000000000000000-{len(self.mem) - 1:016x} (prio 0, ram): pc.ram\n"
                    "  00000000fec00000-00000000fec00fff (prio 0, i/o): ioapic\n"
                )
                out = text.encode()
                for i in range(0, len(out), 200):
                    self._put(b"O" + out[i : i + 200].hex().encode())
                return b"OK"
            return b""
        if pkt == b"c":
            self.running = True
            return None
        if pkt.startswith(b"Hg"):
            return b"OK"
        return b""


def build_image() -> tuple[bytes, int]:
    """A 4-level kernel-like table set: 2M text, 4K pages, a 1G direct-map page, NX data."""
    b = PageTableBuilder(X86_64_4LEVEL, base=0x1000)
    b.map(KERNEL_TEXT, 0x200000, 2 << 20, X86_P)
    b.map(KERNEL_TEXT + (2 << 20), 0x400000, 4096, X86_P | X86_RW | X86_NX)
    b.map(KERNEL_TEXT + (2 << 20) + 4096, 0x401000, 4096, X86_P | X86_NX)
    b.map(DIRECT_MAP, 0, 1 << 30, X86_P | X86_RW | X86_NX)
    for i in range(40):  # many PTE tables: several batches, several m chunks each
        b.map(0xFFFFC90000000000 + i * (2 << 20), 0x500000 + i * 4096, 4096, X86_P | X86_RW | X86_NX)
    mem = bytes(b.base) + bytes(b.image)
    mem += bytes(-len(mem) % 4096)
    return mem, b.root


@pytest.fixture
def image():
    return build_image()


@pytest.fixture
def stub(image):
    mem, root = image
    s = FakeStub(mem, {"rax": 7, "rip": KERNEL_TEXT + 0x10, "eflags": 0x46, "cr0": 0x80050033, "cr3": root,
                       "cr4": CR4, "efer": EFER})
    yield s
    s.close()


def open_stub(s: FakeStub, **kw) -> GdbMemory:
    host, port = parse_gdb_address(s.addr)
    return GdbMemory(host, port, timeout=kw.pop("timeout", 2.0), **kw)


def wait_for(pred, timeout=2.0) -> bool:
    """Poll `pred` until true (the fake handles packets in its own thread)."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


def text_dump(target, view="current_kernel") -> str:
    out = io.StringIO()
    dump(target, view, out)
    return out.getvalue()


# -- framing -------------------------------------------------------------------------------------


def test_packet_checksum_and_escape():
    """Packets are framed as $data#cs with the modulo-256 sum, and $ # } * are escaped as } + (byte ^ 0x20)."""
    assert encode_packet(b"m1000,8") == b"$m1000,8#" + b"%02x" % (sum(b"m1000,8") % 256)
    assert encode_packet(b"a$b#c}d*") == b"$a}\x04b}\x03c}]d}\x0a#" + b"%02x" % checksum(b"a}\x04b}\x03c}]d}\x0a")


def test_decode_run_length_then_escapes():
    """Replies are run-length expanded (X*n = n-29 more X) before } escapes are undone."""
    assert decode_payload(b"0* ") == b"0" * 4  # ' ' = 32: 3 more
    assert decode_payload(b"ab*\"c") == b"a" + b"b" * 6 + b"c"  # '"' = 34: 5 more
    assert decode_payload(b"x}]y") == b"x}y"
    assert decode_payload(b"}]]* ") == b"}" + b"]" * 4  # RLE of the escaped stream, then unescape
    assert decode_payload(rle(b"0" * 1000 + b"12" + b"f" * 7)) == b"0" * 1000 + b"12" + b"f" * 7


def test_parse_mtree_keeps_only_system_ram():
    """`info mtree -f` gives the RAM and ROM ranges of the "memory" address space, merged where adjacent."""
    text = (
        'FlatView #0\n AS "I/O", root: io\n  0000000000000000-0000000000000fff (prio 0, ram): bogus\n'
        'FlatView #1\n AS "memory", root: system\n'
        "  0000000000000000-000000000009ffff (prio 0, ram): pc.ram\n"
        "  00000000000a0000-00000000000bffff (prio 1, i/o): vga-lowmem\n"
        "  00000000000c0000-00000000000cafff (prio 0, rom): pc.ram @00000000000c0000\n"
        "  00000000000cb000-000000000fffffff (prio 0, ram): pc.ram @00000000000cb000\n"
        "  00000000fec00000-00000000fec00fff (prio 0, i/o): ioapic\n"
        "  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios\n"
    )
    assert parse_mtree_ram(text) == [(0, 0xA0000), (0xC0000, 0x10000000), (0xFFFC0000, 0x100000000)]


def test_parse_info_registers_x86_and_riscv():
    """HMP `info registers` yields x86 CR0-CR4/EFER (first vCPU only) and riscv satp."""
    x86 = (
        "CPU#0\nRAX=0000000000000000 RBX=0000000000000001\nCR0=80050033 CR2=00007f0000000000 "
        "CR3=0000000002a4e000 CR4=00350ef0\nEFER=0000000000000d01\nCPU#1\nCR3=0000000000001000\n"
    )
    assert parse_info_registers(x86) == (
        "x86_64", {"cr0": 0x80050033, "cr2": 0x7F0000000000, "cr3": 0x2A4E000, "cr4": 0x350EF0, "efer": 0xD01}
    )
    rv = " pc       ffffffff80001234\n mstatus  0000000a00000080\n satp     a000000000080a1b\n"
    arch, regs = parse_info_registers(rv)
    assert arch == "riscv64" and regs["satp"] == 0xA000000000080A1B


def test_parse_gdb_address_forms():
    """--gdb takes HOST:PORT, :PORT, PORT and [v6]:PORT, localhost by default."""
    assert parse_gdb_address("example:1234") == ("example", 1234)
    assert parse_gdb_address(":1234") == ("localhost", 1234)
    assert parse_gdb_address("1234") == ("localhost", 1234)
    assert parse_gdb_address("[::1]:9") == ("::1", 9)
    with pytest.raises(PagewalkError, match="HOST:PORT"):
        parse_gdb_address("localhost:gdb")


# -- a session -----------------------------------------------------------------------------------


def test_registers_from_g_and_p(stub, image):
    """cr3 comes from `g` at its target.xml offset, cr4/efer by `p n` with the XML's regnum; arch from the XML."""
    _, root = image
    with open_stub(stub) as mem:
        assert mem.cpu.arch == "x86_64"
        assert mem.cpu.regs["cr3"] == root
        assert mem.cpu.regs["cr0"] == 0x80050033
        assert mem.cpu.regs["rip"] == KERNEL_TEXT + 0x10
        assert mem.cpu.regs["cr4"] == CR4 and mem.cpu.regs["efer"] == EFER
    assert b"p28" in stub.log and b"p29" in stub.log  # 40, 41 in hex
    assert b"Hg1" in stub.log  # vCPU 0's registers, as QMP and dump-guest-memory give
    assert b"qXfer:features:read:sys.xml:0,fe0" in stub.log


def test_live_dump_equals_the_image_dump(stub, image, tmp_path):
    """The dump, W+X verdict and translation through the stub equal those of the same bytes as a raw image."""
    mem_bytes, root = image
    raw = tmp_path / "mem.raw"
    raw.write_bytes(mem_bytes)
    from pagewalk import open_image

    want_t = resolve(open_image(str(raw), "raw", 0), "x86_64", regs={"cr3": root, "cr4": CR4})
    with open_stub(stub) as mem:
        t = resolve(mem)
        got = text_dump(t)
        assert got == text_dump(want_t)
        assert checkwx(t).lines == checkwx(want_t).lines
        tr = translate(mem, t.mode, t.root("current_kernel"), KERNEL_TEXT + (2 << 20) + 4096 + 0x123)
        assert tr.pa == 0x401123
    assert "0xffffffff81000000-0xffffffff81200000           2M     ro         PSE         x  pmd" in got
    assert "0xffff888000000000-0xffff888040000000           1G     RW         PSE         NX pud" in got
    assert got.count("4K     RW                     NX pte") == 41


def test_reads_are_chunked_by_packet_size_and_cached(stub, image):
    """m reads never exceed PacketSize/2 bytes, a page is fetched once, and whole tables come per batch."""
    _, root = image
    with open_stub(stub) as mem:
        n0 = len(stub.m_sizes)
        t = resolve(mem)
        text_dump(t)
        first = len(stub.m_sizes) - n0
        text_dump(t)
        assert len(stub.m_sizes) - n0 == first  # the second walk is served from the cache
        assert max(stub.m_sizes) <= 0x1000 // 2
        assert mem.stats["pages"] * 4096 == sum(stub.m_sizes)
        assert mem.table(root, 512, np.uint64)[511] != 0  # the kernel half of the PGD


def test_small_packet_size_gives_more_smaller_reads(image):
    """With PacketSize 0x100 every m asks at most 0x78 bytes (header and hex doubling) and the data is intact."""
    mem_bytes, root = image
    s = FakeStub(mem_bytes, {"cr3": root, "cr4": CR4}, packet_size=0x100)
    try:
        with open_stub(s) as mem:
            assert mem.read(root, 4096) == mem_bytes[root : root + 4096]
        assert max(s.m_sizes) <= 0x80 and len(s.m_sizes) >= 4096 // 0x80
    finally:
        s.close()


def test_stub_that_refuses_the_advertised_size_gets_halved_requests(image):
    """A stub that answers E22 to PacketSize/2 reads is asked for half as much, and the bytes still match."""
    mem_bytes, root = image
    s = FakeStub(mem_bytes, {"cr3": root, "cr4": CR4}, packet_size=0x2000)
    orig = s._handle

    def limited(pkt):
        if pkt.startswith(b"m") and int(pkt.split(b",")[1], 16) > 0x400:
            s.m_sizes.append(int(pkt.split(b",")[1], 16))
            return b"E22"
        return orig(pkt)

    s._handle = limited
    try:
        with open_stub(s) as mem:
            assert mem.read(root, 4096) == mem_bytes[root : root + 4096]
        assert s.m_sizes[-1] == 0x400
    finally:
        s.close()


def test_no_ack_mode_when_offered(image):
    """A stub offering QStartNoAckMode gets it; afterwards the client sends no `+` and still reads right."""
    mem_bytes, root = image
    s = FakeStub(mem_bytes, {"cr3": root, "cr4": CR4}, noack=True, use_rle=False)
    try:
        with open_stub(s) as mem:
            assert mem.remote.ack is False
            assert mem.read(root, 64) == mem_bytes[root : root + 64]
        assert b"QStartNoAckMode" in s.log
    finally:
        s.close()


def test_stop_on_open_resume_on_close(stub):
    """The guest is stopped while open (phys mode on) and resumed with `c` on close, phys mode switched back off."""
    with open_stub(stub) as mem:
        assert stub.running is False and stub.phys is True
        mem.read(0x1000, 8)
    assert wait_for(lambda: stub.running and not stub.phys)
    assert stub.log[-2:] == [b"Qqemu.PhyMemMode:0", b"c"]


def test_resume_false_leaves_the_guest_stopped(stub):
    """resume=False leaves the guest stopped after close."""
    with open_stub(stub, resume=False):
        pass
    time.sleep(0.1)
    assert stub.running is False and b"c" not in stub.log


def test_keep_running_interrupts_for_each_batch(stub, image):
    """keep_running: the guest runs between batches, each batch is preceded by ^C and its stop reply; a warning says the view may be torn."""
    mem_bytes, root = image
    with open_stub(stub, keep_running=True) as mem:
        assert any("torn" in w for w in mem.warnings)
        assert wait_for(lambda: stub.running)
        assert mem.read(root, 4096) == mem_bytes[root : root + 4096]
        assert wait_for(lambda: stub.running)  # resumed after the batch
        mem.read(root + 2 * 4096, 8)
        assert stub.interrupts == 2
    assert wait_for(lambda: stub.running)
    assert stub.phys is False


def test_ram_ranges_from_monitor(stub, image):
    """runs() are the RAM ranges of `info mtree -f` over qRcmd; outside them nothing is read."""
    mem_bytes, _ = image
    with open_stub(stub) as mem:
        assert mem.runs() == [(0, len(mem_bytes))]
        assert mem.contains(0x1000, 4096) and not mem.contains(len(mem_bytes) - 4, 8)
        n = len(stub.m_sizes)
        with pytest.raises(MemoryReadError):
            mem.read(0xFEC00000, 8)
        assert len(stub.m_sizes) == n
        t, ok = mem.gather_tables(np.array([0x1000, 0xFEC00000], np.uint64), 512, np.uint64)
        assert ok.tolist() == [True, False] and not t[1].any()


def test_default_ram_without_monitor(image):
    """Without qRcmd the x86 default RAM (below 640K, 1M-3G) is assumed and said in a warning."""
    mem_bytes, root = image
    s = FakeStub(mem_bytes, {"cr3": root, "cr4": CR4}, mtree=False)
    try:
        with open_stub(s) as mem:
            assert mem.runs() == [(0, 0xA0000), (0x100000, 0xC0000000)]
            assert any("assuming 0x0-0xa0000, 0x100000-0xc0000000" in w for w in mem.warnings)
    finally:
        s.close()


def test_open_live_gdb(stub, image):
    """open_live(gdb=...) returns a GdbMemory with the stub's registers."""
    _, root = image
    mem = open_live(gdb=stub.addr, progress=False)
    try:
        assert isinstance(mem, GdbMemory) and mem.cpu.regs["cr3"] == root
    finally:
        mem.close()


def test_progress_callback_sees_every_batch(stub):
    """A progress callback gets (done, total) per range, ending at total."""
    calls = []
    with open_stub(stub, progress=lambda d, t: calls.append((d, t))) as mem:
        resolve(mem)
        text_dump(resolve(mem))
    assert calls and all(d <= t for d, t in calls)
    ends = [d for d, t in calls if d == t]
    assert ends and sum(ends) == sum(t for d, t in calls if d == t)


def test_bad_checksum_is_nacked_and_resent(image):
    """A reply with a bad checksum is answered with `-` and the resent packet is used."""
    mem_bytes, root = image
    s = FakeStub(mem_bytes, {"cr3": root, "cr4": CR4}, mode="bad_checksum_once", use_rle=False)
    try:
        with open_stub(s) as mem:
            assert mem.read(root, 4096) == mem_bytes[root : root + 4096]
    finally:
        s.close()


# -- errors --------------------------------------------------------------------------------------


def test_no_stub_listening():
    """A port with nobody listening is "no gdbstub at HOST:PORT"."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(PagewalkError, match=rf"no gdbstub at 127.0.0.1:{port} \(connection refused\)"):
        GdbMemory("127.0.0.1", port, timeout=1.0)


def test_server_closes_mid_session(image):
    """A stub that hangs up is "connection closed"."""
    mem_bytes, root = image
    s = FakeStub(mem_bytes, {"cr3": root, "cr4": CR4}, mode="close_after:3")
    try:
        with pytest.raises(PagewalkError, match=rf"gdbstub at {s.addr}: connection closed"):
            open_stub(s)
    finally:
        s.close()


def test_garbage_is_not_a_gdbstub(image):
    """A peer that answers with non-protocol bytes is reported as not speaking the protocol."""
    mem_bytes, root = image
    s = FakeStub(mem_bytes, {"cr3": root, "cr4": CR4}, mode="garbage")
    try:
        with pytest.raises(PagewalkError, match="does not speak the GDB remote protocol"):
            open_stub(s)
    finally:
        s.close()


def test_banner_with_dashes_is_not_taken_for_nacks(image):
    """A server that greets with a banner ("SSH-2.0-...": dashes, not nacks) is not a gdbstub."""
    mem_bytes, root = image
    s = FakeStub(mem_bytes, {"cr3": root, "cr4": CR4}, mode="banner")
    try:
        with pytest.raises(PagewalkError, match=r"does not speak the GDB remote protocol \(it sent b'SSH"):
            open_stub(s, timeout=0.5)
    finally:
        s.close()


def test_silent_stub_times_out(image):
    """A stub that stops answering gives a timeout error within the timeout, not a hang."""
    mem_bytes, root = image
    s = FakeStub(mem_bytes, {"cr3": root, "cr4": CR4}, mode="silent")
    try:
        t0 = time.monotonic()
        with pytest.raises(PagewalkError, match=r"no reply within 0.5 s"):
            open_stub(s, timeout=0.5)
        assert time.monotonic() - t0 < 5
    finally:
        s.close()


def test_stub_without_physical_mode_is_refused(image):
    """A stub that does not know Qqemu.PhyMemMode is refused (its m reads are virtual)."""
    mem_bytes, root = image
    s = FakeStub(mem_bytes, {"cr3": root, "cr4": CR4}, mode="no_phys")
    try:
        with pytest.raises(PagewalkError, match="physical-memory mode"):
            open_stub(s)
        assert wait_for(lambda: s.running)  # resumed on the way out
    finally:
        s.close()


def test_silent_tcp_server_is_not_a_hang():
    """A TCP server that accepts and never speaks times out with the address in the message."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    try:
        with pytest.raises(PagewalkError, match=re.escape(f"gdbstub at 127.0.0.1:{port}: no reply within 0.3 s")):
            GdbMemory("127.0.0.1", port, timeout=0.3)
    finally:
        srv.close()


# -- QMP (memory/qmp.py) against a fake monitor ---------------------------------------------------


class FakeQmp:
    """A QMP monitor on a unix socket: greeting, capabilities, status, stop/cont, HMP, pmemsave."""

    def __init__(self, path, mem: bytes, regs_text: str, *, running=True, pmemsave_ok=True, hang_on=None):
        import json

        self.json = json
        self.mem = mem
        self.regs_text = regs_text
        self.running = running
        self.pmemsave_ok = pmemsave_ok
        self.hang_on = hang_on
        self.log: list[str] = []
        self.path = str(path)
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(self.path)
        self.srv.listen(1)
        self.srv.settimeout(0.1)
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        self._stop = True
        conn = getattr(self, "conn", None)
        if conn is not None:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(5)
        self.srv.close()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self.conn = conn
                conn.settimeout(None)
                f = conn.makefile("wb")
                self._send(f, {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""},
                                       "capabilities": []}})
                buf, dec = "", self.json.JSONDecoder()
                while not self._stop:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        break
                    if not data:
                        break
                    buf += data.decode()
                    while buf.strip():  # QMP is a stream of JSON objects, no line ends required
                        try:
                            msg, end = dec.raw_decode(buf.lstrip())
                        except ValueError:
                            break
                        buf = buf.lstrip()[end:]
                        self._answer(f, msg)

    def _answer(self, f, msg):
        cmd, args = msg.get("execute"), msg.get("arguments", {})
        self.log.append(cmd if cmd != "human-monitor-command" else args["command-line"])
        if cmd == self.hang_on:
            return
        ret = self._handle(cmd, args)
        reply = {"error": {"class": "GenericError", "desc": str(ret)}} if isinstance(ret, Exception) else {"return": ret}
        if "id" in msg:
            reply["id"] = msg["id"]
        try:
            self._send(f, reply)
        except OSError:
            pass  # the client gave up on us

    def _send(self, f, obj):
        f.write(self.json.dumps(obj).encode() + b"\r\n")
        f.flush()

    def _handle(self, cmd, args):
        if cmd == "qmp_capabilities":
            return {}
        if cmd == "query-status":
            return {"status": "running" if self.running else "paused", "running": self.running, "singlestep": False}
        if cmd == "stop":
            self.running = False
            return {}
        if cmd == "cont":
            self.running = True
            return {}
        if cmd == "query-target":
            return {"arch": "x86_64"}
        if cmd == "pmemsave":
            if not self.pmemsave_ok:
                return Exception(f"Could not open '{args['filename']}': Permission denied")
            with open(args["filename"], "wb") as out:
                out.write(self.mem[args["val"] : args["val"] + args["size"]])
            return {}
        if cmd == "human-monitor-command":
            line = args["command-line"]
            if line == "info registers":
                return self.regs_text
            if line == "info mtree -f":
                return (f'FlatView #0\n AS "memory", root: system\n'
                        f"  0000000000000000-{len(self.mem) - 1:016x} (prio 0, ram): pc.ram\n")
            m = re.fullmatch(r"xp /(\d+)gx (0x[0-9a-f]+)", line)
            if m:
                n, a = int(m.group(1)), int(m.group(2), 16)
                words = [int.from_bytes(self.mem[a + 8 * i : a + 8 * i + 8], "little") for i in range(n)]
                return "".join(
                    f"{a + 16 * i:016x}: " + " ".join(f"0x{w:016x}" for w in words[2 * i : 2 * i + 2]) + "\r\n"
                    for i in range((n + 1) // 2)
                )
            return f"unknown command: '{line}'\r\n"
        return Exception(f"The command {cmd} has not been found")


@pytest.fixture
def qmp_regs(image):
    _, root = image
    return (f"RAX=0000000000000000 RBX=0000000000000000\nCR0=80050033 CR2=0000000000000000 CR3={root:016x} "
            f"CR4={CR4:08x}\nEFER=0000000000000d01\n")


def _raw_target(mem_bytes, root, tmp_path):
    from pagewalk import open_image

    raw = tmp_path / "mem.raw"
    raw.write_bytes(mem_bytes)
    return resolve(open_image(str(raw), "raw", 0), "x86_64", regs={"cr3": root, "cr4": CR4})


@pytest.mark.parametrize("method", ["pmemsave", "xp"])
def test_qmp_memory_against_fake_monitor(image, qmp_regs, tmp_path, method):
    """QmpMemory stops a running guest, reads CR3/CR4 from `info registers`, dumps like the raw image, and resumes it."""
    pytest.importorskip("qemu.qmp")
    from pagewalk.memory.qmp import QmpMemory

    mem_bytes, root = image
    q = FakeQmp(tmp_path / "qmp.sock", mem_bytes, qmp_regs)
    try:
        with QmpMemory(q.path, method=method, timeout=2.0) as mem:
            assert q.running is False
            assert mem.cpu.arch == "x86_64" and mem.cpu.regs["cr3"] == root and mem.cpu.regs["efer"] == 0xD01
            assert mem.runs() == [(0, len(mem_bytes))]
            assert text_dump(resolve(mem)) == text_dump(_raw_target(mem_bytes, root, tmp_path))
        assert q.running is True and q.log[-1] == "cont"
        assert (method == "xp") == any(c.startswith("xp ") for c in q.log)
    finally:
        q.close()


def test_qmp_leaves_a_paused_guest_paused_and_falls_back_to_xp(image, qmp_regs, tmp_path):
    """A guest paused before we attach stays paused; a pmemsave QEMU cannot write falls back to xp with a warning."""
    pytest.importorskip("qemu.qmp")
    from pagewalk.memory.qmp import QmpMemory

    mem_bytes, root = image
    q = FakeQmp(tmp_path / "qmp.sock", mem_bytes, qmp_regs, running=False, pmemsave_ok=False)
    try:
        with QmpMemory(q.path, timeout=2.0) as mem:
            assert mem.read(root, 4096) == mem_bytes[root : root + 4096]
            assert mem.method == "xp" and any("Permission denied" in w for w in mem.warnings)
        assert q.running is False and "cont" not in q.log and "stop" not in q.log
    finally:
        q.close()


def test_qmp_errors_are_one_line(image, qmp_regs, tmp_path):
    """No socket, and a monitor that stops answering, give PagewalkErrors naming the socket, within the timeout."""
    pytest.importorskip("qemu.qmp")
    from pagewalk.memory.qmp import QmpMemory

    with pytest.raises(PagewalkError, match=r"no QMP monitor at .*none.sock \(\[Errno 2\] No such file"):
        QmpMemory(str(tmp_path / "none.sock"), timeout=1.0)
    mem_bytes, root = image
    q = FakeQmp(tmp_path / "qmp.sock", mem_bytes, qmp_regs, hang_on="query-status")
    try:
        t0 = time.monotonic()
        with pytest.raises(PagewalkError, match=r"QMP at .*qmp.sock: no reply to query-status within 0.5 s"):
            QmpMemory(q.path, timeout=0.5)
        assert time.monotonic() - t0 < 5
    finally:
        q.close()
