# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench fuzz venv clean fixtures

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The bundled real sample: Debian 6.12, 4-level paging, KASLR and PTI on (tests/fixtures/x86_64/); 0xffffffff8fe01234 is in its KASLR-moved kernel text.
DEMO := tests/fixtures/x86_64/6.12-kaslr-4level-pti
demo: $(STAMP)
	$(BIN)/pagewalk dump $(DEMO)/core.elf --kallsyms $(DEMO)/kallsyms.txt
	$(BIN)/pagewalk checkwx $(DEMO)/core.elf --kallsyms $(DEMO)/kallsyms.txt
	$(BIN)/pagewalk translate $(DEMO)/core.elf 0xffffffff8fe01234 --kallsyms $(DEMO)/kallsyms.txt

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

# Coverage-guided fuzzing of the image readers and the walker (atheris); FUZZ_SECONDS per run.
# Under atheris the process RSS creeps up by ~2 MB per input although pagewalk frees its memory
# (the same inputs in a plain loop stay flat), so the fuzzer restarts every minute on its corpus.
FUZZ_SECONDS ?= 600
fuzz: $(STAMP)
	$(BIN)/pip install -q atheris
	mkdir -p fuzz/corpus
	for c in tests/fixtures/*/*/core.elf tests/fixtures/kdump/*.kdump; do n=$$(echo $$c | tr / _); \
	  (printf '\000\000'; cat $$c) > fuzz/corpus/seed-$$n; done
	set -e; n=$$(( ($(FUZZ_SECONDS) + 59) / 60 )); for i in $$(seq $$n); do \
	  $(BIN)/python fuzz/fuzz_images.py -max_total_time=60 -rss_limit_mb=3072 fuzz/corpus; done

clean:
	rm -rf $(VENV)
