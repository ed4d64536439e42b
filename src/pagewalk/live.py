"""Live QEMU guests: open a gdbstub (`--gdb HOST:PORT`) or a QMP monitor (`--qmp PATH`) as memory.

    >>> from pagewalk.live import open_live
    >>> from pagewalk.target import resolve
    >>> with open_live(gdb="localhost:1234") as mem:  # doctest: +SKIP
    ...     dump(resolve(mem), "current_kernel", sys.stdout)

Both give the walker what an image gives it (`MappedMemory`'s interface, registers in
`mem.cpu.regs`), read page by page over the connection and cached. The guest is stopped from open
to close, so the walk sees one consistent snapshot, and resumed on close (QMP: only if it was
running when we attached; QEMU's gdbstub stops the guest whenever a debugger connects, so there
it is always resumed unless `resume=False`). `keep_running=True` leaves it running (the view may
be torn; a warning in `mem.warnings` says so).

What a live guest does not give: VMCOREINFO (QEMU keeps the note's address to itself until
dump-guest-memory), so the x86 `kernel` view is CR3's table (its kernel half is init_top_pgt's)
and KASLR'd layout bases need `--kallsyms` or `--define`, as for a core without VMCOREINFO.

Progress of long reads goes to stderr with `rich`, only when stderr is a terminal.
"""

from __future__ import annotations

import atexit
import sys
import weakref
from collections.abc import Callable

from .errors import PagewalkError, UsageError
from .memory.gdbstub import GdbMemory, PageCachedMemory
from .memory.qmp import QmpMemory, QmpSession, parse_qmp_address

__all__ = ["GdbMemory", "QmpMemory", "open_live", "parse_gdb_address"]

PROGRESS_MIN_BYTES = 256 * 1024  # batches smaller than this are quick: no bar


def parse_gdb_address(spec: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` or `PORT` (host localhost); `[v6addr]:PORT` for IPv6."""
    s = spec.strip()
    s = s.removeprefix("tcp:")
    host, sep, port = s.rpartition(":")
    if not sep:
        host, port = "", s
    host = host.strip("[]") or "localhost"
    try:
        p = int(port, 10)
    except ValueError:
        raise UsageError(f"--gdb {spec!r}: expected HOST:PORT (QEMU's -gdb tcp::PORT, -s is localhost:1234)") from None
    if not 0 < p < 65536:
        raise UsageError(f"--gdb {spec!r}: port out of range")
    return host, p


def open_live(
    gdb: str | None = None,
    qmp: str | None = None,
    keep_running: bool = False,
    *,
    resume: bool = True,
    timeout: float | None = None,
    progress: bool | Callable[[int, int], None] | None = None,
    vcpu: int | None = 0,
    method: str = "auto",
) -> PageCachedMemory:
    """A live guest's memory: through its gdbstub when `gdb` is given, else through QMP.

    With both, memory and registers come from the gdbstub and the RAM ranges from QMP.
    `progress`: None = a rich bar on stderr when it is a terminal, False = none, or a callable
    (bytes done, bytes total). Closed at interpreter exit if the caller did not close it.
    """
    if not gdb and not qmp:
        raise UsageError("give --gdb HOST:PORT or --qmp PATH")
    cb = _progress_callback() if progress is None or progress is True else (progress or None)
    if gdb:
        host, port = parse_gdb_address(gdb)
        ram = None
        if qmp:
            from .memory.gdbstub import parse_mtree_ram

            s = QmpSession(parse_qmp_address(qmp), timeout or 10.0)
            try:
                ram = parse_mtree_ram(s.hmp("info mtree -f")) or None
            finally:
                s.close()
        mem: PageCachedMemory = GdbMemory(
            host, port, keep_running=keep_running, resume=resume, timeout=timeout or 5.0, ram=ram, vcpu=vcpu,
            progress=cb,
        )
    else:
        mem = QmpMemory(
            parse_qmp_address(qmp or ""), keep_running=keep_running, resume=resume, timeout=timeout or 10.0,
            method=method, progress=cb,
        )
    ref = weakref.ref(mem)
    atexit.register(_close_at_exit, ref)
    return mem


def _close_at_exit(ref: weakref.ref[PageCachedMemory]) -> None:
    mem = ref()
    if mem is not None and not mem.closed:
        try:
            mem.close()
        except PagewalkError:
            pass


def _progress_callback() -> Callable[[int, int], None] | None:
    """A rich progress bar on stderr for batches of at least PROGRESS_MIN_BYTES, if stderr is a tty."""
    try:
        if not sys.stderr.isatty():
            return None
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
    except (ImportError, AttributeError, ValueError):
        return None
    state: dict = {}

    def update(done: int, total: int) -> None:
        if total < PROGRESS_MIN_BYTES:
            return
        bar = state.get("bar")
        if bar is None:
            bar = Progress(
                TextColumn("pagewalk: reading guest memory"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                console=Console(stderr=True), transient=True,
            )
            bar.start()
            state["bar"] = bar
            state["task"] = bar.add_task("read", total=total)
        bar.update(state["task"], completed=done, total=total)
        if done >= total:
            bar.stop()
            state.clear()

    return update
