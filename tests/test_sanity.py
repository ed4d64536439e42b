"""`dump`/`checkwx` say so when the root or the paging mode looks wrong (pagewalk.sanity).

Calibration: every committed capture (every architecture, every view, with and without its
kallsyms) has no reserved entry and no table outside the image among the valid entries the survey
looks at; roots holding zeros, random bytes, text or code, lower-level tables taken for the root
and cores read with too many levels are caught. The x86 survey runs on Python ints (no numpy,
like the compiled x86-64 dump) and equals the array survey.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "fuzz"))

import harness
from test_hostile_arches import _with_bad_root  # the core with one more page, given as the root

from pagewalk import sanity
from pagewalk.arch import x86
from pagewalk.cli import main
from pagewalk.memory import open_image
from pagewalk.runs import discover
from pagewalk.target import Target, read_kallsyms, resolve

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
INFOS = [i for i in harness.core_infos() if i.roots and i.modes]
ELF_CORES = [i for i in INFOS if i.path.endswith(".elf")]
ONE_PER_ARCH = list({i.arch: i for i in reversed(ELF_CORES)}.values())
X86_64_CORE = FIXTURES / "x86_64" / "6.1-kaslr-4level" / "core.elf"
RISCV_CORE = FIXTURES / "riscv64" / "sv39" / "core.elf"

CODE_PAGE = bytes.fromhex("554889e54157415641554154534883ec28488b47") * 205  # x86 prologues, as kernel text
TEXT_PAGE = (b"Linux version 6.12.0 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC\n" * 60)[:4096]
RANDOM_PAGE = np.random.default_rng(1).integers(0, 256, 65536, dtype=np.uint8).tobytes()


def _id(info) -> str:
    return "/".join(pathlib.Path(info.path).parts[-3:-1])


def _kallsyms(info) -> dict[str, int] | None:
    """The capture's kallsyms.txt (s390x cores are decompressed elsewhere: found by arch/case)."""
    arch, case = pathlib.Path(info.path).parts[-3:-1]
    path = FIXTURES / arch / case / "kallsyms.txt"
    return read_kallsyms(str(path)) if path.exists() else None


# `pagewalk.cli.main(ARGV)` in a fresh interpreter: its exit code, its stderr and whether numpy got loaded
_FRESH = """
import contextlib, io, json, sys
from pagewalk import cli
err = io.StringIO()
with contextlib.redirect_stderr(err):
    rc = cli.main(sys.argv[1:])
print(json.dumps({"rc": rc, "stderr": err.getvalue(), "numpy": "numpy" in sys.modules}))
"""


