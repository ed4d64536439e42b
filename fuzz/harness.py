"""One fuzz input through pagewalk: shared by the atheris target (fuzz/fuzz_images.py), the
hypothesis properties (tests/test_fuzz_properties.py) and the regression inputs
(tests/fixtures/fuzz-regressions/*.fuzz).

An input is `KIND` (1 byte) + header length (2 bytes, little-endian) + header + body. The header
is text, `key=value` lines, so a regression input stays readable and keeps its meaning when
architectures are added (architectures, modes and registers are named, never numbered):

    kind        what the body is                           header keys
    image (0)   a whole image file (ELF core, kdump, raw)  arch=, format=, reg.NAME=, base=
    raw   (1)   a raw physical dump                        arch=, reg.NAME=, base=
    tables(2)   page tables, root at PA 0, walked directly mode=, root=, structure=
    gdb   (3)   what a gdbstub says (a stub transcript)    chunk=, arch=
    notes (4)   an ELF PT_NOTE blob (VMCOREINFO, CPU state) arch=, big=

Every kind ends in `exercise()`: dump (text; JSON too for the first view) of every view,
checkwx, translate and translate_many of some VAs, stats of the first view (reserved-bit and
missing-table counts). An input passes when it ends in a result, a PagewalkError, or more output
than OUTPUT_LIMIT (a bomb streamed out); any other exception is a finding.

Which architectures, modes and registers exist is read from the project, not listed here:
architectures from `pagewalk.kernel.SUPPORT`; modes from every `pagewalk.arch.*` module
(module-level PagingModes, dicts of them, and the modes of `make_mode` factories over granules,
VA sizes, paging names, the module's CONFIGS and byte orders), plus the modes of the committed
cores; register names from `gdbstub.WANTED_REGS`, from the registers each kernel module reads
(`regs.get("…")`) and from those the committed cores carry (`pagewalk extract` stores them), with
their values as templates. Seeds: every committed core (also as ELF32 and byte-swapped), raw
dumps around their roots, random tables for every mode, a recorded gdbstub session, note blobs.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib
import inspect
import io
import itertools
import os
import pathlib
import pkgutil
import struct
import tempfile
from dataclasses import dataclass, field

import numpy as np

import pagewalk.arch
import pagewalk.runs
from pagewalk.errors import PagewalkError
from pagewalk.memory import open_image
from pagewalk.memory.base import CpuState, MappedMemory
from pagewalk.mode import PagingMode
from pagewalk.target import resolve

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
KINDS = ("image", "raw", "tables", "gdb", "notes")
OUTPUT_LIMIT = 1 << 20  # characters of dump output per view: more is a streamed bomb, not a finding
BODY_LIMIT = 4 << 20  # bytes of body used (the fuzzer's -max_len keeps inputs far smaller)
# lower bomb caps keep each input fast (the real caps, runs.MAX_RUNS and runs.MAX_STREAM_RUNS, are
# exercised by bench/hostile.py and stated in the README's Limits)
RUN_CAPS = {"MAX_RUNS": 100_000, "MAX_STREAM_RUNS": 1_000_000}


class OutputLimit(Exception):
    """More dump text than OUTPUT_LIMIT: the walk went on; enough was seen."""


class LimitedText(io.TextIOBase):
    """A text sink that counts and drops what is written, and stops the writer at a limit."""

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self.limit = limit
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.n += len(s)
        if self.n > self.limit:
            raise OutputLimit(self.n)
        return len(s)


# -- the registries -------------------------------------------------------------------------------


def arches() -> list[str]:
    """Every architecture the kernel support registry knows."""
    from pagewalk.kernel import SUPPORT

    return sorted(SUPPORT)


def canonical_arch(name: str | None) -> str | None:
    from pagewalk.kernel import ALIASES

    return ALIASES.get(name, name) if name else name


@functools.cache
def fixture_cores() -> tuple[str, ...]:
    """Every committed core and kdump file (the seeds; new architectures' cores included)."""
    pats = ("*/*/core.elf", "*/*/*.elf", "kdump/*.kdump", "*/*/*.kdump", "*/*/core.elf.xz")
    found = set()
    for p in pats:
        found.update(glob.glob(str(FIXTURES / p)))
    return tuple(sorted(_plain(f) for f in found if "fuzz-regressions" not in f))


def _plain(path: str) -> str:
    """A committed core as a plain file: `.xz` ones (s390x) decompressed once into the temp dir."""
    if not path.endswith(".xz"):
        return path
    import lzma

    rel = pathlib.Path(path).relative_to(FIXTURES)
    out = pathlib.Path(tempfile.gettempdir()) / "pagewalk-fuzz-fixtures" / rel.with_suffix("")
    if not out.exists() or out.stat().st_mtime < pathlib.Path(path).stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + f".{os.getpid()}")
        tmp.write_bytes(lzma.decompress(pathlib.Path(path).read_bytes()))
        tmp.replace(out)
    return str(out)


