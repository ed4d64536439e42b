"""Generic ptdump (mm/ptdump.c): runs of the walk turned into note_page() events; one state
machine per architecture's output format."""

from .core import NoteState, drive, run_extents

__all__ = ["NoteState", "drive", "run_extents"]