def _run_fresh(argv: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PAGEWALK_NO_COMPILED"}
    out = subprocess.run([sys.executable, "-c", _FRESH, *argv], check=False, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def _pte_table(path: pathlib.Path) -> int:
    """A last-level table of the capture's kernel view that has valid entries (a plausible wrong CR3)."""
    with open_image(str(path)) as mem:
        t = resolve(mem)
        mode = t.mode
        lt = discover(mem, mode, t.roots["kernel"])[-1]
        for pa in lt.pas[lt.ok].tolist():
            e = np.frombuffer(mem.read(pa, 4096), dtype=mode.dtype)
            if int(((e & 1) != 0).sum()) >= 16:
                return pa
    raise AssertionError("no populated PTE table")  # pragma: no cover


# -- no warning on real captures ---------------------------------------------------------------

# every capture plain, and with its kallsyms.txt where it has one (the kdump files have none)
CAPTURE_CASES = [(i, False) for i in INFOS] + [(i, True) for i in INFOS if _kallsyms(i) is not None]


@pytest.mark.parametrize(("info", "with_kallsyms"), CAPTURE_CASES,
                         ids=[f"{_id(i)}-{'kallsyms' if k else 'plain'}" for i, k in CAPTURE_CASES])
def test_no_warning_on_any_committed_capture(info, with_kallsyms):
    """Every committed capture, every view, with and without kallsyms: the survey finds valid entries,
    none reserved and none pointing outside the image, and there is no warning."""
    ks = _kallsyms(info) if with_kallsyms else None
    with open_image(info.path) as mem:
        t = resolve(mem, arch=info.arch, kallsyms=ks)
        for view in t.roots:
            s = sanity.survey(mem, t.mode_for(view), t.roots[view])
            assert s is not None and s.valid > 0, view
            assert (s.reserved, s.absent) == (0, 0), (view, s)
            assert s.tables <= sanity.MAX_TABLES and s.valid <= sanity.MAX_ENTRIES
            assert sanity.root_warning(t, view) is None, view


# -- warnings on wrong roots and wrong modes -----------------------------------------------------

@pytest.mark.parametrize("info", ONE_PER_ARCH, ids=_id)
@pytest.mark.parametrize("what", ["zeros", "random", "text", "code"])
def test_a_root_that_is_not_a_page_table_warns(info, what, tmp_path):
    """A kernel root holding zeros, random bytes, ASCII text or machine code gets a warning, on every architecture."""
    page = {"zeros": bytes(4096), "random": RANDOM_PAGE, "text": TEXT_PAGE, "code": CODE_PAGE}[what]
    mem, bad = _with_bad_root(info, page, tmp_path)
    with mem:
        t = resolve(mem, arch=info.arch)
        wrong = Target(mem, t.mode, {"kernel": bad, "current_user": bad}, layout=t.layout)
        w = sanity.root_warning(wrong, "kernel")
        assert w is not None and f"PA {bad:#x}" in w and t.mode.name in w
        s = sanity.survey(mem, t.mode, bad)
        if what == "zeros" or s.valid == 0:  # zeros; text on big-endian ppc64 (ASCII never sets V, bit 63)
            assert "no valid entry" in w
            assert sanity.root_warning(wrong, "current_user") is None  # a user root may be empty
        else:
            assert s.bad >= sanity.MIN_BAD and s.bad >= sanity.BAD_FRACTION * s.valid


@pytest.mark.parametrize("core", ["x86_64/6.1-kaslr-4level", "x86_64/6.12-kaslr-4level-pti", "x86_64/6.12-kaslr-5level",
                                  "riscv64/sv39", "riscv64/sv57", "arm64/6.1-kaslr-48bit", "i386/6.1-pae-kaslr"])
def test_a_last_level_table_taken_for_the_root_warns(core):
    """A populated PTE table of the capture given as the root (a plausible wrong --reg) gets a warning."""
    path = FIXTURES / core / "core.elf"
    pa = _pte_table(path)
    with open_image(str(path)) as mem:
        t = resolve(mem)
        w = sanity.root_warning(Target(mem, t.mode, {"kernel": pa}), "kernel")
        assert w is not None and f"PA {pa:#x}" in w


def _mode(name: str):
    return harness.modes()[name]


@pytest.mark.parametrize("core,mode_name", [
    ("x86_64/6.1-kaslr-4level", "x86_64-5level"),
    ("x86_64/6.12-kaslr-4level-pti", "x86_64-5level"),
    ("riscv64/sv39", "sv48"),
    ("riscv64/sv39", "sv57"),
    ("riscv64/sv48", "sv57"),
    ("arm64/6.1-kaslr-48bit", "arm64-4k-52bit-lpa2-5level-ttbr1"),
    ("arm64/6.12-nokaslr-48bit-cortex-a57", "arm64-4k-48bit-lpa2-4level-ttbr1"),
    ("arm64/6.1-nokaslr-48bit", "arm64-64k-48bit-3level-ttbr1"),
])
def test_a_core_read_in_the_wrong_mode_warns(core, mode_name):
    """The right root read in a wrong paging mode (4-level as 5-level, Sv39 as Sv57, 48-bit as 52-bit
    LPA2, a 4 KiB granule as 64 KiB) gets a warning; read in its own mode it gets none."""
    with open_image(str(FIXTURES / core / "core.elf")) as mem:
        t = resolve(mem)
        assert sanity.root_warning(t, "kernel") is None
        mode = _mode(mode_name)
        assert mode.name != t.mode.name
        w = sanity.root_warning(Target(mem, mode, {"kernel": t.roots["kernel"]}), "kernel")
        assert w is not None and mode.name in w


def test_wrong_modes_from_the_hostile_tests_warn():
    """The cores read with more levels than they have (tests/test_hostile_arches.py's WRONG_MODE_CASES
    that are visible at all: a root table that the deeper mode reads whole) all get a warning."""
    seen = 0
    for info in ELF_CORES:
        mode0 = info.modes[0]
        for m in harness.modes().values():
            if not (m.arch == mode0.arch and m.entry_bytes == mode0.entry_bytes and len(m.levels) > len(mode0.levels)
                    and m.levels[-1].shift == mode0.levels[-1].shift and m.byteorder == mode0.byteorder
                    and m.levels[0].entries >= mode0.levels[0].entries):
                continue
            with open_image(info.path) as mem:
                t = resolve(mem, arch=info.arch)
                if sanity.survey(mem, m, t.roots["kernel"]) is None:
                    continue
                seen += 1
                assert sanity.root_warning(Target(mem, m, {"kernel": t.roots["kernel"]}), "kernel"), (_id(info), m.name)
    assert seen >= 8


# -- cost and the numpy-free x86 path ------------------------------------------------------------

def test_survey_of_a_table_bomb_stays_within_its_budget(tmp_path):
    """A root whose 512 entries name 512 distinct full tables is looked at within MAX_TABLES tables
    and MAX_ENTRIES entries (the survey's cost does not grow with the input)."""
    n = 513
    buf = np.zeros((n, 512), np.uint64)
    buf[0] = (np.arange(1, 513, dtype=np.uint64) << np.uint64(12)) | np.uint64(0x63)
    buf[1:] = (np.arange(512, dtype=np.uint64)[None, :] % np.uint64(n) << np.uint64(12)) | np.uint64(0x63)
    path = tmp_path / "bomb.raw"
    path.write_bytes(buf.tobytes())
    with open_image(str(path), "raw", 0) as mem:
        s = sanity.survey(mem, x86.X86_64_4LEVEL, 0)
        assert s.tables <= sanity.MAX_TABLES and s.valid <= sanity.MAX_ENTRIES
        assert s.levels == 3 and s.bad == 0
        assert sanity.root_warning(Target(mem, x86.X86_64_4LEVEL, {"kernel": 0}), "kernel") is None


def _array_only(mode):
    return mode.replace(extra={k: v for k, v in mode.extra.items() if k != "scalar_hooks"})


def _fields(s) -> tuple:
    return (s.valid, s.reserved, s.absent, s.tables, s.levels)


def test_scalar_survey_equals_array_survey_on_captures():
    """x86's int survey (scalar hooks, no numpy) counts exactly what the array survey counts, on every
    x86 capture and view and on its PTE tables taken for roots."""
    for info in [i for i in INFOS if i.arch in ("x86_64", "i386")]:
        with open_image(info.path) as mem:
            t = resolve(mem, arch=info.arch)
            for view, root in t.roots.items():
                mode = t.mode_for(view)
                assert "scalar_hooks" in mode.extra
                assert _fields(sanity.survey(mem, mode, root)) == _fields(sanity.survey(mem, _array_only(mode), root))
            lt = discover(mem, t.mode, t.roots["kernel"])[-1]
            for pa in lt.pas[lt.ok].tolist()[:8]:
                assert _fields(sanity.survey(mem, t.mode, pa)) == _fields(sanity.survey(mem, _array_only(t.mode), pa))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, (1 << 32) - 1), sparse=st.booleans(), mode_i=st.integers(0, 3),
       fill=st.sampled_from([0, 0x63, 0x83, 0xE3]))