@dataclass
class CoreInfo:
    path: str
    arch: str | None
    regs: dict[str, int]
    modes: list[PagingMode] = field(default_factory=list)
    roots: dict[str, int] = field(default_factory=dict)


@functools.cache
def core_infos() -> tuple[CoreInfo, ...]:
    """Architecture, registers, modes and roots of every committed core (unresolvable ones: none)."""
    out = []
    for path in fixture_cores():
        try:
            mem = open_image(path)
        except PagewalkError:
            continue
        arch = canonical_arch(mem.cpu.arch)
        if arch not in arches():  # a core without e_machine: its fixture directory names the arch
            arch = next((part for part in pathlib.Path(path).parts[::-1] if part in arches()), arch)
        info = CoreInfo(path, arch, dict(mem.cpu.regs))
        try:
            t = resolve(mem, arch=arch)
            info.modes = [t.mode] + [m for m in (getattr(t.layout, "modes", None) or {}).values()]
            info.roots = dict(t.roots)
        except Exception:  # noqa: BLE001 - a core that does not resolve (yet) is still a seed
            pass
        mem.close()
        out.append(info)
    return tuple(out)


def image_header(info: CoreInfo) -> dict[str, str]:
    """The header an `image` input of this core needs: its arch, when the core does not say it."""
    with open_image(info.path) as mem:
        said = canonical_arch(mem.cpu.arch)
    return {} if said == info.arch or not info.arch else {"arch": info.arch}


@functools.cache
def reg_templates(arch: str) -> tuple[tuple[str, ...], tuple[dict[str, int], ...]]:
    """(register names, register sets seen in committed cores) of an architecture."""
    from pagewalk.memory.gdbstub import WANTED_REGS

    names = set(WANTED_REGS.get(arch, ()))
    names.update(_consumed_regs(arch))
    sets = []
    for info in core_infos():
        if info.arch == arch and info.regs:
            names.update(info.regs)
            sets.append(info.regs)
    if arch in ("x86_64", "i386"):
        names.update(("cr3", "cr4"))
    return tuple(sorted(names)), tuple(sets)


def _consumed_regs(arch: str) -> set[str]:
    """Register names an architecture's kernel module reads (`regs.get("x")`, `regs["x"]`, `"x" in regs`)."""
    import re

    from pagewalk.kernel import SUPPORT

    src = ROOT / "src" / "pagewalk" / "kernel" / f"{SUPPORT.get(arch, arch)}.py"
    try:
        text = src.read_text()
    except OSError:
        return set()
    pat = r"""regs\.get\(\s*["']([\w.]+)["']|regs\[\s*["']([\w.]+)["']\s*\]|["']([\w.]+)["']\s+in\s+regs\b"""
    return {next(g for g in m if g).lower() for m in re.findall(pat, text)}


def _factory_modes(mod) -> list[PagingMode]:
    """Modes of a `make_mode` factory over the values its parameters are documented to take:
    granules, VA sizes and LPA2 (arm64), paging names (x86), the module's CONFIGS (mips, sparc64,
    arc, ...), byte orders."""
    fn = getattr(mod, "make_mode", None)
    if fn is None:
        return []
    params = inspect.signature(fn).parameters
    grids: dict[str, tuple] = {}
    if "granule" in params:
        grids["granule"] = (4096, 16384, 65536)
    if "va_bits" in params:
        grids["va_bits"] = (36, 39, 42, 47, 48, 52)
    if "ds" in params:
        grids["ds"] = (False, True)
    if "paging" in params:  # x86's factory takes a paging name
        grids["paging"] = tuple(getattr(mod, "_PAGINGS", {}) or ())
    if "config" in params:
        names = [k for attr, v in vars(mod).items() if "CONFIGS" in attr and isinstance(v, dict) for k in v]
        if names:
            grids["config"] = tuple(names)
    if "byteorder" in params:
        grids["byteorder"] = ("<", ">")
    out = []
    keys = list(grids)
    for combo in itertools.product(*(grids[k] for k in keys)):
        try:
            out.append(fn(**dict(zip(keys, combo))))
        except (ValueError, TypeError, KeyError):
            continue
    return out


