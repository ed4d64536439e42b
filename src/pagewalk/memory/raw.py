"""Raw physical dumps (QEMU pmemsave, /dev/mem copies): the file is memory from `base` on."""

from __future__ import annotations

import os

from .base import MappedMemory


class RawMemory(MappedMemory):
    """A raw dump: byte `i` of the file is physical address `base + i`."""

    def __init__(self, path: str, base: int = 0) -> None:
        size = os.path.getsize(path)
        super().__init__(path, [(base, size, 0)])
        self.base = base
