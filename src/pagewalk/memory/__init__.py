"""Where page tables are read from: one PhysicalMemory interface, one module per image format.

Every format reads its file with pread() (MappedMemory; kdump decompresses pages) and serves
tables as numpy arrays; a format only has to say which file bytes hold which physical addresses
(`segments`).
"""

from __future__ import annotations

import os

from ..errors import FormatError, PagewalkError
from .base import CpuState, MappedMemory

__all__ = ["CpuState", "MappedMemory", "PhysicalMemory", "open_image"]


def __getattr__(name: str):
    if name == "PhysicalMemory":  # typing's Protocol: loaded on first use (PEP 562)
        from .protocol import PhysicalMemory

        return PhysicalMemory
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_KDUMP_MAGICS = (b"KDUMP   ", b"makedumpfile")


def open_image(path: str, image_format: str = "auto", base: int | None = None) -> MappedMemory:
    """Open a memory image: an ELF core (QEMU, kdump vmcore), a kdump-compressed file (makedumpfile's
    KDUMP format, plain or flattened) or a raw physical dump (`base` = its first PA).

    >>> mem = open_image("tests/fixtures/x86_64/demo/core.elf")  # doctest: +SKIP
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise PagewalkError(f"{path}: no such file") from None
    except OSError as e:
        raise PagewalkError(f"{path}: {e.strerror}") from None
    if os.path.isdir(path):
        raise PagewalkError(f"{path}: is a directory, not a memory image")
    if st.st_size == 0:
        raise FormatError(f"{path}: empty file")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise PagewalkError(f"{path}: {e.strerror}") from None
    fmt = image_format
    if fmt == "auto":
        if head[:4] == b"\x7fELF":
            fmt = "elf"
        elif any(head.startswith(m) for m in _KDUMP_MAGICS):
            fmt = "kdump"
        elif base is not None or st.st_size % 4096 == 0:
            fmt = "raw"
        else:
            raise FormatError(
                f"{path}: not a known image format (ELF core, kdump); "
                "for a raw physical dump pass --image-format raw"
            )
    if fmt == "elf":
        from .elfcore import ElfCoreMemory

        return ElfCoreMemory(path)
    if fmt == "raw":
        from .raw import RawMemory

        return RawMemory(path, base or 0)
    if fmt == "kdump":
        from .kdump import KdumpMemory

        return KdumpMemory(path)
    raise FormatError(f"unknown image format {image_format!r} (auto, elf, kdump, raw)")