@functools.cache
def modes() -> dict[str, PagingMode]:
    """Every paging mode the project can build, by unique name."""
    found: list[PagingMode] = []
    for m in pkgutil.iter_modules(pagewalk.arch.__path__):
        try:
            mod = importlib.import_module(f"pagewalk.arch.{m.name}")
        except Exception:  # noqa: BLE001 - an arch module being written by someone else
            continue
        for v in vars(mod).values():
            if isinstance(v, PagingMode):
                found.append(v)
            elif isinstance(v, dict) and v and all(isinstance(x, PagingMode) for x in v.values()):
                found.extend(v.values())
        found.extend(_factory_modes(mod))
    for info in core_infos():
        found.extend(info.modes)
    out: dict[str, PagingMode] = {}
    for md in found:
        name = md.name
        if name in out and out[name].byteorder != md.byteorder:
            name += "-be" if md.byteorder == ">" else "-le"
        out.setdefault(name, md)  # names say the geometry; the first of a name stands for it
    return dict(sorted(out.items()))


@functools.cache
def entry_formats() -> dict:
    """tests/builders*.py's per-architecture entry encoders (make_table_entry, make_leaf)."""
    import sys

    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    try:
        import builders
    except Exception:  # noqa: BLE001
        return {}
    for p in sorted(glob.glob(str(ROOT / "tests" / "builders_*.py"))):
        with contextlib.suppress(Exception):
            importlib.import_module(pathlib.Path(p).stem)
    return dict(builders.ARCH_ENTRY_FORMATS)


# -- input encoding ---------------------------------------------------------------------------------


def encode(kind: str, header: dict[str, object], body: bytes) -> bytes:
    """One fuzz input (the inverse of decode())."""
    text = "".join(f"{k}={hex(v) if isinstance(v, int) and not isinstance(v, bool) else v}\n" for k, v in header.items())
    h = text.encode()
    return bytes([KINDS.index(kind)]) + len(h).to_bytes(2, "little") + h + body


def decode(data: bytes) -> tuple[str, dict[str, str], bytes]:
    kind = KINDS[data[0] % len(KINDS)] if data else "image"
    n = int.from_bytes(data[1:3], "little") if len(data) >= 3 else 0
    header: dict[str, str] = {}
    for line in data[3 : 3 + n].decode("ascii", "replace").splitlines():
        k, sep, v = line.partition("=")
        if sep:
            header[k.strip()] = v.strip()
    return kind, header, data[3 + n : 3 + n + BODY_LIMIT]


def _int(text: str | None, default: int = 0, bits: int = 64) -> int:
    if text is None:
        return default
    try:
        v = int(text, 0)
    except ValueError:
        return default
    return v & ((1 << bits) - 1)


def _pick(name: str | None, options: list[str]) -> str:
    """`name` if it is one of `options`, else one chosen by the name's bytes (stable for a name)."""
    if name in options:
        return name
    h = sum((name or "").encode()) if name else 0
    return options[h % len(options)]


def _regs(header: dict[str, str]) -> dict[str, int]:
    return {k[4:].lower(): _int(v) for k, v in header.items() if k.startswith("reg.") and len(k) > 4}


# -- running ----------------------------------------------------------------------------------------


