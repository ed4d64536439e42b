"""The `pagewalk` command: arguments in, library calls, output out. No logic of its own."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .errors import PagewalkError, UsageError

_REG_HELP = """\
page-table roots, per architecture (NAME=VALUE, repeatable; the image supplies them where it can):
  x86_64   cr3 (root; the QEMU CPU-state note has it), cr4 (bit 12 LA57 = 5-level paging);
           VMCOREINFO's SYMBOL(init_top_pgt) + NUMBER(phys_base) give the kernel's own root.
  i386     cr3 (root: the page directory, or with PAE the 32-byte aligned PDPT; the QEMU CPU-state
           note has it), cr4 (bit 5 PAE = 3-level paging, else 2-level; bit 4 PSE = 4 MiB pages);
           VMCOREINFO's SYMBOL(swapper_pg_dir) - PAGE_OFFSET gives the kernel's own root.
  arm64    ttbr1_el1 (kernel root), tcr_el1 (granule, T1SZ/T0SZ, DS=LPA2, IPS), ttbr0_el1 (user
           half, --view current_user), mair_el1 (memory types for translate's AttrIndx; default:
           Linux's layout for the kernel version); a QEMU arm64 core has none of them: gdb on
           QEMU's gdbstub, `p/x $TTBR1_EL1`. VMCOREINFO's SYMBOL(swapper_pg_dir) -
           NUMBER(kimage_voffset) and NUMBER(TCR_EL1_T1SZ) suffice for the kernel view.
  arm      ttbr0, ttbr1, ttbcr (TTBCR.EAE, bit 31: LPAE; N bits 2:0, or T0SZ 2:0 / T1SZ 18:16 with
           LPAE, split the space between TTBR0 and TTBR1); sctlr (AFE, bit 29: AP[0] is an Access
           flag), dacr (domains: translate says client/manager/no access); prrr/nmrr or
           mair0/mair1 are accepted but not needed. QEMU's ELF32 ARM cores carry none of them:
           gdb on QEMU's gdbstub, `p/x $TTBR0_EL1`, `$TTBR1_EL1`, `$TTBCR`, `$SCTLR`, `$DACR`.
           swapper_pg_dir comes from --kallsyms, else from TTBR1 (short descriptors: Linux loads
           it there; LPAE: TTBR1 - 0x4000 with T1SZ=2).
  riscv64  satp (MODE 63:60: 8 Sv39, 9 Sv48, 10 Sv57; ASID 59:44; PPN 43:0; QEMU `info registers`);
  riscv32  satp (MODE bit 31 = Sv32; PPN 21:0); --kallsyms swapper_pg_dir/_end/kernel_map give
           the kernel's own root and marker addresses.
  ppc64    (book3s64) prtb0 (process-table entry 0, doubleword 0: RTS1||RPDB||RTS2||RPDS), or rpdb
           (radix root PA) [rts, default 21 = 52-bit; rpds, default 13], or pgd (init_mm.pgd PA, radix
           or hash: --kernel-config radix|hash if the entries do not tell), or prtb (process table PA) /
           ptcr (bare metal) to read entry 0 from the image. QEMU pseries cores have no SPRs:
           `pagewalk extract --reg prtb0=...` stores it; --kallsyms System.map gives process_tb or
           swapper_pg_dir instead. Radix index sizes below the root come from the entries' NLS.
  s390x    asce (the kernel ASCE: table origin bits 0-51, DT bits 60-61 = 3 region-first,
           2 region-second, 1 region-third, 0 segment table; TL bits 62-63); else the core's
           NT_S390_CTRS note: cr13 (home ASCE = the kernel's, view kernel), cr1 (primary,
           current_kernel), cr7 (secondary = the user ASCE, current_user); --kallsyms System.map
           gives the marker variables (Debian: KALLSYMS_ALL=n).
  mips64   pgd=VA|PA (MIPS has no page-table base register: init_mm.pgd or pgd_current[cpu], a
           CKSEG0/XKPHYS address or a PA); else swapper_pg_dir from --kallsyms, else found by
           scanning the image. --kernel-config: 4k (default, Debian 5kc-malta), 4k-va48, 16k,
           16k-va48, 64k, 64k-va48.
  sparc64  pgd=PA (or --kallsyms + --define kern_base=PA); --kernel-config sun4v (default), sun4u.
  arc      scratch_data0 (ARCv2 MMU scratch register = the current PGD) or pgd; --kernel-config 8k
           (default), 4k, 16k, 8k-hugepage-16m, 8k-3level, 8k-4level, arcompact-8k.
"""


def _common(p: argparse.ArgumentParser, image: bool = True) -> None:
    if image:
        p.add_argument("image", nargs="?", help="QEMU dump-guest-memory ELF core, ELF vmcore, kdump-compressed file "
                       "(makedumpfile, plain or flattened), or raw physical dump (or --gdb/--qmp instead)")
    live = p.add_argument_group("a live QEMU guest (instead of IMAGE; stopped while read, resumed after)")
    live.add_argument("--gdb", metavar="HOST:PORT",
                      help="QEMU's gdbstub (qemu -s: localhost:1234; -gdb tcp::PORT); registers come from it")
    live.add_argument("--qmp", metavar="PATH",
                      help="QEMU's QMP socket (-qmp unix:PATH,server=on,wait=off; HOST:PORT for tcp)")
    live.add_argument("--keep-running", action="store_true",
                      help="do not hold the guest stopped while reading (the view may be torn)")
    p.add_argument("--arch", help="architecture (default: from the image): x86_64, i386, arm64, arm (armhf), riscv64, riscv32, "
                   "ppc64 (ppc64el), s390x, mips64 (mips64el), sparc64, arc")
    p.add_argument("--reg", action="append", metavar="NAME=VALUE", help="a register value, e.g. cr3=0x1000")
    p.add_argument("--base", metavar="PA", help="first physical address of a raw dump (default 0)")
    p.add_argument("--image-format", choices=("auto", "elf", "kdump", "raw"), default="auto")
    p.add_argument("--kallsyms", metavar="FILE", help="/proc/kallsyms or System.map of the guest (KASLR layout)")
    p.add_argument("--define", action="append", metavar="NAME=VALUE", help="a layout constant, e.g. PAGE_OFFSET=0x...")
    p.add_argument("--pti", choices=("auto", "on", "off"), default="auto", help="x86 page-table isolation (default: detect)")
    p.add_argument("--kernel-version", metavar="X.Y", help="the guest kernel's version when the image does not say it "
                   "(VMCOREINFO OSRELEASE); selects version-specific ptdump formats (arm64 6.1 vs 6.12)")
    p.add_argument("--kernel-config", metavar="NAME", help="the guest kernel's page-table configuration: mips64 (4k [default], 4k-va48, 16k, "
                   "16k-va48, 64k, 64k-va48), sparc64 (sun4v [default], sun4u), arc (8k [default], 4k, 16k, "
                   "8k-hugepage-16m, 8k-3level, 8k-4level, arcompact-8k), ppc64 (radix, hash)")
    p.add_argument("-q", "--quiet", action="store_true", help="no notes on stderr")


def _add_dump(sub) -> None:
    d = sub.add_parser("dump", help="the kernel's ptdump text (debugfs page_tables/kernel)", epilog=_REG_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(d)
    d.add_argument("--view", default="kernel", choices=("kernel", "current_kernel", "current_user"))
    d.add_argument("--format", choices=("text", "json"), default="text")
    d.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    d.add_argument("--pid", type=int, metavar="PID",
                   help="a live Linux process instead of IMAGE: its VMAs and pages from /proc/PID/maps, "
                   "/proc/PID/pagemap and /proc/kpageflags (PFN-based fields need root)")
    _max_runs(d)


def _add_checkwx(sub) -> None:
    c = sub.add_parser("checkwx", help="the kernel's W+X check; exit 0 passed, 1 W+X found")
    _common(c)
    _max_runs(c)


def _max_runs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-runs", type=int, metavar="N", help="stop with an error after N ranges (a page-table "
                   "bomb's output: shared tables can expand without end); 0: no limit; default 33554432")


def _add_translate(sub) -> None:
    t = sub.add_parser("translate", help="translate a VA: per-level trace, then the PA or the fault")
    # one positional list: with an optional IMAGE before it, argparse would take a lone VA for IMAGE
    t.add_argument("operands", nargs="+", metavar="[IMAGE] VA", help="the image (unless --gdb/--qmp) and the VA")
    _common(t, image=False)
    t.add_argument("--view", default="kernel", choices=("kernel", "current_kernel", "current_user"))
    t.add_argument("--format", choices=("text", "json"), default="text")


def _add_extract(sub) -> None:
    x = sub.add_parser("extract", help="write a small ELF core with only the page tables and the notes")
    _common(x)
    x.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the small core; registers given with --reg are stored in it")
    x.add_argument("--keep-va", action="append", metavar="VA", help="also keep the page holding this VA")


_CORE_PARSERS = {"dump": _add_dump, "checkwx": _add_checkwx, "translate": _add_translate, "extract": _add_extract}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; given one of the core commands, with only that subcommand (its
    own --help and errors are the same; building all of them is a tenth of a fast dump)."""
    ap = argparse.ArgumentParser(
        prog="pagewalk",
        description="Walk CPU page tables in memory images and dump them the way the Linux kernel does.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_REG_HELP,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    if command in _CORE_PARSERS:
        _CORE_PARSERS[command](sub)
        return ap
    for add in _CORE_PARSERS.values():
        add(sub)
    from .analysis.commands import add_parsers as _analysis_parsers

    _analysis_parsers(sub, _common)
    return ap


def _target(args: argparse.Namespace):
    from .memory import open_image
    from .target import parse_assignments, parse_int, read_kallsyms, resolve

    base = parse_int(args.base) if args.base else None
    if getattr(args, "gdb", None) or getattr(args, "qmp", None):
        if args.image:
            raise UsageError("give an IMAGE or --gdb/--qmp, not both")
        from .live import open_live

        mem = open_live(args.gdb, args.qmp, args.keep_running)
        _LIVE.append(mem)
    elif not args.image:
        raise UsageError("an IMAGE, --gdb HOST:PORT or --qmp PATH is needed")
    else:
        mem = open_image(args.image, args.image_format, base)
    for w in getattr(mem, "warnings", []):
        _note(args, f"warning: {w}")
    regs = parse_assignments(args.reg, "--reg")
    defines = parse_assignments(args.define, "--define")
    kallsyms = read_kallsyms(args.kallsyms) if args.kallsyms else {}
    target = resolve(mem, args.arch, regs, kallsyms, defines, args.pti, kernel_version=args.kernel_version,
                     kernel_config=args.kernel_config)
    target.quiet = args.quiet
    if getattr(args, "max_runs", None) is not None:
        from . import runs

        runs.MAX_STREAM_RUNS = args.max_runs
    for n in target.notes:
        _note(args, f"note: {n}")
    return target, kallsyms


_LIVE: list = []  # live guests opened by _target(): closed (guest resumed) when the command ends


def _close_live() -> None:
    while _LIVE:
        _LIVE.pop().close()


def _note(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(f"pagewalk: {text}", file=sys.stderr)


def cmd_dump(args: argparse.Namespace) -> int:
    from .api import dump

    if args.pid is not None:
        if args.image or args.gdb or args.qmp:
            raise UsageError("give one of IMAGE, --gdb/--qmp or --pid")
        from .process import dump_pid

        if args.output:
            with open(args.output, "w") as f:
                return dump_pid(args.pid, f, args.format, quiet=args.quiet)
        return dump_pid(args.pid, sys.stdout, args.format, quiet=args.quiet)
    target, _ = _target(args)
    from .sanity import root_warning

    if warning := root_warning(target, args.view):  # a wrong root or mode: say so, dump anyway
        _note(args, f"warning: {warning}")
    if args.output:
        with open(args.output, "w") as f:
            dump(target, args.view, f, args.format)
    else:
        dump(target, args.view, sys.stdout, args.format)
    return 0


def cmd_checkwx(args: argparse.Namespace) -> int:
    from .api import checkwx

    target, _ = _target(args)
    from .sanity import root_warning

    if warning := root_warning(target, "kernel"):  # a wrong root or mode: say so, check anyway
        _note(args, f"warning: {warning}")
    res = checkwx(target)
    for line in res.lines:
        print(line)
    return 0 if res.passed else 1


def cmd_translate(args: argparse.Namespace) -> int:
    from .target import parse_int
    from .translate import translate

    if len(args.operands) > 2:
        raise UsageError("translate takes [IMAGE] VA")
    args.image = args.operands[0] if len(args.operands) == 2 else None
    target, _ = _target(args)
    va = parse_int(args.operands[-1])
    root = target.root(args.view)
    mode = target.mode_for(args.view)
    tr = translate(target.mem, mode, root, va)
    if args.format == "json":
        import json

        doc = {
            "schema": "pagewalk.translate",
            "version": 1,
            "va": va,
            "mode": mode.name,
            "root_pa": root,
            "steps": [s.__dict__ for s in tr.steps],
            "pa": tr.pa,
            "page_size": tr.page_size,
            "fault": tr.fault,
        }
        print(json.dumps(doc, indent=1))
        return 0 if tr.ok else 1
    print(f"va {va:#018x}  {mode.name}  root {root:#x} ({args.view})")
    for s in tr.steps:
        entry_pa = s.table_pa + s.index * mode.entry_bytes
        if s.entry is None:
            print(f"  {s.level}[{s.index:3d}] @ {entry_pa:#x}: table not in the image")
            continue
        print(f"  {s.level}[{s.index:3d}] @ {entry_pa:#x} = {s.entry:#018x}  {s.flags}  -> {s.kind}")
    if tr.ok:
        size = _size_text(tr.page_size or 0)
        perm_text = mode.extra.get("perm_text", lambda p: f"{p:#x}")
        print(f"pa {tr.pa:#x}  ({size} page; effective: {perm_text(tr.perm)})")
        return 0
    print(f"fault: {tr.fault}")
    return 1


def _size_text(n: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n}B"


def cmd_extract(args: argparse.Namespace) -> int:
    from .api import table_pages
    from .memory.notes import PAGEWALK_NOTE, registers_note
    from .memory.write import write_elf_core
    from .target import parse_assignments, parse_int
    from .translate import translate

    target, kallsyms = _target(args)
    mem = target.mem
    pages = table_pages(target)
    keep = set()
    vas = [parse_int(v) for v in args.keep_va or []]
    vas += [kallsyms[s] for s in getattr(target.kernel, "LAYOUT_SYMBOLS", ()) if s in kallsyms]
    for va in vas:
        tr = translate(mem, target.mode, target.root("kernel"), va)
        if tr.ok:
            keep.add(tr.pa & ~4095)
        else:
            _note(args, f"warning: --keep-va {va:#x}: {tr.fault}")
    chunks = [(pa, mem.read(pa, size)) for pa, size in pages.items()]
    chunks += [(pa, mem.read(pa, 4096)) for pa in keep if mem.contains(pa, 4096)]
    little = getattr(mem, "little_endian", True)
    notes = [n for n in mem.cpu.notes if n[0] != PAGEWALK_NOTE]
    given = parse_assignments(args.reg, "--reg")
    if given:  # registers from the command line travel with the small core
        notes.append(registers_note(given))
    n = write_elf_core(args.output, target.mode.arch, little, notes, chunks)
    _note(args, f"wrote {args.output}: {len(chunks)} pages, {n} bytes")
    return 0


def _analysis(args: argparse.Namespace) -> int:
    from .analysis.commands import run

    return run(args, _target)  # run() calls _target() itself (twice for `diff A B`)


COMMANDS = {
    "dump": cmd_dump,
    "checkwx": cmd_checkwx,
    "translate": cmd_translate,
    "extract": cmd_extract,
    **{name: _analysis for name in ("stats", "aliases", "diff", "check", "map")},
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser(argv[0] if argv else None)
    args, extra = ap.parse_known_args(argv)
    if extra and args.cmd == "translate" and not any(x.startswith("-") for x in extra):
        args.operands += extra  # `translate IMAGE --opt X VA`: argparse stops the list at the option
    elif extra and args.cmd == "diff" and args.image_b is None and len(extra) == 1 and not extra[0].startswith("-"):
        args.image_b = extra[0]  # `diff A --opt X B`
    elif extra:
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return COMMANDS[args.cmd](args)
    except PagewalkError as e:
        print(f"pagewalk: error: {e}", file=sys.stderr)
        return e.exit_code if not isinstance(e, UsageError) else 2
    except BrokenPipeError:
        # `pagewalk dump ... | head`: the reader left; not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        _close_live()


if __name__ == "__main__":
    sys.exit(main())
