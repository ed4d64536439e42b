"""The HTML map: one self-contained file; in a real headless browser it loads, zooms to single pages and shows details on hover."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import FIXTURES

from pagewalk import open_image
from pagewalk.analysis.htmlmap import map_data, write_map
from pagewalk.analysis.mappings import Mappings
from pagewalk.arch.x86 import X86_64_4LEVEL
from pagewalk.target import read_kallsyms, resolve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CASE = FIXTURES / "x86_64" / "6.12-kaslr-5level"


def _target():
    return resolve(open_image(str(CASE / "core.elf")), kallsyms=read_kallsyms(str(CASE / "kallsyms.txt")))


def _selftest(path) -> dict:
    """Load `path#selftest` in headless Chromium and read back what the page wrote."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={path.parent / 'profile'}", "--virtual-time-budget=10000", "--window-size=1200,800",
           "--dump-dom", f"file://{path}#selftest"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False).stdout
    m = re.search(r'<pre id="selftest">([^<]*)</pre>', out)
    assert m and m.group(1), "the page wrote no self-test result"
    return json.loads(m.group(1).replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&"))


def _many(n: int) -> Mappings:
    """n 4 KiB ranges with gaps, rights cycling through four kinds (no tables needed)."""
    va = np.uint64(0xFFFFC90000000000) + np.arange(n, dtype=np.uint64) * np.uint64(3 * 4096)
    entry = np.array([0x8000000000000063, 0x8000000000000061, 0x61, 0x63], np.uint64)[np.arange(n) % 4]
    perm = entry & np.uint64((1 << 63) | 6)
    return Mappings(X86_64_4LEVEL, 0x1000, "kernel", va, np.full(n, 4096, np.uint64),
                    np.arange(n, dtype=np.uint64) * np.uint64(8192), np.full(n, 3, np.int8), entry, perm,
                    np.zeros(n, bool), np.zeros(n, np.int8))


def test_map_is_self_contained_with_exact_positions(tmp_path):
    """The file loads nothing from outside, and its positions map back to the exact VAs of the ranges."""
    path = tmp_path / "map.html"
    n = write_map(_target(), str(path))
    text = path.read_text()
    assert n == 65942
    assert not re.search(r"https?://|<script src|<link ", text)
    doc = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', text, re.DOTALL).group(1))
    assert len(doc["pos"]) == n and doc["total"] < 1 << 53
    # the kernel text: its position, read back through the segments, is its VA
    i = next(k for k, p in enumerate(doc["palette"]) if p[0] == "kernel r-x G" and p[1] == "pmd")
    j = max((x for x in range(n) if doc["k"][x] == i), key=lambda x: doc["size"][x])  # the 16 MiB of text
    seg = max(s for s in doc["segs"] if s[0] <= doc["pos"][j])
    assert int(seg[1], 16) + doc["pos"][j] - seg[0] == 0xFFFFFFFF96400000
    assert any(name == "High Kernel Mapping" for _, name in doc["markers"])


def test_map_data_collapses_long_gaps_only():
    """Gaps up to two pages keep their length; longer ones are drawn two pages long."""
    doc = map_data(_many(3))
    assert doc["pos"] == [0, 3 * 4096, 6 * 4096] and doc["segs"] == [[0, "ffffc90000000000"]]
    m = _many(2)
    m.va_start[1] += np.uint64(1 << 30)
    doc = map_data(m)
    assert doc["pos"] == [0, 4096 + 2 * 4096] and doc["segs"][1] == [3 * 4096, "ffffc90040003000"]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_map_in_a_real_browser(tmp_path):
    """Headless Chromium: zoomed to 16 pages of the largest range, the hover shows its VA, PA and rights, in its colour."""
    path = tmp_path / "map.html"
    write_map(_target(), str(path))
    r = _selftest(path)
    assert r["ranges"] == 65942 and r["span_pages"] == 16 and r["span_after_wheel_out"] == 20
    c = r["center"]
    assert (c["va_start"], c["perm"], c["level"], c["pa"]) == ("0xff1c7f2801400000", "kernel rw- G", "pmd", "0x1400000")
    assert (c["page_va"], c["page_pa"]) == ("0xff1c7f2801404000", "0x1404000")
    assert "0xff1c7f2801400000-0xff1c7f281bc00000 (424M)" in r["tooltip"]
    assert "#{:02x}{:02x}{:02x}".format(*r["center_rgb"]) == r["colour"] == "#4caf50"


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_map_stays_responsive_with_100000_ranges(tmp_path):
    """100 000 ranges: ten zoom steps redraw in well under a second in headless Chromium."""
    path = tmp_path / "big.html"
    write_map(None, str(path), m=_many(100_000))
    r = _selftest(path)
    assert r["ranges"] == 100_000
    assert r["zoom10_ms"] < 1000 and r["whole_ms"] < 500
    assert r["center"]["perm"] in ("kernel rw-", "kernel r--", "kernel rwx", "kernel r-x")
