"""Paging modes, one module per architecture: geometry and entry formats as data plus whole-array
hooks (see mode.py). What a *kernel* makes of them (roots, markers, ptdump text) is in
pagewalk.kernel."""