def default_vas(mode: PagingMode, body: bytes) -> list[int]:
    """VAs worth translating: both ends of each half, the kernel text base, words of the body."""
    top = mode.top_span
    vas = [0, top // 2 - 4096, mode.canonical_va(top // 2), mode.canonical_va(top - 4096), 0xFFFFFFFF81000000]
    words = np.frombuffer(body[: 8 * 8], dtype="<u8") if len(body) >= 64 else np.zeros(0, np.uint64)
    vas += [int(w) for w in words]
    return vas


def exercise(target, body: bytes = b"", views: int = 3) -> str:
    """Dump, check, translate and count the views of a target; a PagewalkError ends a step, not all.

    Every view is dumped as text and translated; the first is also dumped as JSON and counted
    (stats: reserved bits, missing tables), which are the same walk again.
    """
    from pagewalk.analysis.stats import stats
    from pagewalk.api import checkwx, dump
    from pagewalk.translate import translate, translate_many

    outcome = "ok"
    for k, view in enumerate(list(target.roots)[:views]):
        mode = target.mode_for(view)
        for fmt in ("text", "json") if k == 0 else ("text",):
            try:
                dump(target, view, LimitedText(), fmt)
            except OutputLimit:
                outcome = "output-limit"
            except PagewalkError:
                outcome = "error"
        vas = default_vas(mode, body)
        try:
            root = target.root(view)
            for va in vas[:6]:
                translate(target.mem, mode, root, va)
            translate_many(target.mem, mode, root, np.array(vas, dtype=np.uint64))
        except PagewalkError:
            outcome = "error"
        if k == 0:
            try:
                stats(target, view)
            except PagewalkError:
                outcome = "error"
    try:
        checkwx(target)
    except PagewalkError:
        outcome = "error"
    return outcome


def _write(workdir: str, body: bytes, name: str = "img") -> str:
    path = os.path.join(workdir, name)
    with open(path, "wb") as f:
        f.write(body)
    return path


def _resolve_and_exercise(mem, header: dict[str, str], body: bytes) -> str:
    arch = header.get("arch") or canonical_arch(mem.cpu.arch)
    if canonical_arch(arch) not in arches():
        arch = _pick(arch, arches())
    pti = header.get("pti", "auto")
    target = resolve(mem, arch=arch, regs=_regs(header) or None, pti=pti if pti in ("auto", "on", "off") else "auto")
    return exercise(target, body)


def run_image(header: dict[str, str], body: bytes, workdir: str) -> str:
    if not body:
        return "empty"
    fmt = header.get("format", "auto")
    fmt = fmt if fmt in ("auto", "elf", "kdump", "raw") else "auto"
    base = _int(header["base"]) if "base" in header else None
    mem = open_image(_write(workdir, body), fmt, base)
    try:
        return _resolve_and_exercise(mem, header, body)
    finally:
        mem.close()


def run_raw(header: dict[str, str], body: bytes, workdir: str) -> str:
    if not body:
        return "empty"
    arch = _pick(canonical_arch(header.get("arch")), arches())
    header = {**header, "arch": arch}
    mem = open_image(_write(workdir, body), "raw", _int(header.get("base"), 0, 52) & ~0xFFF)
    try:
        return _resolve_and_exercise(mem, header, body)
    finally:
        mem.close()


def structure_tables(mode: PagingMode, body: bytes, npages: int) -> bytes:
    """Random words turned into entries that point inside the image: the walk goes deep.

    Each word's two low bits choose: keep it, a table entry to page (w >> 2) % npages, a leaf at
    some level and address, or zero. The encoders are the tests' (builders.ARCH_ENTRY_FORMATS).
    """
    fmts = entry_formats().get(mode.arch)
    if fmts is None or mode.entry_bytes not in (4, 8):
        return body
    make_table, make_leaf = fmts(mode)
    dt = np.dtype(f"{mode.byteorder}u{mode.entry_bytes}")
    n = len(body) // mode.entry_bytes
    words = np.frombuffer(body[: n * mode.entry_bytes], dtype=dt).astype(np.uint64)
    out = []
    nlev = len(mode.levels)
    limit = (1 << (8 * mode.entry_bytes)) - 1
    for w in words.tolist()[:8192]:
        sel = w & 3
        try:
            if sel == 1:
                v = make_table(((w >> 2) % max(npages, 1)) * 4096)
            elif sel == 2:
                lvl = (w >> 2) % nlev
                size = mode.levels[lvl].entry_span
                v = make_leaf(lvl, ((w >> 8) % 64) * size % (1 << min(mode.pa_bits, 40)), (w >> 16) & 0xFFF)
            elif sel == 3:
                v = 0
            else:
                v = w
        except Exception:  # noqa: BLE001 - an encoder refusing an odd request
            v = w
        out.append(v & limit)
    return np.array(out, dtype=np.uint64).astype(dt).tobytes() + body[len(out) * mode.entry_bytes :]


def run_tables(header: dict[str, str], body: bytes, workdir: str) -> str:
    """Random tables under a mode of the registry, walked from PA `root` with no kernel layout."""
    from pagewalk.analysis.stats import stats
    from pagewalk.target import Target
    from pagewalk.translate import translate, translate_many

    table = modes()
    mode = table[_pick(header.get("mode"), list(table))]
    tsize = mode.levels[0].entries * mode.entry_bytes
    body = body + bytes(-len(body) % 4096)
    if len(body) < tsize:
        body = body + bytes(tsize - len(body))
    if header.get("structure") in ("1", "true", "yes"):
        body = structure_tables(mode, body, len(body) // 4096)
    root = _int(header.get("root"), 0) % max(len(body), 1) & ~(mode.root_align - 1)
    mem = open_image(_write(workdir, body), "raw", 0)
    try:
        runs = pagewalk.runs.root_runs(mem, mode, root)
        assert len(runs) >= 1
        vas = default_vas(mode, body)
        for va in vas[:6]:
            translate(mem, mode, root, va)
        translate_many(mem, mode, root, np.array(vas, dtype=np.uint64))
        stats(Target(mem, mode, {"kernel": root}), "kernel")
        return "ok"
    finally:
        mem.close()


# -- a gdbstub that replays a transcript --------------------------------------------------------------


class TranscriptSocket:
    """A socket whose peer says `transcript` in pieces of `chunk` bytes, whatever it is told."""

    def __init__(self, transcript: bytes, chunk: int = 4096, responder=None) -> None:
        self.data = transcript
        self.chunk = max(1, chunk)
        self.pos = 0
        self.sent = bytearray()
        self.responder = responder  # (bytes sent) -> bytes to say next; records into .said
        self.said = bytearray()
        self._timeout = 0.01

    def settimeout(self, t) -> None:
        self._timeout = t

    def gettimeout(self):
        return self._timeout

    def setsockopt(self, *a) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.sent += data
        if self.responder is not None:
            reply = self.responder(bytes(data))
            self.said += reply
            self.data = self.data[self.pos :] + reply
            self.pos = 0

    def recv(self, n: int) -> bytes:
        if self.pos >= len(self.data):
            raise TimeoutError("transcript ended")
        out = self.data[self.pos : self.pos + min(n, self.chunk)]
        self.pos += len(out)
        return out

    def close(self) -> None:
        pass


@contextlib.contextmanager
def fake_connection(sock: TranscriptSocket):
    """gdbstub's socket.create_connection answered by `sock` (restored on exit)."""
    from pagewalk.memory import gdbstub

    real = gdbstub.socket.create_connection
    gdbstub.socket.create_connection = lambda *a, **k: sock  # type: ignore[assignment]
    try:
        yield
    finally:
        gdbstub.socket.create_connection = real  # type: ignore[assignment]


def run_gdb(header: dict[str, str], body: bytes, workdir: str) -> str:
    from pagewalk.memory.gdbstub import GdbMemory

    sock = TranscriptSocket(body, _int(header.get("chunk"), 4096, 16) or 1)
    with fake_connection(sock):
        mem = GdbMemory("transcript", 1, timeout=0.01, resume=header.get("resume") == "1")
    try:
        return _resolve_and_exercise(mem, header, body[-512:])
    finally:
        mem.close()


# -- notes ------------------------------------------------------------------------------------------


class _NoMemory(MappedMemory):
    def __init__(self, cpu: CpuState, workdir: str) -> None:
        path = _write(workdir, bytes(4096), "page")
        super().__init__(path, [(0, 4096, 0)], cpu)


def run_notes(header: dict[str, str], body: bytes, workdir: str) -> str:
    """A PT_NOTE blob parsed for every architecture, then resolved over one zero page."""
    from pagewalk.memory.elfcore import _split_notes
    from pagewalk.memory.notes import parse_notes, vmcoreinfo_int

    little = header.get("big") != "1"
    warnings: list[str] = []
    notes = _split_notes(body, little, warnings)
    arch = _pick(canonical_arch(header.get("arch")), arches())
    cpu = parse_notes(notes, arch, little)
    for key in list(cpu.vmcoreinfo)[:64]:
        with contextlib.suppress(PagewalkError):
            vmcoreinfo_int(cpu.vmcoreinfo, key)
    mem = _NoMemory(cpu, workdir)
    try:
        return _resolve_and_exercise(mem, {**header, "arch": arch}, body)
    finally:
        mem.close()


# Findings reported but not yet fixed in code the fuzz suite does not own: (exception type, message
# pattern, the regression input that shows it). With PAGEWALK_FUZZ_TOLERATE_KNOWN=1 (fuzz/run.sh) they
# end an input as "known" and are counted in fuzz/findings/known.log instead of stopping the run;
# the regression tests never tolerate them (strict xfail until fixed).
KNOWN_OPEN = [
    ("ValueError", r"-bit input size is not valid for a", "arm64-vmcoreinfo-t1sz-out-of-range.fuzz"),
]


def known_finding(e: BaseException) -> str | None:
    import re

    for name, pattern, case in KNOWN_OPEN:
        if type(e).__name__ == name and re.search(pattern, str(e)):
            return case
    return None


RUNNERS = {"image": run_image, "raw": run_raw, "tables": run_tables, "gdb": run_gdb, "notes": run_notes}


def run_one(data: bytes, workdir: str | None = None) -> str:
    """Run one input; return how it ended ("ok", "error", "output-limit", ...). Other exceptions
    propagate: they are the findings."""
    saved = {name: getattr(pagewalk.runs, name) for name in RUN_CAPS if hasattr(pagewalk.runs, name)}
    for name in saved:
        setattr(pagewalk.runs, name, RUN_CAPS[name])
    try:
        return _run_one(data, workdir)
    finally:  # the caps are the fuzzer's: a test suite running it in-process keeps its own
        for name, value in saved.items():
            setattr(pagewalk.runs, name, value)


def _run_one(data: bytes, workdir: str | None) -> str:
    kind, header, body = decode(data)
    own = workdir is None
    if own:
        workdir = tempfile.mkdtemp(prefix="pagewalk-fuzz-")
    try:
        return RUNNERS[kind](header, body, workdir)
    except PagewalkError:
        return "error"
    except Exception as e:
        case = known_finding(e) if os.environ.get("PAGEWALK_FUZZ_TOLERATE_KNOWN") == "1" else None
        if case is None:
            raise
        with open(ROOT / "fuzz" / "findings" / "known.log", "a") as f:
            f.write(f"{case}\t{type(e).__name__}: {e}\n")
        return "known"
    finally:
        if own:
            for f in os.listdir(workdir):
                os.unlink(os.path.join(workdir, f))
            os.rmdir(workdir)


# -- ELF variants of the committed cores --------------------------------------------------------------


def elf64_to_elf32(core: bytes) -> bytes | None:
    """The same core as ELF32 (as QEMU writes i386 guests below 4 GiB); None if it does not fit."""
    if core[:4] != b"\x7fELF" or core[4] != 2:
        return None
    e = "<" if core[5] == 1 else ">"
    (e_type, machine, version, entry, phoff, _shoff, flags, _ehsize, phentsize, phnum) = struct.unpack_from(
        e + "HHIQQQIHHH", core, 16
    )
    phdrs = [struct.unpack_from(e + "IIQQQQQQ", core, phoff + i * phentsize) for i in range(phnum)]
    # ELF32 headers are smaller: keep the data where it is, rewrite headers at the front
    if any(v >> 32 for p in phdrs for v in (p[2], p[3], p[4], p[5], p[6])):
        return None
    out = bytearray(core)
    ident = bytearray(core[:16])
    ident[4] = 1
    hdr = bytes(ident) + struct.pack(e + "HHIIIIIHHHHHH", e_type, machine, version, entry & 0xFFFFFFFF, 52, 0,
                                     flags, 52, 32, phnum, 40, 0, 0)
    ph = b"".join(struct.pack(e + "IIIIIIII", p[0], p[2], p[3], p[4], p[5], p[6], p[1], p[7] & 0xFFFFFFFF)
                  for p in phdrs)
    end = 52 + len(ph)
    if end > min([p[2] for p in phdrs if p[5]] or [len(core)]):
        return None
    out[:end] = hdr + ph
    return bytes(out)


def elf_swap_endian(core: bytes) -> bytes | None:
    """The ELF header, program headers and note headers of a core in the other byte order
    (EI_DATA flipped); the memory itself is left as it is (it is the guest's)."""
    if core[:4] != b"\x7fELF" or core[5] not in (1, 2) or core[4] not in (1, 2):
        return None
    src, dst = ("<", ">") if core[5] == 1 else (">", "<")
    is64 = core[4] == 2
    out = bytearray(core)
    out[5] = 3 - core[5]
    hfmt = "HHIQQQIHHHHHH" if is64 else "HHIIIIIHHHHHH"
    vals = struct.unpack_from(src + hfmt, core, 16)
    struct.pack_into(dst + hfmt, out, 16, *vals)
    phoff, phentsize, phnum = (vals[4], vals[8], vals[9])
    pfmt = "IIQQQQQQ" if is64 else "IIIIIIII"
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + struct.calcsize(pfmt) > len(core):
            return None
        p = struct.unpack_from(src + pfmt, core, at)
        struct.pack_into(dst + pfmt, out, at, *p)
        off, filesz = (p[2], p[5]) if is64 else (p[1], p[4])
        if p[0] == 4:  # PT_NOTE: each note's header words
            j = off
            while j + 12 <= min(off + filesz, len(core)):
                namesz, descsz, ntype = struct.unpack_from(src + "III", core, j)
                struct.pack_into(dst + "III", out, j, namesz, descsz, ntype)
                j += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return bytes(out)


# -- seeds ------------------------------------------------------------------------------------------


def seed_inputs() -> list[tuple[str, bytes]]:
    """One input per committed core (as it is, ELF32, big-endian), raw dumps around each core's
    root, random tables for every mode, gdbstub transcripts and note blobs."""
    out: list[tuple[str, bytes]] = []
    for info in core_infos():
        data = pathlib.Path(info.path).read_bytes()
        name = "-".join(pathlib.Path(info.path).parts[-2:]).replace(".", "_")
        hdr = image_header(info)
        out.append((f"image-{name}", encode("image", hdr, data)))
        for tag, fn in (("elf32", elf64_to_elf32), ("swapped", elf_swap_endian)):
            v = fn(data)
            if v is not None:
                out.append((f"image-{tag}-{name}", encode("image", hdr, v)))
        root = info.roots.get("current_kernel", info.roots.get("kernel"))  # the registers' root
        if root is not None and info.arch:
            try:
                mem = open_image(info.path)
                chunk = b"".join(mem.read(root + i * 4096, 4096) if mem.contains(root + i * 4096, 4096)
                                 else bytes(4096) for i in range(4))
                mem.close()
                regs = {f"reg.{k}": v for k, v in info.regs.items()}
                out.append((f"raw-{name}", encode("raw", {"arch": info.arch, "base": root & ~0xFFF, **regs}, chunk)))
            except PagewalkError:
                pass
    rng = np.random.default_rng(0)
    for mname in modes():
        body = rng.integers(0, 256, size=4 * 4096, dtype=np.uint8).tobytes()
        out.append((f"tables-{mname}", encode("tables", {"mode": mname, "structure": 1}, body)))
    out.append(("gdb-x86_64", encode("gdb", {"chunk": 4096}, gdb_transcript())))
    out.append(("gdb-x86_64-noack-rle", encode("gdb", {"chunk": 7}, gdb_transcript(noack=True, rle=True))))
    out.append(("gdb-aarch64-xml", encode("gdb", {"chunk": 1}, gdb_transcript(arch_xml="aarch64"))))
    vi = (b"OSRELEASE=6.12.0\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff80000000\nNUMBER(phys_base)=0\n"
          b"SYMBOL(swapper_pg_dir)=c0000000\nNUMBER(kimage_voffset)=c0000000\nNUMBER(TCR_EL1_T1SZ)=16\n")
    blob = struct.pack("<III", 11, len(vi), 0) + b"VMCOREINFO\0\0" + vi + bytes(-len(vi) % 4)
    for a in arches():
        out.append((f"notes-{a}", encode("notes", {"arch": a}, blob)))
    return out


def _rle(data: bytes) -> bytes:
    """gdbserver's run-length encoding of a reply: `c*N` = N - 29 more copies of c (never N in `#$`)."""
    out = bytearray()
    i = 0
    while i < len(data):
        j = i
        while j + 1 < len(data) and data[j + 1] == data[i] and j + 1 - i < 97:
            j += 1
        extra = j - i
        while extra + 29 in (ord("#"), ord("$")):
            extra -= 1
        if extra >= 3:
            out += data[i : i + 1] + b"*" + bytes((extra + 29,))
            i += extra + 1
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


def gdb_transcript(arch_xml: str = "i386:x86-64", noack: bool = False, rle: bool = False) -> bytes:
    """What a QEMU-like x86-64 gdbstub says to GdbMemory over a small page-table image, recorded
    (`noack`: it offers QStartNoAckMode; `rle`: it run-length encodes its replies)."""
    from pagewalk.arch.x86 import X86_64_4LEVEL
    from pagewalk.memory.gdbstub import encode_packet

    tests = str(ROOT / "tests")
    import sys

    if tests not in sys.path:
        sys.path.insert(0, tests)
    from builders import X86_NX, X86_P, X86_RW, PageTableBuilder

    b = PageTableBuilder(X86_64_4LEVEL)
    b.map(0xFFFFFFFF81000000, 0x200000, 2 << 20, X86_P | X86_RW)
    b.map(0xFFFF888000000000, 0x0, 1 << 21, X86_P | X86_RW | X86_NX)
    image = bytes(b.image)
    base = b.base
    xml = (f'<?xml version="1.0"?><target><architecture>{arch_xml}</architecture>'
           '<feature name="org.gnu.gdb.i386.core"><reg name="rax" bitsize="64" regnum="0"/>'
           '<reg name="cr3" bitsize="64"/></feature><feature name="org.gnu.gdb.i386.sys">'
           '<reg name="cr4" bitsize="64" regnum="40"/></feature></target>').encode()
    mtree = f"FlatView #0\n AS \"memory\", root: system\n  {base:016x}-{base + len(image) - 1:016x} (prio 0, ram): pc.ram\n"
    buf = bytearray()
    state = {"noack": False}

    def respond(sent: bytes) -> bytes:
        buf.extend(sent)
        said = bytearray()
        while True:
            while buf[:1] in (b"+", b"-", b"\x03"):
                del buf[:1]
            end = buf.find(b"#")
            if not buf.startswith(b"$") or end < 0 or len(buf) < end + 3:
                break
            pkt = bytes(buf[1:end])
            del buf[: end + 3]
            reply = _reply(pkt)
            frame = encode_packet(reply)
            if rle:
                body = _rle(frame[1:-3])
                frame = b"$" + body + b"#%02x" % (sum(body) & 0xFF)
            said += (b"" if state["noack"] else b"+") + frame
            if pkt == b"QStartNoAckMode":
                state["noack"] = True
        return bytes(said)

    def _reply(pkt: bytes) -> bytes:
        if pkt.startswith(b"qSupported"):
            return b"PacketSize=1000;qXfer:features:read+" + (b";QStartNoAckMode+" if noack else b"")
        if pkt == b"QStartNoAckMode":
            return b"OK"
        if pkt == b"?":
            return b"T05thread:01;"
        if pkt.startswith((b"Qqemu.PhyMemMode", b"Hg")):
            return b"OK"
        if pkt.startswith(b"qXfer:features:read:target.xml:"):
            off, n = (int(x, 16) for x in pkt.rsplit(b":", 1)[1].split(b","))
            part = xml[off : off + n]
            return (b"l" if off + n >= len(xml) else b"m") + part
        if pkt == b"g":
            return (0).to_bytes(8, "little").hex().encode() + b.root.to_bytes(8, "little").hex().encode()
        if pkt.startswith(b"p"):
            return (0x20).to_bytes(8, "little").hex().encode()
        if pkt.startswith(b"qRcmd,"):
            cmd = bytes.fromhex(pkt[6:].decode()).decode()
            if cmd.startswith("info mtree"):
                return mtree.encode().hex().encode()
            return b""
        if pkt.startswith(b"m"):
            a, n = (int(x, 16) for x in pkt[1:].split(b","))
            if a < base or a + n > base + len(image):
                return b"E14"
            return image[a - base : a - base + n].hex().encode()
        return b""

    sock = TranscriptSocket(b"", 1 << 16, respond)
    from pagewalk.memory.gdbstub import GdbMemory

    with fake_connection(sock):
        mem = GdbMemory("record", 1, timeout=0.01, resume=False)
    try:
        exercise(resolve(mem))
    except PagewalkError:
        pass  # a session that ends in an error (no registers for the arch) is a transcript too
    finally:
        mem.close()
    return bytes(sock.said)
