"""Write the seed corpus (one file per seed input of fuzz/harness.py) and a libFuzzer dictionary.

    .venv/bin/python fuzz/seeds.py fuzz/corpus/v2 [fuzz/pagewalk.dict]
"""

from __future__ import annotations

import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness


def main(corpus: str, dict_path: str | None = None) -> None:
    os.makedirs(corpus, exist_ok=True)
    n = 0
    for name, data in harness.seed_inputs():
        path = os.path.join(corpus, f"seed-{name}")
        with open(path, "wb") as f:
            f.write(data)
        n += 1
    # the regression inputs are seeds too: the fuzzer starts from what once broke
    reg = harness.FIXTURES / "fuzz-regressions"
    for p in sorted(reg.glob("*.fuzz")):
        data = p.read_bytes()
        with open(os.path.join(corpus, "regression-" + hashlib.sha1(data).hexdigest()[:12]), "wb") as f:
            f.write(data)
        n += 1
    if dict_path:
        words = set(harness.arches()) | set(harness.modes()) | {"VMCOREINFO", "QEMU", "PAGEWALK", "LINUX"}
        for a in harness.arches():
            words.update(f"reg.{r}" for r in harness.reg_templates(a)[0])
        words.update(("arch", "mode", "base", "root", "structure", "chunk", "format", "big", "pti", "SYMBOL(",
                      "NUMBER(", "OSRELEASE", "PAGESIZE", "KERNELOFFSET", "$", "#", "qXfer", "PacketSize"))
        with open(dict_path, "w") as f:
            f.writelines('"' + w.replace("\\", "\\\\").replace('"', '\\"') + '"\n' for w in sorted(words))
    print(f"{n} seeds in {corpus}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
