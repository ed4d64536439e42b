"""Live QEMU guests (marked qemu: `pytest -m qemu`): the gdbstub and QMP views of a real x86-64
guest against the dump-guest-memory core of the same guest, taken while it is stopped.

The guest: tools/live_guest.sh (a Debian kernel, a busybox init that sleeps; TCG, `-cpu max` so
5-level paging; KASLR on; `-device vmcoreinfo` with qemu_fw_cfg loaded, so the core carries
VMCOREINFO). It needs qemu-system-x86_64 and a kernel: tools/ci_live_setup.sh installs both (or
set PAGEWALK_LIVE_KERNEL=/path/to/vmlinuz).

The guest is stopped once (QMP `stop`) and stays stopped through the core and both live reads,
so every view must be identical, not just close. A live guest has no VMCOREINFO (QEMU keeps the
note's address to itself), so the live `kernel` view is CR3's table; the tests compare
`current_kernel` (CR3 in both), and `kernel` after handing the core's VMCOREINFO to the live view.
"""

from __future__ import annotations

import io
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest

from pagewalk import open_image
from pagewalk.api import checkwx, dump
from pagewalk.errors import PagewalkError
from pagewalk.live import open_live
from pagewalk.memory.gdbstub import GdbMemory, GdbRemote
from pagewalk.memory.qmp import QmpMemory, QmpSession
from pagewalk.target import resolve
from pagewalk.translate import translate

pytestmark = pytest.mark.qemu

ROOT = pathlib.Path(__file__).resolve().parent.parent
GUEST = ROOT / "tools" / "live_guest.sh"


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    """A booted guest: {"gdb": "127.0.0.1:PORT", "qmp": path, "dir": path}; stopped at teardown."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is not installed: run tools/ci_live_setup.sh")
    d = tmp_path_factory.mktemp("live")
    t0 = time.monotonic()
    p = subprocess.run(["bash", str(GUEST), "start", str(d)], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        pytest.fail(f"the guest did not boot: {p.stderr.strip()[-2000:]}")
    env = dict(line.split("=", 1) for line in p.stdout.splitlines() if line.startswith("PAGEWALK_LIVE_"))
    info = {"gdb": env["PAGEWALK_LIVE_GDB"], "qmp": env["PAGEWALK_LIVE_QMP"], "dir": d,
            "boot_s": time.monotonic() - t0}
    print(f"\nlive guest booted in {info['boot_s']:.1f} s ({env['PAGEWALK_LIVE_KERNEL']})", file=sys.stderr)
    yield info
    subprocess.run(["bash", str(GUEST), "stop", str(d)], timeout=60)


@pytest.fixture(scope="module")
def stopped(guest):
    """The guest stopped (QMP stop) and its ELF core: {"core": path, "target": Target of the core}."""
    s = QmpSession(guest["qmp"])
    try:
        s.execute("stop")
        core = guest["dir"] / "core.elf"
        t0 = time.monotonic()
        s.execute("dump-guest-memory", {"paging": False, "protocol": f"file:{core}"}, timeout=120)
        print(f"dump-guest-memory: {time.monotonic() - t0:.2f} s", file=sys.stderr)
        assert s.execute("query-status")["status"] == "paused"
    finally:
        s.close()
    mem = open_image(str(core))
    yield {"core": core, "mem": mem, "target": resolve(mem)}
    mem.close()


def _text(target, view: str) -> str:
    out = io.StringIO()
    dump(target, view, out)
    return out.getvalue()


def _sample_vas(text: str, limit: int = 300) -> list[int]:
    """First and last byte of every mapped range of a dump, and the first of a few holes."""
    vas = []
    holes = []
    for line in text.splitlines():
        m = re.match(r"0x([0-9a-f]+)-0x([0-9a-f]+)\s+\S+\s+(.*)", line)
        if not m:
            continue
        a, b, rest = int(m.group(1), 16), int(m.group(2), 16), m.group(3)
        if re.search(r"\b(RW|ro)\b", rest):
            vas += [a, (b - 1) & (2**64 - 1)]
        else:
            holes.append(a)
    step = max(1, len(vas) // limit)
    return vas[::step] + holes[:: max(1, len(holes) // 20)]


def _compare(live, core_target) -> dict:
    """Assert the live view equals the core's: dumps, W+X, translations. Returns timings."""
    t0 = time.monotonic()
    lt = resolve(live)
    assert lt.mode.name == core_target.mode.name == "x86_64-5level"
    assert lt.roots["current_kernel"] == core_target.roots["current_kernel"]
    core_text = _text(core_target, "current_kernel")
    live_text = _text(lt, "current_kernel")
    t_dump = time.monotonic() - t0
    assert live_text == core_text
    assert len(live_text.splitlines()) > 100
    assert "---[ High Kernel Mapping ]---" in live_text
    # the kernel's own root: from VMCOREINFO, which only the core has; hand it over
    live.cpu.vmcoreinfo = dict(core_target.mem.cpu.vmcoreinfo)
    lk = resolve(live)
    assert lk.roots["kernel"] == core_target.roots["kernel"] != lt.roots["kernel"]
    assert _text(lk, "kernel") == _text(core_target, "kernel")
    assert checkwx(lk).lines == checkwx(core_target).lines
    assert checkwx(lk).lines == ["x86/mm: Checked W+X mappings: passed, no W+X pages found."]
    vas = _sample_vas(core_text)
    assert len(vas) > 50
    root = core_target.root("current_kernel")
    for va in vas:
        a = translate(core_target.mem, core_target.mode, root, va)
        b = translate(live, lt.mode, root, va)
        assert (b.pa, b.page_size, b.fault) == (a.pa, a.page_size, a.fault), hex(va)
    return {"dump_s": t_dump, "pages": live.stats["pages"], "requests": live.stats["requests"]}