def test_scalar_survey_equals_array_survey_on_random_tables(seed, sparse, mode_i, fill, tmp_path_factory):
    """On random bytes as x86 tables (some entries forced to point at the image's own pages), the int
    survey and the array survey count the same."""
    mode = (x86.X86_64_4LEVEL, x86.X86_64_5LEVEL, x86.I386_PAE, x86.I386_2LEVEL)[mode_i]
    rng = np.random.default_rng(seed)
    raw = bytearray(rng.integers(0, 256, 4096 * 4, dtype=np.uint8).tobytes())
    if sparse:  # mostly empty tables, as real ones are
        e = np.frombuffer(raw, np.uint64).copy()
        e[rng.random(len(e)) < 0.9] = 0
        raw = bytearray(e.tobytes())
    if fill and mode.entry_bytes == 8:
        e = np.frombuffer(raw, np.uint64).copy()
        e[::3] = (np.arange(len(e[::3]), dtype=np.uint64) % np.uint64(4) << np.uint64(12)) | np.uint64(fill)
        raw = bytearray(e.tobytes())
    path = tmp_path_factory.mktemp("rand") / "t.raw"
    path.write_bytes(bytes(raw))
    with open_image(str(path), "raw", 0) as mem:
        a = sanity.survey(mem, mode, 0)
        b = sanity.survey(mem, _array_only(mode), 0)
        assert _fields(a) == _fields(b)


