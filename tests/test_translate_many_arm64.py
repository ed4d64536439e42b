"""translate_many agrees with translate on arm64's TTBR1 half (VAs offset from the top of the space)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES

from pagewalk import open_image
from pagewalk.target import resolve
from pagewalk.translate import translate, translate_many

CASES = sorted(p for p in (FIXTURES / "arm64").iterdir() if (p / "core.elf").exists())


@pytest.mark.parametrize("case", CASES, ids=[p.name for p in CASES])
def test_translate_many_equals_translate_on_ttbr1(case):
    """Every sampled kernel VA translates to the same PA (or faults) with both functions."""
    t = resolve(open_image(str(case / "core.elf")))
    mode, root = t.mode_for("kernel"), t.root("kernel")
    rng = np.random.default_rng(1)
    base = mode.canonical_va(0)
    vas = (np.uint64(base) + rng.integers(0, 1 << mode.va_bits, size=300, dtype=np.uint64)) & ~np.uint64(0xFFF)
    vas = np.concatenate([vas, np.array([base + 0x10000], np.uint64)])
    pa, size, ok = translate_many(t.mem, mode, root, vas)
    assert ok.any()
    for va, p, s, good in zip(vas.tolist(), pa.tolist(), size.tolist(), ok.tolist()):
        tr = translate(t.mem, mode, root, va)
        assert tr.ok == good
        if good:
            assert (tr.pa, tr.page_size) == (p, s)
