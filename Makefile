# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench venv clean fixtures

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The bundled real sample: Debian's 6.12 kernel, 4-level paging, KASLR and PTI on (see tests/fixtures/x86_64/).
DEMO := tests/fixtures/x86_64/6.12-kaslr-4level-pti
demo: $(STAMP)
	$(BIN)/pagewalk dump $(DEMO)/core.elf --kallsyms $(DEMO)/kallsyms.txt
	$(BIN)/pagewalk checkwx $(DEMO)/core.elf --kallsyms $(DEMO)/kallsyms.txt
	$(BIN)/pagewalk translate $(DEMO)/core.elf 0xffffffff81000000 --kallsyms $(DEMO)/kallsyms.txt

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV)
