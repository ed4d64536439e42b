"""Large answers: aliases, diff and check count everything and list at most --limit entries (every one with --all)."""

from __future__ import annotations

import json
import re

from conftest import FIXTURES

from pagewalk import open_image
from pagewalk.analysis import aliases
from pagewalk.analysis.commands import main as analysis_main
from pagewalk.target import resolve

CASE = FIXTURES / "x86_64" / "6.12-kaslr-5level"
OTHER = FIXTURES / "x86_64" / "6.12-nokaslr-5level"
BASE = [str(CASE / "core.elf"), "-q"]


def test_aliases_summary_counts_every_range_by_kind(capsys):
    """The text starts with the totals and a table by kind of mappings whose counts add up to the total."""
    res = aliases(resolve(open_image(str(CASE / "core.elf"))))
    classes = res.classes()
    assert sum(c["count"] for c in classes) == len(res) > 0
    assert sum(c["bytes"] for c in classes) == res.aliased_bytes
    assert sum(c["wx"] for c in classes) == res.wx_count
    for c in classes:  # the example segment is one of its class, with that many mappings
        [g] = [g for g in res.groups if g.pa_start == c["example"]]
        assert sorted(f"{m.perm} {m.level}" for m in g.members) == c["mappings"]
    assert analysis_main(["aliases", *BASE]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{len(res)} aliased ranges") and "  mappings\n" in out


def test_aliases_all_lists_every_range_and_json_says_how_many(capsys):
    """--all lists every aliased range; JSON's `listed` is the length of `aliases[]`, `count` the total."""
    n = len(aliases(resolve(open_image(str(CASE / "core.elf")))))
    assert analysis_main(["aliases", *BASE, "--all"]) == 0
    assert len(re.findall(r"^PA 0x", capsys.readouterr().out, re.MULTILINE)) == n
    assert analysis_main(["aliases", *BASE, "--all", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["count"] == doc["listed"] == len(doc["aliases"]) == n and doc["classes"]


def test_diff_limit_lists_the_first_changes_and_counts_all(capsys):
    """--limit 3 lists three changes and says how many more; the JSON `counts` are the full ones."""
    ab = [str(OTHER / "core.elf"), str(CASE / "core.elf"), "-q", "--no-auto-shift"]
    assert analysis_main(["diff", *ab, "--limit", "3"]) == 1
    lines = capsys.readouterr().out.splitlines()
    more = int(re.match(r"\.\.\. (\d+) more changed ranges", lines[-1]).group(1))
    assert len(lines) == 1 + 3 + 1
    assert analysis_main(["diff", *ab, "--limit", "3", "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["listed"] == len(doc["changes"]) == 3 and sum(doc["counts"].values()) == 3 + more


def test_check_limit_keeps_the_exit_status_and_the_summary(capsys):
    """check --limit 0 lists no finding, still counts them all and exits as without the limit."""
    assert analysis_main(["check", *BASE, "--format", "json"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert analysis_main(["check", *BASE, "--format", "json", "--limit", "0"]) == full["exit_status"]
    doc = json.loads(capsys.readouterr().out)
    assert doc["findings"] == [] and doc["listed"] == 0 and doc["counts"] == full["counts"]
    assert len(full["findings"]) == full["listed"] == sum(c["findings"] for c in full["counts"].values())
