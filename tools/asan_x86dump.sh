#!/usr/bin/env bash
# The compiled x86-64 ptdump (src/pagewalk/_x86dump.c) under AddressSanitizer and UBSan: builds an
# instrumented copy of the extension in place of the normal one, runs the suites that drive it
# (captures, random and hostile tables, fuzz regressions), then rebuilds the normal one.
#   bash tools/asan_x86dump.sh            # after `make venv`
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SO=$($PY -c "import pagewalk._x86dump as m; print(m.__file__)")
INC=$($PY -c "import sysconfig; print(sysconfig.get_paths()['include'])")
LIBASAN=$(gcc -print-file-name=libasan.so)
LIBUBSAN=$(gcc -print-file-name=libubsan.so)
trap '.venv/bin/pip install -q -e . >/dev/null' EXIT  # the normal build back, whatever happens
gcc -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -shared -fPIC -I"$INC" \
    src/pagewalk/_x86dump.c -o "$SO"
LD_PRELOAD="$LIBASAN $LIBUBSAN" ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_x86_compiled.py tests/test_ptdump_properties.py \
    tests/test_golden_x86_64.py tests/test_hostile.py tests/test_fuzz_properties.py tests/test_fuzz_regressions.py
