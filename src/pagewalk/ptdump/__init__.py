"""Generic ptdump (mm/ptdump.c): runs of the walk turned into note_page() events; one state
machine per architecture's output format.

The re-exports load on first use (PEP 562): `pagewalk.ptdump.x86_layout` and the compiled x86
path must not pay for numpy (README "How it is fast").
"""

from __future__ import annotations

__all__ = ["NoteState", "drive", "run_extents"]


def __getattr__(name: str):
    if name in __all__:
        from . import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
