"""Re-run fuzzer artifacts in a plain (uninstrumented) process with a time and memory bound.

    .venv/bin/python fuzz/triage.py fuzz/findings/crash-* fuzz/findings/oom-* fuzz/findings/timeout-*

Prints one line per artifact: `reproduced` (an exception other than PagewalkError, more than
TIME_LIMIT seconds, or more than RSS_LIMIT_MIB of peak RSS) or `not reproduced` with how it ended
and what it cost. Under atheris the fuzzing process's RSS creeps up by a few MB per input, so its
out-of-memory reports need this check before they count as findings. Exit status: the number of
reproduced artifacts (0: none).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

TIME_LIMIT = 60
RSS_LIMIT_MIB = 2048
HERE = os.path.dirname(os.path.abspath(__file__))

_CHILD = """
import resource, sys
sys.path.insert(0, {here!r})
import harness
outcome = harness.run_one(open({path!r}, "rb").read())
print(outcome, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10)
"""


def triage(path: str) -> tuple[bool, str]:
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", _CHILD.format(here=HERE, path=path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=TIME_LIMIT)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return True, f"hang: more than {TIME_LIMIT} s"
    dt = time.perf_counter() - t0
    last = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
    if p.returncode != 0:
        return True, f"exception: {last[0][:200]}"
    outcome, rss = out.decode().split()
    if int(rss) > RSS_LIMIT_MIB:
        return True, f"peak RSS {rss} MiB > {RSS_LIMIT_MIB}"
    return False, f"ends {outcome!r} in {dt:.1f} s, peak RSS {rss} MiB"


def main(paths: list[str]) -> int:
    bad = 0
    for path in paths:
        reproduced, how = triage(path)
        bad += reproduced
        print(f"{'reproduced' if reproduced else 'not reproduced'}\t{os.path.basename(path)}\t{how}")
    return min(bad, 100)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