def test_gdbstub_view_equals_the_core(guest, stopped):
    """Through the gdbstub (CR3/CR4 from the stub), dump, W+X and translations equal the stopped guest's ELF core."""
    with open_live(gdb=guest["gdb"], resume=False, progress=False) as mem:
        assert isinstance(mem, GdbMemory)
        assert mem.cpu.arch == "x86_64"
        assert mem.cpu.regs["cr3"] & ~0xFFF == stopped["mem"].cpu.regs["cr3"] & ~0xFFF
        assert mem.cpu.regs["cr4"] == stopped["mem"].cpu.regs["cr4"]
        assert mem.cpu.regs["cr4"] & (1 << 12)  # LA57
        assert mem.cpu.regs["efer"] & (1 << 10)  # LMA
        assert mem.runs() == stopped["mem"].runs()
        stats = _compare(mem, stopped["target"])
    print(f"gdbstub: {stats}", file=sys.stderr)


@pytest.mark.parametrize("method", ["pmemsave", "xp"])
def test_qmp_view_equals_the_core(guest, stopped, method):
    """Through QMP (info registers, pmemsave or xp), dump, W+X and translations equal the stopped guest's ELF core."""
    with QmpMemory(guest["qmp"], method=method) as mem:
        assert mem.method == method and not mem.warnings
        assert mem.cpu.regs["cr3"] == stopped["mem"].cpu.regs["cr3"]
        assert mem.cpu.regs["cr4"] == stopped["mem"].cpu.regs["cr4"]
        assert mem.runs() == stopped["mem"].runs()
        stats = _compare(mem, stopped["target"])
    print(f"qmp {method}: {stats}", file=sys.stderr)
    s = QmpSession(guest["qmp"])
    try:  # the guest was paused by someone else: QMP leaves it paused
        assert s.execute("query-status")["status"] == "paused"
    finally:
        s.close()


def test_cli_live_dump_equals_core_dump(guest, stopped):
    """`pagewalk dump --gdb` and `--qmp` print the same text as `pagewalk dump core.elf` (--view current_kernel)."""
    exe = [sys.executable, "-m", "pagewalk.cli"]
    want = subprocess.run(exe + ["dump", str(stopped["core"]), "--view", "current_kernel", "-q"],
                          capture_output=True, text=True, timeout=120)
    assert want.returncode == 0, want.stderr
    for how in (["--qmp", guest["qmp"]], ["--gdb", guest["gdb"]]):  # --gdb last: it resumes the guest
        got = subprocess.run(exe + ["dump", *how, "--view", "current_kernel", "-q"],
                             capture_output=True, text=True, timeout=120)
        assert got.returncode == 0, got.stderr
        assert got.stdout == want.stdout
    # --gdb resumes the guest on close (QEMU's gdbstub stops it on connect): stop it again
    s = QmpSession(guest["qmp"])
    try:
        s.execute("stop")
    finally:
        s.close()


def _status(qmp: str) -> str:
    s = QmpSession(qmp)
    try:
        return s.execute("query-status")["status"]
    finally:
        s.close()


def test_resume_semantics(guest, stopped):
    """gdbstub: stopped while open, resumed on close, phys mode off again; QMP: stops a running guest and resumes it on close."""
    s = QmpSession(guest["qmp"])
    try:
        with open_live(gdb=guest["gdb"], progress=False) as mem:
            assert s.execute("query-status")["status"] == "paused"
            assert mem.remote.request(b"qqemu.PhyMemMode") == b"1"
            mem.read(mem.cpu.regs["cr3"] & ~0xFFF, 4096)
        deadline = time.monotonic() + 5
        while s.execute("query-status")["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s.execute("query-status")["status"] == "running"
    finally:
        s.close()  # QEMU serves one QMP client per socket
    # QEMU keeps the physical-memory mode globally: off after us, so the next debugger reads
    # virtual memory as it expects
    host, port = guest["gdb"].split(":")
    remote = GdbRemote(host, int(port))
    try:
        remote.handshake()
        assert remote.request(b"qqemu.PhyMemMode") == b"0"
        remote.resume()
    finally:
        remote.close()
    with open_live(qmp=guest["qmp"], progress=False) as mem:
        assert isinstance(mem, QmpMemory)
        assert mem.session.execute("query-status")["status"] == "paused"
    assert _status(guest["qmp"]) == "running"
    with open_live(qmp=guest["qmp"], keep_running=True, progress=False) as mem:
        assert mem.session.execute("query-status")["status"] == "running"
        assert any("torn" in w for w in mem.warnings)
        assert len(mem.read(mem.cpu.regs["cr3"] & ~0xFFF, 4096)) == 4096
    assert _status(guest["qmp"]) == "running"


def test_errors_name_the_endpoint(guest, tmp_path):
    """A wrong port or socket path gives one clear PagewalkError naming it."""
    with pytest.raises(PagewalkError, match=r"no gdbstub at 127.0.0.1:1 "):
        open_live(gdb="127.0.0.1:1", progress=False)
    with pytest.raises(PagewalkError, match=rf"no QMP monitor at {tmp_path}/none.sock"):
        open_live(qmp=str(tmp_path / "none.sock"), progress=False)
