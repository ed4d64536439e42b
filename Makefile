# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-hostile fuzz venv clean fixtures

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

# Coverage-guided fuzzing (atheris) of every image reader (ELF64/ELF32 either byte order, kdump plain and
# flattened, raw, gdbstub transcripts, notes) and every architecture's walker; fuzz/run.sh explains the rounds
# and the re-check of every finding in a plain process.
FUZZ_SECONDS ?= 600
fuzz: $(STAMP)
	$(BIN)/pip install -q atheris
	FUZZ_SECONDS=$(FUZZ_SECONDS) PY=$(BIN)/python sh fuzz/run.sh

# Hostile inputs (bombs, loops, cut cores, wrong roots) as whole pagewalk processes against time and RSS bounds.
bench-hostile: $(STAMP)
	$(BIN)/python bench/hostile.py

clean:
	rm -rf $(VENV)
