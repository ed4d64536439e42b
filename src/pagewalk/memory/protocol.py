"""The PhysicalMemory protocol: what the walkers need from any memory (MappedMemory implements it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np


class PhysicalMemory(Protocol):
    """Guest-physical memory: read bytes, typed tables, or many tables at once."""

    def read(self, pa: int, size: int) -> bytes: ...

    def runs(self) -> list[tuple[int, int]]: ...

    def table(self, pa: int, count: int, dtype: np.dtype) -> np.ndarray: ...

    def gather_tables(
        self, pas: np.ndarray, count: int, dtype: np.dtype
    ) -> tuple[np.ndarray, np.ndarray]: ...
