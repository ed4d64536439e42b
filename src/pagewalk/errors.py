"""The exceptions pagewalk raises; every one of them carries what a user needs to act on it."""

from __future__ import annotations


class PagewalkError(Exception):
    """Base class: a problem with the input, reported as one line, never a traceback."""

    exit_code = 1


class FormatError(PagewalkError):
    """The image is not in a format pagewalk knows, or its headers are inconsistent."""

    exit_code = 3


class MemoryReadError(PagewalkError):
    """A physical address the image does not hold was read."""

    exit_code = 4

    def __init__(self, pa: int, size: int = 1, what: str = "") -> None:
        self.pa = pa
        self.size = size
        where = f" ({what})" if what else ""
        super().__init__(f"physical address {pa:#x}{where} is not in the image")


class RootError(PagewalkError):
    """No page-table root could be found, or the one given is unusable."""

    exit_code = 5


class UsageError(PagewalkError):
    """Command-line arguments that do not fit together."""

    exit_code = 2


class TranslationFault(PagewalkError):
    """The hardware would fault translating `va`: at `level`, on `entry` (None: the table was unreadable)."""

    exit_code = 6

    def __init__(self, va: int, level: str, entry: int | None, reason: str) -> None:
        self.va = va
        self.level = level
        self.entry = entry
        self.reason = reason
        e = "" if entry is None else f" entry {entry:#018x}"
        super().__init__(f"fault translating {va:#x} at {level}{e}: {reason}")


class ProcessError(PagewalkError):
    """A live process could not be read through /proc."""

    exit_code = 7


class NoSuchProcess(ProcessError):
    """No process has this pid (or it exited while being read)."""

    exit_code = 7


class ProcessAccessDenied(ProcessError):
    """/proc/PID/maps or /proc/PID/pagemap may not be read by us (ptrace access mode READ)."""

    exit_code = 8


def run_limit_error(limit: int) -> PagewalkError:
    """The error of a streamed walk stopped after `limit` runs (runs.iter_runs() and the compiled
    x86-64 ptdump say the same)."""
    return PagewalkError(
        f"the page tables expand to more than {limit} runs (many entries share tables "
        "with varied contents: a page-table bomb?); the output stops there "
        "(--max-runs N raises the limit; README \"Limits\")"
    )
