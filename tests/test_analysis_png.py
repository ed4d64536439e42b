"""`pagewalk map -o map.png`: a matplotlib picture of a real core, coloured like the HTML map, one row per marker region."""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import FIXTURES

from pagewalk import open_image
from pagewalk.analysis.commands import main as analysis_main
from pagewalk.analysis.htmlmap import COLOURS, MAX_RANGES, axis, map_data
from pagewalk.analysis.mappings import MAPPED, Mappings, mappings, perm_strings
from pagewalk.arch.x86 import X86_64_4LEVEL
from pagewalk.errors import UsageError
from pagewalk.target import read_kallsyms, resolve

CASE = FIXTURES / "x86_64" / "6.12-kaslr-5level"


def _target():
    return resolve(open_image(str(CASE / "core.elf")), kallsyms=read_kallsyms(str(CASE / "kallsyms.txt")))


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[k : k + 2], 16) for k in (1, 3, 5)])


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_png_of_a_real_core_is_coloured_by_the_ranges(tmp_path):
    """The PNG has the reported size; the kernel text is drawn orange, the direct map's largest range green, and the
    green share of the direct-map row is the rw- share of its bytes."""
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    from pagewalk.analysis.pngmap import (
        DPI,
        HEAD_IN,
        LEGEND_IN,
        ROW_IN,
        WIDTH_IN,
        write_png,
    )

    t = _target()
    path = tmp_path / "map.png"
    info = write_png(t, str(path))
    assert _png_size(path) == (info.width, info.height) == (
        round(WIDTH_IN * DPI), round((HEAD_IN + ROW_IN * len(info.rows) + LEGEND_IN) * DPI))
    names = [r.name for r in info.rows]
    assert names[0] == "Low Kernel Mapping" and "vmalloc() Area" in names and "High Kernel Mapping" in names
    px = (imread(str(path))[..., :3] * 255).round().astype(int)
    m = mappings(t, "kernel")
    ax = axis(m)
    text = perm_strings(m.perms)
    mapped = m.status == MAPPED

    def pixel(row_name: str, va: int) -> np.ndarray:
        row = next(r for r in info.rows if r.name == row_name)
        x = float(row.x_of(ax.pos_of_va(np.array([va], np.uint64)))[0])
        return px[int((row.y0 + row.y1) / 2), int(x)]

    # the kernel text (kallsyms _stext) is r-x: orange; the direct map's largest range is rw-: green
    ks = read_kallsyms(str(CASE / "kallsyms.txt"))
    assert (pixel("High Kernel Mapping", ks["_stext"] + 0x100000) == _rgb(COLOURS["kernel r-x"])).all()
    row = info.rows[0]
    inside = np.flatnonzero(mapped & (m.va_start >= np.uint64(row.va_start)) & (m.va_start < np.uint64(row.va_end)))
    big = inside[np.argmax(m.size[inside])]
    assert text[big] == "kernel rw- G"
    assert (pixel(row.name, int(m.va_start[big]) + int(m.size[big]) // 2) == _rgb(COLOURS["kernel rw-"])).all()
    # proportion: green pixels across the bar's middle line against the rw- bytes of the region
    line = px[int((row.y0 + row.y1) / 2), int(np.ceil(row.x0)) : int(row.x1)]
    green = (line == _rgb(COLOURS["kernel rw-"])).all(axis=1).mean()
    rw = np.array([text[i].startswith("kernel rw-") for i in inside])
    share = m.size[inside][rw].sum(dtype=np.uint64) / (row.pos_end - row.pos_start)
    assert 0.5 < share < 1 and abs(green - share) < 0.02
    # the legend names the rights it shows, with bytes
    assert {lab for lab, _, _ in info.legend} >= {"kernel rw-", "kernel r-x", "kernel r--"}


def test_map_command_writes_png_by_extension(tmp_path, capsys):
    """`map IMAGE -o x.png` writes a PNG (and `-o x.html` still the HTML page)."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "x.png"
    base = [str(CASE / "core.elf"), "--kallsyms", str(CASE / "kallsyms.txt"), "-q"]
    assert analysis_main(["map", *base, "-o", str(out)]) == 0
    w, h = _png_size(out)
    assert w == 1400 and h > 200
    assert "regions" in capsys.readouterr().err


def test_png_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    """Without matplotlib the PNG map is a usage error that names the `png` extra, not a traceback."""
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from pagewalk.analysis.pngmap import write_png

    with pytest.raises(UsageError, match=r"pagewalk\[png\]"):
        write_png(_target(), str(tmp_path / "x.png"))


def test_dump_does_not_import_matplotlib():
    """`dump` (and the CLI's import) never load matplotlib: only the PNG map does."""
    code = ("import sys; from pagewalk.cli import main; "
            f"rc = main(['dump', {str(CASE / 'core.elf')!r}, '-q', '-o', '/dev/null']); "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr


def _ranges(n: int, gap_pages: int = 3) -> Mappings:
    """n 4 KiB ranges with gaps, rights cycling through four kinds (no tables needed)."""
    va = np.uint64(0xFFFFC90000000000) + np.arange(n, dtype=np.uint64) * np.uint64(gap_pages * 4096)
    entry = np.array([0x8000000000000063, 0x8000000000000061, 0x61, 0x63], np.uint64)[np.arange(n) % 4]
    perm = entry & np.uint64((1 << 63) | 6)
    return Mappings(X86_64_4LEVEL, 0x1000, "kernel", va, np.full(n, 4096, np.uint64),
                    np.arange(n, dtype=np.uint64) * np.uint64(8192), np.full(n, 3, np.int8), entry, perm,
                    np.zeros(n, bool), np.zeros(n, np.int8))


def test_axis_aggregates_beyond_the_limit_and_keeps_positions_exact():
    """300 000 ranges are drawn as at most MAX_RANGES, covering the same axis; VAs still map to exact positions."""
    m = _ranges(300_000)
    exact = axis(m, max_ranges=10**9)
    agg = axis(m)
    assert len(exact.pos) == 300_000 and len(agg.pos) <= MAX_RANGES
    assert agg.total == exact.total and agg.n.sum() == 300_000
    assert int(agg.pos[0]) == 0 and int(agg.pos[-1] + agg.size[-1]) == agg.total
    probe = m.va_start[[0, 12345, 299_999]]
    assert (agg.pos_of_va(probe) == exact.pos[[0, 12345, 299_999]]).all()
    doc = map_data(m)
    assert doc["ranges"] == 300_000 and len(doc["pos"]) == len(doc["agg"]) <= MAX_RANGES


def test_axis_merges_adjacent_ranges_of_one_colour_first():
    """Adjacent ranges with the same rights (PA not contiguous) become one drawn range before any bucketing."""
    m = _ranges(200_000, gap_pages=1)  # back to back
    m.entry[:] = np.uint64(0x8000000000000063)
    m.perm[:] = m.entry & np.uint64((1 << 63) | 6)
    agg = axis(m)
    assert len(agg.pos) == 1 and int(agg.size[0]) == 200_000 * 4096 and int(agg.n[0]) == 200_000
