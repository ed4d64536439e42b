"""The analysis commands of the `pagewalk` CLI: stats, aliases, diff, check, map.

Parsing lives in `add_parsers()` and each command is `cmd_<name>(args, target, ...)`, so that
cli.py only wires them (it owns `_common()` for the image options and `_target()` to resolve
one). `main(argv)` runs them on their own (`python -m pagewalk.analysis.commands ...`).

JSON output: `{"schema": "pagewalk.<cmd>", "version": 1, ...}`, described in SCHEMAS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

import numpy as np

SCHEMA_VERSION = 1
VIEW_HELP = "kernel (default), current_kernel, current_user (x86 PTI: also kernel_user)"


def add_parsers(sub, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the analysis subcommands to `sub` (argparse subparsers); `common` adds the image options."""
    s = sub.add_parser("stats", help="tables per level, bytes of page tables, leaves by size, sharing")
    common(s)
    s.add_argument("--view", default="kernel", help=VIEW_HELP)
    s.add_argument("--format", choices=("text", "json"), default="text")

    a = sub.add_parser("aliases", help="physical ranges mapped at more than one VA; W/X ones flagged")
    common(a)
    a.add_argument("--view", default="kernel", help=VIEW_HELP)
    a.add_argument("--format", choices=("text", "json"), default="text")
    a.add_argument("--wx", action="store_true", help="only the ranges writable at one VA and executable at another")
    a.add_argument("--max-members", type=int, default=None, metavar="N",
                   help="list at most N virtual mappings per range (text default 8; counts stay exact)")

    d = sub.add_parser("diff", help="what changed between two images (or two views of one): added, removed, "
                       "changed, remapped, moved")
    common(d)
    d.add_argument("image_b", nargs="?", help="the second image (default: the first, with --view-b)")
    d.add_argument("--view", default="kernel", help="view of A; " + VIEW_HELP)
    d.add_argument("--view-b", default=None, help="view of B (default: --view)")
    d.add_argument("--shift", action="append", default=[], metavar="VA_DELTA[:PA_DELTA][@START-END]",
                   help="compare A's VAs (in START-END) at + VA_DELTA in B (and PAs at + PA_DELTA); repeatable")
    d.add_argument("--ignore-pa", action="store_true", help="do not compare physical addresses (two boots)")
    d.add_argument("--format", choices=("text", "json"), default="text")

    c = sub.add_parser("check", help="named security checks with severities; exit 1 when a finding reaches --fail-on")
    common(c)
    c.add_argument("--view", action="append", default=None, help="views to check (repeatable; default: all)")
    c.add_argument("--fail-on", choices=("info", "low", "medium", "high"), default="medium",
                   help="lowest severity that makes the exit status 1 (default medium)")
    c.add_argument("--format", choices=("text", "json"), default="text")

    m = sub.add_parser("map", help="one self-contained HTML file: the address space, zoomable, coloured by permissions")
    common(m)
    m.add_argument("--view", default="kernel", help=VIEW_HELP)
    m.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file to write")


# -- helpers ---------------------------------------------------------------------------------------

def _head(cmd: str, target, view: str | None = None) -> dict:
    mode = target.mode_for(view) if view else target.mode
    d = {"schema": f"pagewalk.{cmd}", "version": SCHEMA_VERSION, "arch": mode.arch, "mode": mode.name}
    if view:
        d["view"] = view
        d["root_pa"] = target.root(view)
    return d


