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

from .._lazynp import np  # numpy on first use: `pagewalk dump` builds this parser too

SCHEMA_VERSION = 1
ALIAS_LIMIT = 1000  # ranges `aliases` lists by default (the summary counts every one)
DIFF_LIMIT = 1000  # changed ranges `diff` lists by default (the verdict counts every one)
CHECK_LIMIT = 1000  # findings `check` lists by default (the summary and the exit status count every one)
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
    a.add_argument("--limit", type=int, default=ALIAS_LIMIT, metavar="N",
                   help=f"list at most N of the W/X ranges (default {ALIAS_LIMIT}); the summary by kind of "
                   "mappings counts every aliased range")
    a.add_argument("--all", action="store_true", help="list every aliased range (can be millions), not only W/X ones")

    d = sub.add_parser("diff", help="what changed between two images (or two views of one): added, removed, "
                       "changed, remapped, moved")
    common(d)
    d.add_argument("image_b", nargs="?", help="the second image (default: the first, with --view-b)")
    d.add_argument("--view", default="kernel", help="view of A; " + VIEW_HELP)
    d.add_argument("--view-b", default=None, help="view of B (default: --view)")
    d.add_argument("--shift", action="append", default=[], metavar="VA_DELTA[:PA_DELTA][@START-END]",
                   help="compare A's VAs (in START-END) at + VA_DELTA in B (and PAs at + PA_DELTA); repeatable")
    d.add_argument("--ignore-pa", action="store_true", help="do not compare physical addresses (two boots)")
    d.add_argument("--kallsyms-b", metavar="FILE", help="kallsyms of the second image (default: --kallsyms); with both, "
                   "the KASLR moves of the direct map, vmalloc and vmemmap are known")
    d.add_argument("--reg-b", action="append", metavar="NAME=VALUE",
                   help="a register of the second image (default: --reg), e.g. cr3 of another raw dump")
    d.add_argument("--no-auto-shift", action="store_true",
                   help="do not apply the KASLR moves the images say (KERNELOFFSET, the layout's markers) when no "
                   "--shift is given")
    d.add_argument("--limit", type=int, default=DIFF_LIMIT, metavar="N",
                   help=f"list at most N changed ranges (default {DIFF_LIMIT}); the verdict counts them all")
    d.add_argument("--all", action="store_true", help="list every changed range (can be millions)")
    d.add_argument("--format", choices=("text", "json"), default="text")

    c = sub.add_parser("check", help="named security checks with severities; exit 1 when a finding reaches --fail-on")
    common(c)
    c.add_argument("--view", action="append", default=None, help="views to check (repeatable; default: all)")
    c.add_argument("--fail-on", choices=("info", "low", "medium", "high"), default="medium",
                   help="lowest severity that makes the exit status 1 (default medium)")
    c.add_argument("--limit", type=int, default=CHECK_LIMIT, metavar="N",
                   help=f"list at most N findings, the most severe first (default {CHECK_LIMIT}); the summary and "
                   "the exit status count them all")
    c.add_argument("--all", action="store_true", help="list every finding")
    c.add_argument("--format", choices=("text", "json"), default="text")

    m = sub.add_parser("map", help="the address space coloured by permissions: a self-contained, zoomable HTML file, "
                       "or a PNG picture (-o FILE.png; needs matplotlib, the png extra)")
    common(m)
    m.add_argument("--view", default="kernel", help=VIEW_HELP)
    m.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the file to write: FILE.png a picture, anything else the HTML map")


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
    """The summary by kind of mappings, then the W/X ranges (every range with --all), at most --limit."""
    out = out or sys.stdout

    from .aliases import aliases

    limit = args.max_members if args.max_members is not None else (None if args.format == "json" else 8)
    res = aliases(target, args.view, max_members=limit)
    wx = res.arrays.wx
    if not getattr(args, "all", False):
        segs = np.flatnonzero(wx)[: max(getattr(args, "limit", ALIAS_LIMIT), 0)]
    elif args.wx:
        segs = np.flatnonzero(wx)
    else:  # every range, in PA order
        segs = np.arange(len(res))
    listed = len(segs)
    classes = res.classes()
    chunks = (res.build(segs[k : k + 4096]) for k in range(0, len(segs), 4096))  # objects a chunk at a time
    if args.format == "json":
        head = {**_head("aliases", target, args.view), "intervals": res.intervals, "aliased_bytes": res.aliased_bytes,
                "count": len(res), "wx_count": res.wx_count, "listed": listed, "classes": classes}
        out.write(json.dumps(head)[:-1] + ', "aliases": [')
        first = True
        for chunk in chunks:
            for g in chunk:
                out.write(("\n" if first else ",\n") + json.dumps(g.as_dict()))
                first = False
        out.write("\n]}\n")
        return 0
    w = out.write
    w(f"{len(res)} aliased ranges ({_size(res.aliased_bytes)}), {res.wx_count} writable at one VA and "
      f"executable at another; {res.intervals} intervals swept\n")
    if classes:
        w(f"{'ranges':>9} {'bytes':>8} {'W/X':>7}  mappings\n")
        for c in classes[:50]:
            w(f"{c['count']:9} {_size(c['bytes']):>8} {c['wx']:7}  {' + '.join(c['mappings'])}  (e.g. PA {c['example']:#x})\n")
        if len(classes) > 50:
            w(f"  ... {len(classes) - 50} more kinds\n")
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
    if not getattr(args, "all", False):
        if res.wx_count > listed:
            w(f"... {res.wx_count - listed} more W/X ranges (--limit N)\n")
        if not args.wx and len(res) > res.wx_count:
            w(f"({len(res) - res.wx_count} ranges that are not W/X are in the summary above; --all lists them)\n")
    return 0


