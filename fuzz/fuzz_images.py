"""Deep fuzzing of the image readers and the walker with atheris (coverage-guided).

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_images.py -max_total_time=600 fuzz/corpus

Each input is a whole image file: ELF cores (mutations of the committed minimised cores are in
the seed corpus), raw dumps, or junk. A run passes when every input ends in a result or a
PagewalkError (the CLI's one-line message); any other exception is a finding — add the input
to tests/test_fuzz_regressions.py.
"""

from __future__ import annotations

import gc
import io
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import pagewalk.runs
    from pagewalk.api import checkwx, dump
    from pagewalk.errors import PagewalkError
    from pagewalk.memory import open_image
    from pagewalk.target import resolve
    from pagewalk.translate import translate

_TMP = tempfile.mkdtemp(prefix="pagewalk-fuzz-")
# Random tables are often small bombs; a lower cap keeps each input fast (the cap itself is
# tested in tests/test_hostile.py) so the fuzzer spends its time on the parsers and the walker.
pagewalk.runs.MAX_RUNS = 100_000


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    raw = fdp.ConsumeBool()
    l5 = fdp.ConsumeBool()
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    path = os.path.join(_TMP, "img")
    with open(path, "wb") as f:
        f.write(body)
    mem = None
    try:
        mem = open_image(path, "raw" if raw else "auto")
        regs = {"cr3": 0, "cr4": (1 << 12) if l5 else 0x20} if raw else None
        target = resolve(mem, arch="x86_64", regs=regs)
        dump(target, "kernel", io.StringIO())
        checkwx(target)
        translate(target.mem, target.mode, target.root("kernel"), 0xFFFFFFFF81000000)
    except PagewalkError:
        pass
    finally:
        if mem is not None:
            mem.close()  # every input maps a file: unmap it, or the fuzzer's RSS only grows
        gc.collect()


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
