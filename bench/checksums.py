"""The ground truth's checksum arithmetic (gen_synth.py's mix()), shared by run.py and peers.py.

Restated, not imported: gen_synth.py lives in ../shared and is not a module of this project.
"""

from __future__ import annotations

import numpy as np

M64 = (1 << 64) - 1
K1, K2, K3, K4 = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5


def mix(a, b, c, d):
    """uint64 hash per element, wrapping like gen_synth.py's mix()."""
    a, b, c, d = (np.asarray(x, dtype=np.uint64) for x in (a, b, c, d))
    with np.errstate(over="ignore"):
        return (a * np.uint64(K1)) ^ (b * np.uint64(K2)) ^ (c * np.uint64(K3)) ^ (d * np.uint64(K4))


def usum(x) -> int:
    """Sum modulo 2^64."""
    return int(np.sum(np.asarray(x, dtype=np.uint64), dtype=np.uint64)) & M64
