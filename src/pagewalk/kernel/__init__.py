"""What pagewalk knows of each kernel: roots, layout, ptdump text and W+X check, per architecture.

An architecture plugs in with one module here exposing `resolve(mem, regs, kallsyms, defines,
options) -> Target`, `dump(target, view, out, fmt) -> int` and `checkwx(target) -> WxResult`,
and one line in SUPPORT.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .._record import Record
from ..errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up: README "How it is fast")
if TYPE_CHECKING:
    from typing import TextIO

    from ..mode import PagingMode

SUPPORT = {
    "x86_64": "x86",
    "arm64": "arm64",
    "riscv64": "riscv",
    "riscv32": "riscv",
    "i386": "i386",
    **dict.fromkeys(("arm", "armhf", "armv7l", "armv7", "arm32"), "arm"),
    "mips64": "mips", "mips64el": "mips", "sparc64": "sparc64", "arc": "arc",
    "s390x": "s390",
    "s390": "s390",
    **dict.fromkeys(("ppc64", "ppc64le", "ppc64el", "powerpc64"), "ppc64"),
}
ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "aarch64": "arm64", "i686": "i386", "x86": "i386"}
JSON_SCHEMA_VERSION = 1


class WxResult(Record):
    """The W+X verdict of one walk, with the kernel's lines and the insecure ranges."""

    _fields = ("wx_pages", "ranges", "lines")

    def __init__(self, wx_pages: int, ranges: list[tuple[int, int]], lines: list[str]) -> None:
        self.wx_pages = wx_pages
        self.ranges = ranges
        self.lines = lines

    @property
    def passed(self) -> bool:
        return self.wx_pages == 0


def json_head(mode: PagingMode, view: str, root_pa: int, **more: object) -> dict:
    """The fields every `dump --format json` document starts with (schema "pagewalk.dump", SCHEMAS.md)."""
    return {"schema": "pagewalk.dump", "version": JSON_SCHEMA_VERSION, "arch": mode.arch, "mode": mode.name,
            "view": view, "root_pa": root_pa, **more}


def write_json_dump(out: TextIO, mode: PagingMode, view: str, root_pa: int, records: list[dict], **more: object) -> int:
    """Write one "pagewalk.dump" document holding `records` to `out`; returns the ranges written."""
    import json

    out.write(json.dumps({**json_head(mode, view, root_pa, **more), "ranges": records}, indent=1))
    out.write("\n")
    return len(records)


def support_for(arch: str | None) -> ModuleType:
    """The kernel-support module of an architecture name (`--arch` or the image's e_machine)."""
    if arch is None:
        raise UsageError("the image does not say its architecture: pass --arch")
    arch = ALIASES.get(arch, arch)
    if arch not in SUPPORT:
        raise UsageError(f"architecture {arch!r} is not supported yet (supported: {', '.join(sorted(SUPPORT))})")
    return importlib.import_module(f"{__name__}.{SUPPORT[arch]}")
