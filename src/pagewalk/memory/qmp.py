"""A live QEMU guest through its QMP monitor, with the `qemu.qmp` library (asyncio, wrapped here).

- `query-status`, then `stop` if the guest runs (and `cont` on close, only then: a guest that
  someone else paused stays paused);
- `query-target` for the architecture; registers from HMP `info registers` through
  `human-monitor-command` (x86 CR0-CR4 and EFER, riscv satp; QEMU prints no arm64 system
  registers there: use the gdbstub or --reg for arm64);
- RAM ranges from HMP `info mtree -f` (the blocks dump-guest-memory writes);
- memory with `pmemsave` of the needed ranges into a temporary file that QEMU writes and we
  read (QEMU must see our file system: same machine or shared /tmp), else HMP `xp /Ng` text
  (works from anywhere, ~4x slower; `method="xp"` forces it).

`QmpMemory` has the same interface as `GdbMemory` (a page cache in front of the monitor).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import tempfile
import threading
from typing import Any

from ..errors import MemoryReadError, PagewalkError
from .base import CpuState
from .gdbstub import DEFAULT_RAM, PAGE, PageCachedMemory, Progress, parse_info_registers, parse_mtree_ram

_QMP_ARCH = {"x86_64": "x86_64", "aarch64": "arm64", "riscv64": "riscv64", "riscv32": "riscv32", "i386": "i386"}

# qemu.qmp logs connection trouble; we report it ourselves as one PagewalkError line.
logging.getLogger("qemu.qmp").addHandler(logging.NullHandler())


class QmpSession:
    """A synchronous QMP connection: `qemu.qmp.QMPClient` on an event loop in a private thread.

    Every call is bounded by `timeout`; failures become PagewalkError with the socket's name.
    The thread makes it usable from code that already runs an asyncio loop.
    """

    def __init__(self, address: str | tuple[str, int], timeout: float = 10.0) -> None:
        try:
            from qemu.qmp import QMPClient
        except ImportError:
            raise PagewalkError("--qmp needs the qemu.qmp package (pip install qemu.qmp)") from None
        self.address = address
        self.where = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pagewalk-qmp", daemon=True)
        self._thread.start()
        self._client = QMPClient("pagewalk")
        try:
            self._run(self._client.connect(address), what="connect")
        except PagewalkError as e:
            self.close()
            if "no reply" in str(e):
                raise PagewalkError(
                    f"QMP monitor at {self.where} sent no greeting within {timeout:g} s "
                    "(QEMU serves one QMP client per socket: is another one connected?)"
                ) from None
            raise PagewalkError(f"no QMP monitor at {self.where} ({getattr(e, 'reason', e)})") from None

    def _run(self, coro: Any, what: str, timeout: float | None = None) -> Any:
        from qemu.qmp import ExecuteError, QMPError

        t = self.timeout if timeout is None else timeout
        fut = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, t), self._loop)
        try:
            return fut.result(t + 1)
        except ExecuteError as e:
            raise PagewalkError(f"QMP {what}: {e}") from None
        except TimeoutError:
            fut.cancel()
            raise PagewalkError(f"QMP at {self.where}: no reply to {what} within {t:g} s") from None
        except (QMPError, OSError, EOFError) as e:
            err = PagewalkError(f"QMP at {self.where}: {what} failed: {_reason(e)}")
            err.reason = _reason(e)  # type: ignore[attr-defined]
            raise err from None

    def execute(self, cmd: str, args: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        return self._run(self._client.execute(cmd, args or {}), what=cmd, timeout=timeout)

    def hmp(self, command_line: str, timeout: float | None = None) -> str:
        out = self.execute("human-monitor-command", {"command-line": command_line}, timeout)
        return out if isinstance(out, str) else ""

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            if self._client.runstate.name != "IDLE":
                self._run(self._client.disconnect(), what="disconnect", timeout=2.0)
        except PagewalkError:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()


def _reason(e: BaseException) -> str:
    """The innermost cause of a qemu.qmp error ("[Errno 2] No such file or directory")."""
    seen = e
    while getattr(seen, "exc", None) is not None:
        seen = seen.exc
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen) or type(seen).__name__
    return "connection closed" if isinstance(seen, EOFError) else text


def parse_qmp_address(spec: str) -> str | tuple[str, int]:
    """A unix socket path, or HOST:PORT for a TCP monitor (`-qmp tcp:HOST:PORT,server=on`)."""
    if os.path.exists(spec) or "/" in spec:
        return spec
    host, sep, port = spec.rpartition(":")
    if sep and port.isdigit():
        return (host or "localhost", int(port))
    return spec


class QmpMemory(PageCachedMemory):
    """Guest-physical memory and registers of a QEMU guest through QMP.

    The guest is stopped from open to close if it was running (then resumed; `resume=False`
    leaves it stopped); `keep_running=True` never stops it (the view may be torn: a warning says
    so). `method`: "auto" (pmemsave, falling back to xp), "pmemsave" or "xp".

    >>> with QmpMemory("/tmp/qmp.sock") as mem:  # doctest: +SKIP
    ...     mem.cpu.regs["cr3"]
    """

    max_range = 256 * PAGE

    def __init__(
        self,
        address: str | tuple[str, int],
        *,
        keep_running: bool = False,
        resume: bool = True,
        timeout: float = 10.0,
        ram: list[tuple[int, int]] | None = None,
        method: str = "auto",
        progress: Progress | None = None,
    ) -> None:
        if method not in ("auto", "pmemsave", "xp"):
            raise PagewalkError(f"unknown QMP memory method {method!r} (auto, pmemsave, xp)")
        self.warnings: list[str] = []
        self.keep_running = keep_running
        self.resume_on_close = resume
        self.method = method
        self._we_stopped = False
        self._tmpdir: str | None = None
        self.closed = False
        if isinstance(address, str):
            address = parse_qmp_address(address)
        self.session = QmpSession(address, timeout)
        try:
            self._open(ram, progress)
        except BaseException:
            self._shutdown()
            raise

    def _open(self, ram: list[tuple[int, int]] | None, progress: Progress | None) -> None:
        s = self.session
        status = s.execute("query-status")
        running = bool(status.get("running")) if isinstance(status, dict) else False
        if running and not self.keep_running:
            s.execute("stop")
            self._we_stopped = True
        elif running:
            self.warnings.append(
                "the guest keeps running while its tables are read (keep_running): the view may be torn"
            )
        try:
            target = s.execute("query-target")
            arch = _QMP_ARCH.get(target.get("arch", ""), target.get("arch"))
        except PagewalkError:
            arch = None
        text = s.hmp("info registers")
        a2, regs = parse_info_registers(text)
        arch = arch or a2
        if arch == "arm64":
            self.warnings.append(
                "QEMU's `info registers` has no arm64 system registers: pass --reg ttbr1_el1=… --reg tcr_el1=… "
                "or use the gdbstub (--gdb)"
            )
        if ram is None:
            ram = parse_mtree_ram(s.hmp("info mtree -f"))
            if not ram:
                ram = DEFAULT_RAM.get(arch or "", [(0, 0xC0000000)])
                self.warnings.append(
                    "QMP `info mtree -f` listed no RAM: assuming " + ", ".join(f"{a:#x}-{b:#x}" for a, b in ram)
                )
        super().__init__(ram, CpuState(arch=arch, regs=regs), progress)

    # reading ------------------------------------------------------------------------------------
    def _fetch(self, pa: int, size: int) -> bytes:
        if self.method != "xp":
            try:
                return self._pmemsave(pa, size)
            except PagewalkError as e:
                if self.method == "pmemsave":
                    raise
                self.warnings.append(f"pmemsave unusable ({e}); reading with `xp` instead")
                self.method = "xp"
        return self._xp(pa, size)

    def _pmemsave(self, pa: int, size: int) -> bytes:
        if self._tmpdir is None:
            # private (0700): QEMU running as another user cannot write here, and then `auto`
            # falls back to xp, rather than a directory others could plant a file in
            self._tmpdir = tempfile.mkdtemp(prefix="pagewalk-qmp-")
        path = os.path.join(self._tmpdir, "mem.bin")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.session.execute("pmemsave", {"val": pa, "size": size, "filename": path})
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise PagewalkError(f"QEMU's pmemsave file {path} is not readable here ({e.strerror})") from None
        if len(data) != size:
            raise PagewalkError(f"pmemsave wrote {len(data)} of {size} bytes at {pa:#x}")
        return data

    def _xp(self, pa: int, size: int) -> bytes:
        out = bytearray()
        step = 512 * 8  # one page of 8-byte words per command
        while len(out) < size:
            a = pa + len(out)
            n = min(step, size - len(out))
            text = self.session.hmp(f"xp /{n // 8}gx {a:#x}")
            words = []
            for line in text.splitlines():
                head, sep, rest = line.partition(":")
                if sep and re.fullmatch(r"\s*[0-9a-fA-F]+", head):
                    words += [int(w, 16) for w in rest.split()]
            if len(words) != n // 8:
                raise MemoryReadError(a, n, f"QMP xp: {text.strip()[:80] or 'no output'}")
            out += b"".join(w.to_bytes(8, "little") for w in words)
        return bytes(out)

    # closing ------------------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._shutdown()

    def _shutdown(self) -> None:
        self.closed = True
        try:
            if self._we_stopped and self.resume_on_close:
                self.session.execute("cont", timeout=5.0)
                self._we_stopped = False
        except PagewalkError:
            pass
        finally:
            self.session.close()
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
                self._tmpdir = None
