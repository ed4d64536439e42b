"""The analyses at scale: time and peak RSS of each analysis command on synthetic images.

    .venv/bin/python bench/analyses.py                  # 2^20 and 2^24 4K leaves (the 2^24 images: minutes to make)
    .venv/bin/python bench/analyses.py --sizes 16,20    # quick
    .venv/bin/python bench/analyses.py --out /tmp/pw    # where the images go (default /tmp/pagewalk-bench)

For each size it makes two Linux-profile images with ../shared/bench/gen_synth.py (seed 1 and
seed 2: the same shape, other allocations; generated once, kept in --out), then runs each command
as a whole process (`pagewalk stats|aliases|check|map -o x.html|map -o x.png IMAGE`, `pagewalk diff A B`)
under GNU time and prints one markdown table: command, wall seconds, peak RSS, and what the
command found (intervals, aliases, findings, ranges drawn), so that a fast wrong answer shows.
Nothing is checked against a ground truth here (bench/run.py does that for the walk): the
analyses' correctness is the test suite's job.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CR4_PAE = 0x20


def shared_dir() -> Path:
    for c in (os.environ.get("PAGEWALK_SHARED"), REPO.parent / "shared" / "bench", Path("/work/shared/bench")):
        if c and (Path(c) / "gen_synth.py").is_file():
            return Path(c)
    sys.exit("bench: gen_synth.py not found (set PAGEWALK_SHARED)")


def image(out: Path, log2: int, seed: int) -> tuple[Path, int]:
    path = out / f"linux-4l-2p{log2}-seed{seed}.raw"
    meta = Path(str(path) + ".json")
    if not (meta.is_file() and path.is_file()):
        print(f"bench: generating {path.name} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, str(shared_dir() / "gen_synth.py"), "--pages", str(1 << log2), "--levels",
                        "4", "--profile", "linux", "--seed", str(seed), "--probe-max", "1024", "--out", str(path)],
                       check=True, stdout=subprocess.DEVNULL)
    return path, int(json.loads(meta.read_text())["cr3"])


def pagewalk() -> list[str]:
    exe = Path(sys.executable).parent / "pagewalk"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pagewalk"]


def run(cmd: list[str], log: Path) -> tuple[float, int, int, str, str]:
    """Wall seconds, peak RSS (MiB, GNU time), exit code, stdout tail, stderr tail."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "RSS %M", *cmd], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    log.write_text(p.stdout[-20000:] + "\n--- stderr ---\n" + p.stderr[-20000:])
    m = re.search(r"RSS (\d+)", p.stderr)
    return wall, int(m.group(1)) // 1024 if m else -1, p.returncode, p.stdout, p.stderr


def found(name: str, out: str, err: str) -> str:
    """What the command reported, in a few words (from its own text output)."""
    if name == "stats":
        m = re.search(r"mapped in all: (\S+) in (\d+) intervals", out)
        return f"{m.group(2)} intervals, {m.group(1)} mapped" if m else "?"
    if name == "aliases":
        m = re.match(r"(\d+) aliased ranges \(([^)]*)\), (\d+) writable", out)
        return f"{m.group(1)} aliased ranges ({m.group(2)}), {m.group(3)} W/X" if m else "?"
    if name == "check":
        m = re.search(r"^checked .*$", out, re.MULTILINE)
        return m.group(0)[:110] if m else "?"
    if name.startswith("map"):
        m = re.search(r"wrote \S+: (.*)", err)
        return m.group(1) if m else "?"
    if name == "diff":
        return out.splitlines()[0][:110] if out else "?"
    return ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="20,24", help="log2 of the 4K leaves (default 20,24)")
    ap.add_argument("--out", default="/tmp/pagewalk-bench", help="images and logs (default /tmp/pagewalk-bench)")
    ap.add_argument("--commands", default="stats,aliases,diff,check,map-html,map-png")
    args = ap.parse_args(argv)
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    rows = []
    for log2 in [int(x) for x in args.sizes.split(",")]:
        a, cr3a = image(out, log2, 1)
        b, cr3b = image(out, log2, 2)
        common = ["--image-format", "raw", "--arch", "x86_64", "--reg", f"cr4={CR4_PAE:#x}", "--pti", "off", "-q"]
        ra = ["--reg", f"cr3={cr3a:#x}"]
        cmds = {
            "stats": ["stats", str(a), *common, *ra],
            "aliases": ["aliases", str(a), *common, *ra],
            "diff": ["diff", str(a), str(b), *common, *ra, "--reg-b", f"cr3={cr3b:#x}", "--reg-b", f"cr4={CR4_PAE:#x}"],
            "check": ["check", str(a), *common, *ra],
            "map-html": ["map", str(a), *common, *ra, "-o", str(out / f"map-2p{log2}.html")],
            "map-png": ["map", str(a), *common, *ra, "-o", str(out / f"map-2p{log2}.png")],
        }
        for name in args.commands.split(","):
            wall, rss, rc, so, se = run(pagewalk() + cmds[name], out / "logs" / f"2p{log2}-{name}.txt")
            note = found(name, so, se) if rc in (0, 1) else f"exit {rc}: {se.strip().splitlines()[-1][:100]}"
            rows.append((f"2^{log2}", name, wall, rss, note))
            print(f"bench: 2^{log2} {name}: {wall:.2f} s, {rss} MiB", file=sys.stderr, flush=True)
    lines = ["| image | command | time s | peak RSS MiB | found |", "|---|---|---|---|---|"]
    lines += [f"| {i} | {c} | {t:.2f} | {r} | {n} |" for i, c, t, r, n in rows]
    text = "\n".join(lines)
    print(text)
    (out / "analyses.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
