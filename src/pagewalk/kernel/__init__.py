"""What pagewalk knows of each kernel: roots, layout, ptdump text and W+X check, per architecture.

An architecture plugs in with one module here exposing `resolve(mem, regs, kallsyms, defines,
options) -> Target`, `dump(target, view, out, fmt) -> int` and `checkwx(target) -> WxResult`,
and one line in SUPPORT.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TextIO

from ..errors import UsageError

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


@dataclass
class WxResult:
    """The W+X verdict of one walk, with the kernel's lines and the insecure ranges."""

    wx_pages: int
    ranges: list[tuple[int, int]]
    lines: list[str]

    @property
    def passed(self) -> bool:
        return self.wx_pages == 0


def json_head(mode: Any, view: str, root_pa: int, **more: Any) -> dict:
    """The fields every `dump --format json` document starts with (schema "pagewalk.dump", SCHEMAS.md)."""
    return {"schema": "pagewalk.dump", "version": JSON_SCHEMA_VERSION, "arch": mode.arch, "mode": mode.name,
            "view": view, "root_pa": root_pa, **more}


def write_json_dump(out: TextIO, mode: Any, view: str, root_pa: int, records: list[dict], **more: Any) -> int:
    """Write one "pagewalk.dump" document holding `records` to `out`; returns the ranges written."""
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