def test_x86_64_dump_with_a_wrong_root_imports_no_numpy():
    """`pagewalk dump` of an x86-64 capture, right root or wrong, says what it should without loading numpy."""
    pa = _pte_table(X86_64_CORE)
    right = _run_fresh(["dump", str(X86_64_CORE), "--view", "current_kernel", "-o", os.devnull])
    assert right == {"rc": 0, "stderr": right["stderr"], "numpy": False}
    assert "warning" not in right["stderr"]
    wrong = _run_fresh(["dump", str(X86_64_CORE), "--reg", f"cr3={pa:#x}", "--view", "current_kernel", "-o", os.devnull])
    assert wrong["rc"] == 0 and not wrong["numpy"]
    assert "pagewalk: warning: " in wrong["stderr"] and f"PA {pa:#x}" in wrong["stderr"]


# -- the command line ----------------------------------------------------------------------------

def _warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("pagewalk: warning:")]


def test_cli_dump_warns_on_stderr_and_still_dumps(capsys):
    """`dump --reg cr3=<a PTE table>` prints one warning line on stderr, the dump on stdout, exit 0; -q silences it."""
    pa = _pte_table(X86_64_CORE)
    argv = ["dump", str(X86_64_CORE), "--reg", f"cr3={pa:#x}", "--view", "current_kernel"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert len(_warnings(err)) == 1 and "is the root" in err and "x86_64-4level" in err
    assert "---[ Kernel Space ]---" in out
    assert main([*argv, "-q"]) == 0
    out_q, err_q = capsys.readouterr()
    assert err_q == "" and out_q == out
    assert main(["dump", str(X86_64_CORE), "--view", "current_kernel"]) == 0  # the right root: no warning
    assert _warnings(capsys.readouterr().err) == []


def test_cli_dump_warns_on_a_wrong_mode_riscv(capsys):
    """`dump --reg satp=<Sv39's root with MODE 10 (Sv57)>` warns on stderr naming sv57; -q silences it."""
    with open_image(str(RISCV_CORE)) as mem:
        satp = mem.cpu.regs["satp"]
    wrong = (satp & ~(0xF << 60)) | (10 << 60)
    assert main(["dump", str(RISCV_CORE), "--reg", f"satp={wrong:#x}"]) == 0
    err = capsys.readouterr().err
    assert len(_warnings(err)) == 1 and "(sv57)" in err
    assert main(["dump", str(RISCV_CORE), "--reg", f"satp={wrong:#x}", "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_cli_checkwx_warns_and_keeps_its_exit_code(capsys):
    """`checkwx` with a wrong mode (4-level read as 5-level: CR4.LA57 set) warns on stderr, and its
    exit code is the check's own; with -q nothing goes to stderr."""
    with open_image(str(X86_64_CORE)) as mem:
        cr4 = mem.cpu.regs["cr4"]
    argv = ["checkwx", str(X86_64_CORE), "--reg", f"cr4={cr4 | (1 << 12):#x}"]
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc in (0, 1) and "W+X" in out
    assert len(_warnings(err)) == 1 and "x86_64-5level" in err
    assert main([*argv, "-q"]) == rc
    assert capsys.readouterr().err == ""
    assert main(["checkwx", str(X86_64_CORE)]) == 0
    assert _warnings(capsys.readouterr().err) == []