def cmd_diff(args: argparse.Namespace, target_a, target_b=None, out: TextIO | None = None) -> int:
    """Exit status 0 when nothing differs (after the given --shift), 1 otherwise."""
    out = out or sys.stdout
    from .diff import Shift, diff

    shifts = [Shift.parse(s) for s in args.shift]
    res = diff(target_a, target_b, view_a=args.view, view_b=args.view_b, shifts=shifts,
               pa="ignore" if args.ignore_pa else "exact", auto_shift=not getattr(args, "no_auto_shift", False))
    status = 1 if len(res) else 0
    n_list = len(res) if getattr(args, "all", False) else min(len(res), max(getattr(args, "limit", DIFF_LIMIT), 0))
    chunks = (res.build(np.arange(k, min(k + 4096, n_list))) for k in range(0, n_list, 4096))
    if args.format == "json":
        doc = {
            "schema": "pagewalk.diff", "version": SCHEMA_VERSION,
            "a": {"image": args.image, "view": args.view, "mode": target_a.mode_for(args.view).name},
            "b": {"image": args.image_b or args.image, "view": args.view_b or args.view,
                  "mode": (target_b or target_a).mode_for(args.view_b or args.view).name},
            "shifts": [s.__dict__ for s in shifts], "regions": [{"name": n, **sh.__dict__} for n, sh in res.regions],
            "region_verdicts": res.region_verdicts(), "pa": res.pa, "verdict": res.verdict, "counts": res.counts,
            "same_bytes": res.same_bytes, "moves": [{"va_delta": d, "bytes": n} for d, n in res.moves.items()],
            "listed": n_list,
        }
        out.write(json.dumps(doc, indent=1)[:-2] + ',\n "changes": [')
        first = True
        for chunk in chunks:
            for c in chunk:
                out.write(("\n  " if first else ",\n  ") + json.dumps(c.as_dict()))
                first = False
        out.write("\n ]\n}\n")
        return status
    w = out.write
    w(res.verdict + "\n")
    for name, sh in res.regions:
        pa = f" PA {sh.pa_delta % (1 << 64):#x}" if sh.pa_delta else ""
        w(f"shift    {sh.va_start:#018x}-{sh.va_end % (1 << 64):#018x} {name}: VA {sh.va_delta % (1 << 64):#x}{pa}"
          " (detected: --shift VA[:PA]@START-END overrides, --no-auto-shift disables)\n")
    lines = []
    for chunk in chunks:
        lines.clear()
        for c in chunk:
            left = f"{c.va_start:#018x}-{c.va_end % (1 << 64):#018x} {_size(c.size):>6}"
            a = f"{c.perm_a} {c.level_a} pa {c.pa_a:#x}" if c.perm_a is not None else ""
            b = f"{c.perm_b} {c.level_b} pa {c.pa_b:#x}" if c.perm_b is not None else ""
            if c.kind == "moved":
                lines.append(f"moved    {left}  -> {c.va_b:#018x}  {a}  ->  {b}\n")
            elif c.kind == "removed":
                lines.append(f"removed  {left}  {a}\n")
            elif c.kind == "added":
                lines.append(f"added    {left}  {b}\n")
            else:
                at_b = f" (B at {c.va_b:#x})" if c.va_b is not None else ""
                lines.append(f"{c.kind:8} {left}{at_b}  {a}  ->  {b}\n")
        w("".join(lines))
    if n_list < len(res):
        w(f"... {len(res) - n_list} more changed ranges (--limit N, --all)\n")
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
    n_list = len(res.findings) if getattr(args, "all", False) else max(getattr(args, "limit", CHECK_LIMIT), 0)
    listed = res.findings[:n_list]
    if args.format == "json":
        doc = {**_head("check", target), "views": res.views, "fail_on": args.fail_on, "exit_status": status,
               "checks": {k: {"severity": v[0], "description": v[1]} for k, v in CHECKS.items()},
               "notes": res.notes, "counts": res.counts(), "listed": len(listed),
               "findings": [f.as_dict() for f in listed]}
        _json(doc, out)
        return status
    w = out.write
    for f in listed:
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
    if len(listed) < len(res.findings):
        w(f"... {len(res.findings) - len(listed)} more findings (--limit N, --all)\n")
    for n in res.notes:
        w(f"note: {n}\n")
    counts = res.counts()
    summary = ", ".join(f"{k} {v['findings']} ({v['pages']} pages)" for k, v in counts.items()) or "no findings"
    w(f"checked {', '.join(res.views)}: {summary}; exit {status} (--fail-on {args.fail_on})\n")
    return status


def cmd_map(args: argparse.Namespace, target, out: TextIO | None = None) -> int:
    """FILE.png: a picture (matplotlib, the `png` extra); anything else: the HTML map."""
    out = out or sys.stdout
    if args.output.lower().endswith(".png"):
        from .pngmap import write_png

        info = write_png(target, args.output, view=args.view)
        print(f"pagewalk: wrote {args.output}: {info.ranges} ranges, {len(info.rows)} regions, "
              f"{info.width}x{info.height}", file=sys.stderr)
        return 0
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
            ks_b = args.kallsyms_b if args.kallsyms_b else args.kallsyms
            regs_b = args.reg_b if args.reg_b else args.reg
            tb, _ = make_target(argparse.Namespace(**{**vars(args), "image": args.image_b, "kallsyms": ks_b,
                                                      "reg": regs_b}))
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
