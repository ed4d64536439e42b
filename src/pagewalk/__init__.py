"""pagewalk: walk CPU page tables in memory images and dump them the way the Linux kernel does."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    FormatError,
    MemoryReadError,
    PagewalkError,
    RootError,
    TranslationFault,
    UsageError,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up: README "How it is fast")
if TYPE_CHECKING:
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

# imported on first use (PEP 562): `import pagewalk.cli` stays cheap (README "How it is fast")
_LAZY = {"open_image": ".memory", "HwKind": ".mode", "Kind": ".mode", "Level": ".mode", "PagingMode": ".mode"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
