"""pagewalk: walk CPU page tables in memory images and dump them the way the Linux kernel does."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import FormatError, MemoryReadError, PagewalkError, RootError, TranslationFault, UsageError
from .memory import open_image
from .mode import HwKind, Kind, Level, PagingMode

__all__ = [
    "FormatError",
    "HwKind",
    "Kind",
    "Level",
    "MemoryReadError",
    "PagewalkError",
    "PagingMode",
    "RootError",
    "TranslationFault",
    "UsageError",
    "open_image",
]
