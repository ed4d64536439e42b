"""Deep fuzzing of every image reader and every architecture's walker with atheris (coverage-guided).

    fuzz/run.sh                      # FUZZ_SECONDS=600 by default; what `make fuzz` runs
    .venv/bin/python fuzz/fuzz_images.py -max_total_time=60 DIR   # one plain run on a corpus DIR

The input format, the kinds (image files of every format, raw dumps under any architecture's
registers, random tables under every paging mode, gdbstub transcripts, note blobs) and what
counts as a pass are in fuzz/harness.py. A run passes when every input ends in a result, a
PagewalkError (the CLI's one-line message) or more output than the harness's limit; any other
exception, a timeout or the RSS limit is a finding: libFuzzer writes it to fuzz/findings/, and it
goes to tests/fixtures/fuzz-regressions/ (as NAME.fuzz) once fixed.
"""

from __future__ import annotations

import gc
import importlib
import os
import pkgutil
import sys
import tempfile

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["pagewalk", "elftools"]):
    import pagewalk

    for _m in pkgutil.walk_packages(pagewalk.__path__, "pagewalk."):
        try:  # everything the walk may import lazily is instrumented now
            importlib.import_module(_m.name)
        except Exception:  # noqa: BLE001 - an optional module (live QMP) without its dependency
            pass
    import harness

_TMP = tempfile.mkdtemp(prefix="pagewalk-fuzz-")
harness.modes()  # build the registries once, before the clock starts
harness.core_infos()


def test_one_input(data: bytes) -> None:
    try:
        harness.run_one(data, _TMP)
    finally:
        for f in os.listdir(_TMP):
            os.unlink(os.path.join(_TMP, f))
        gc.collect()


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
