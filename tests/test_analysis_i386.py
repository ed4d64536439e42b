"""The i386 PAE blind spot: the kernel's W+X check passes, `check` reports the W+X pages with proof."""

from __future__ import annotations

import json

from conftest import FIXTURES

from pagewalk.cli import main

CASE = FIXTURES / "i386" / "6.1-pae-nokaslr-rodata-off"


def test_pae_rodata_off_checkwx_passes_like_the_kernel(capsys):
    """checkwx reproduces the kernel's verdict: PDPTEs have no RW bit, so the kernel's fold never sees W."""
    assert main(["checkwx", str(CASE / "core.elf"), "-q"]) == 0
    assert "passed, no W+X pages found" in capsys.readouterr().out


def test_pae_rodata_off_check_reports_wx_kernel_text(capsys):
    """check reports the writable and executable kernel text, with the entries of every level."""
    rc = main(["check", str(CASE / "core.elf"), "-q", "--view", "kernel", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc != 0 and doc["schema"] == "pagewalk.check"
    wx = [f for f in doc["findings"] if f["check"] == "wx"]
    assert wx and wx[0]["severity"] == "high"
    assert min(f["va_start"] for f in wx) == 0xC1000000  # _text of the 686-pae kernel
    assert sum(f["pages"] for f in wx) > 3000
    assert all(len(f["trace"]) >= 2 and f["entry"] for f in wx)