def _size(n: int) -> str:
    """Bytes with a binary unit: 4K, 2M, 1.5G."""
    for unit, shift in (("E", 60), ("P", 50), ("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.0f}{unit}" if n % (1 << shift) == 0 else f"{v:.1f}{unit}"
    return f"{n}B"


def _json(doc: dict, out: TextIO) -> None:
    out.write(json.dumps(doc, indent=1))
    out.write("\n")


# -- commands --------------------------------------------------------------------------------------

def cmd_stats(args: argparse.Namespace, target, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    from .stats import stats

    s = stats(target, args.view)
    if args.format == "json":
        _json({**_head("stats", target, args.view), **s.as_dict()}, out)
        return 0
    w = out.write
    w(f"view {args.view}  {s.mode}  root {s.root_pa:#x}\n")
    w(f"{'level':6} {'tables':>7} {'missing':>7} {'bytes':>8} {'refs':>7} {'shared':>6} {'max-refs':>8}"
      f" {'empty':>8} {'table':>7} {'leaf':>7} {'not-present':>11} {'reserved':>8} {'hidden':>6}\n")
    for lv in s.levels:
        e = lv.entries
        w(f"{lv.name:6} {lv.tables:7} {lv.tables_missing:7} {_size(lv.table_bytes):>8} {lv.references:7} "
          f"{lv.shared_tables:6} {lv.max_references:8} {e['empty']:8} {e['table']:7} {e['leaf']:7} "
          f"{e['not_present']:11} {e['reserved']:8} {e['hidden']:6}\n")
    w(f"page tables: {_size(s.table_bytes)} in {sum(lv.tables for lv in s.levels)} tables\n")
    for lf in s.leaves:
        w(f"leaves {_size(lf.size):>5} ({lf.level}): {lf.entries} entries; mapped {_size(lf.mapped_bytes)} "
          f"as {lf.mapped_pages} pages\n")
    w(f"mapped in all: {_size(s.mapped_bytes)} in {s.intervals['mapped']} intervals\n")
    for name, n in s.intervals.items():
        if name != "mapped" and n:
            w(f"{name} intervals: {n}\n")
    for sh in s.shared:
        w(f"shared: {sh['level']} table at {sh['pa']:#x} referenced {sh['references']} times\n")
    return 0


def cmd_aliases(args: argparse.Namespace, target, out: TextIO | None = None) -> int:
    out = out or sys.stdout

    from .aliases import aliases

    limit = args.max_members if args.max_members is not None else (None if args.format == "json" else 8)
    res = aliases(target, args.view, max_members=limit)
    segs = np.flatnonzero(res.arrays.wx) if args.wx else np.arange(len(res))
    chunks = (res.build(segs[k : k + 4096]) for k in range(0, len(segs), 4096))  # objects a chunk at a time
    if args.format == "json":
        head = {**_head("aliases", target, args.view), "intervals": res.intervals, "aliased_bytes": res.aliased_bytes,
                "count": len(res), "wx_count": res.wx_count}
        out.write(json.dumps(head)[:-1] + ', "aliases": [')
        first = True
        for chunk in chunks:
            for g in chunk:
                out.write(("\n" if first else ",\n") + json.dumps(g.as_dict()))
                first = False
        out.write("\n]}\n")
        return 0
    w = out.write
    for chunk in chunks:
        for g in chunk:
            flag = "  W/X" + (" (kernel-executable)" if g.kernel_wx else " (user double mapping)") if g.wx else ""
            w(f"PA {g.pa_start:#x}-{g.pa_end:#x} ({_size(g.pa_end - g.pa_start)}): {g.mappings} mappings{flag}\n")
            for mb in g.members:
                times = f" x{mb.count}" if mb.count > 1 else ""
                w(f"    {mb.va_start:#018x}-{mb.va_end:#018x}{times}  {mb.perm:14} {mb.level:4} entry {mb.entry:#018x}\n")
            shown = sum(mb.count for mb in g.members)
            if shown < g.mappings:
                w(f"    ... {g.mappings - shown} more\n")
    w(f"{len(res)} aliased ranges ({_size(res.aliased_bytes)}), {res.wx_count} writable at one VA and "
      f"executable at another; {res.intervals} intervals swept\n")
    return 0


def cmd_diff(args: argparse.Namespace, target_a, target_b=None, out: TextIO | None = None) -> int:
    """Exit status 0 when nothing differs (after the given --shift), 1 otherwise."""
    out = out or sys.stdout
    from .diff import Shift, diff

    shifts = [Shift.parse(s) for s in args.shift]
    res = diff(target_a, target_b, view_a=args.view, view_b=args.view_b, shifts=shifts,
               pa="ignore" if args.ignore_pa else "exact")
    status = 1 if res.changes else 0
    if args.format == "json":
        doc = {
            "schema": "pagewalk.diff", "version": SCHEMA_VERSION,
            "a": {"image": args.image, "view": args.view, "mode": target_a.mode_for(args.view).name},
            "b": {"image": args.image_b or args.image, "view": args.view_b or args.view,
                  "mode": (target_b or target_a).mode_for(args.view_b or args.view).name},
            "shifts": [s.__dict__ for s in shifts], "pa": res.pa, "verdict": res.verdict, "counts": res.counts,
            "same_bytes": res.same_bytes, "moves": [{"va_delta": d, "bytes": n} for d, n in res.moves.items()],
            "changes": [c.as_dict() for c in res.changes],
        }
        _json(doc, out)
        return status
    w = out.write
    w(res.verdict + "\n")
    for c in res.changes:
        left = f"{c.va_start:#018x}-{c.va_end % (1 << 64):#018x} {_size(c.size):>6}"
        a = f"{c.perm_a} {c.level_a} pa {c.pa_a:#x}" if c.perm_a is not None else ""
        b = f"{c.perm_b} {c.level_b} pa {c.pa_b:#x}" if c.perm_b is not None else ""
        if c.kind == "moved":
            w(f"moved    {left}  -> {c.va_b:#018x}  {a}  ->  {b}\n")
        elif c.kind == "removed":
            w(f"removed  {left}  {a}\n")
        elif c.kind == "added":
            w(f"added    {left}  {b}\n")
        else:
            at_b = f" (B at {c.va_b:#x})" if c.va_b is not None else ""
            w(f"{c.kind:8} {left}{at_b}  {a}  ->  {b}\n")
    return status


def cmd_check(args: argparse.Namespace, target, kallsyms: dict[str, int] | None = None, out: TextIO | None = None) -> int:
    """Exit status 1 when a finding reaches --fail-on, else 0."""
    out = out or sys.stdout
    from .check import CHECKS, check

    symbols = dict(kallsyms or {})
    if "_stext" not in symbols:
        vi = target.mem.cpu.vmcoreinfo
        if "SYMBOL(_stext)" in vi:
            try:
                symbols["_stext"] = int(vi["SYMBOL(_stext)"], 16)
            except ValueError:
                pass
    res = check(target, views=args.view, symbols=symbols)
    status = res.exit_status(args.fail_on)
    if args.format == "json":
        doc = {**_head("check", target), "views": res.views, "fail_on": args.fail_on, "exit_status": status,
               "checks": {k: {"severity": v[0], "description": v[1]} for k, v in CHECKS.items()},
               "notes": res.notes, "counts": res.counts(), "findings": [f.as_dict() for f in res.findings]}
        _json(doc, out)
        return status
    w = out.write
    for f in res.findings:
        pa = f"  pa {f.pa_start:#x}-{f.pa_end:#x}" if f.pa_start is not None else ""
        w(f"{f.severity.upper():6} {f.check}: {f.message}\n")
        w(f"       {','.join(f.views)}  {f.va_start:#018x}-{f.va_end % (1 << 64):#018x} ({f.pages} pages){pa}  "
          f"{f.level} {f.perm}  entry {f.entry:#018x}\n")
        for k, v in f.detail.items():
            if k == "writable_at":
                for x in v:
                    w(f"       writable at {x['va_start']:#018x}-{x['va_end']:#018x}  {x['perm']} {x['level']} "
                      f"entry {x['entry']:#018x}\n")
            else:
                w(f"       {k}: {v:#x}\n" if isinstance(v, int) else f"       {k}: {v}\n")
        for st in f.trace:
            e = "not in image" if st["entry"] is None else f"{st['entry']:#018x}"
            w(f"         {st['level']}[{st['index']}] @ {st['table_pa'] + 8 * st['index']:#x} = {e} -> {st['kind']}\n")
    for n in res.notes:
        w(f"note: {n}\n")
    counts = res.counts()
    summary = ", ".join(f"{k} {v['findings']} ({v['pages']} pages)" for k, v in counts.items()) or "no findings"
    w(f"checked {', '.join(res.views)}: {summary}; exit {status} (--fail-on {args.fail_on})\n")
    return status


def cmd_map(args: argparse.Namespace, target, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    from .htmlmap import write_map

    n = write_map(target, args.output, view=args.view)
    print(f"pagewalk: wrote {args.output}: {n} ranges", file=sys.stderr)
    return 0


NAMES = ("stats", "aliases", "diff", "check", "map")


def run(args: argparse.Namespace, make_target: Callable) -> int:
    """Run the analysis command `args.cmd`; `make_target(args)` is cli._target (-> (target, kallsyms))."""
    if args.cmd == "diff":
        ta, _ = make_target(args)
        tb = None
        if args.image_b:
            tb, _ = make_target(argparse.Namespace(**{**vars(args), "image": args.image_b}))
        return cmd_diff(args, ta, tb)
    target, kallsyms = make_target(args)
    if args.cmd == "check":
        return cmd_check(args, target, kallsyms)
    return {"stats": cmd_stats, "aliases": cmd_aliases, "map": cmd_map}[args.cmd](args, target)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pagewalk.analysis.commands CMD IMAGE ...`: the analysis commands without cli.py."""
    from .. import cli
    from ..errors import PagewalkError, UsageError

    ap = argparse.ArgumentParser(prog="pagewalk")
    sub = ap.add_subparsers(dest="cmd", required=True)
    add_parsers(sub, cli._common)
    args = ap.parse_args(argv)  # `diff A B --options` (argparse takes both positionals together)
    try:
        return run(args, cli._target)
    except PagewalkError as e:
        print(f"pagewalk: error: {e}", file=sys.stderr)
        return e.exit_code if not isinstance(e, UsageError) else 2
    except BrokenPipeError:
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
