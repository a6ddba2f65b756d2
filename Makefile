PY := .venv/bin/python

.PHONY: setup demo test lint bench
setup:
	bash scripts/setup.sh

demo: setup
	$(PY) examples/train_baby.py

test: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check mllmrec_pyg tests examples benchmarks

bench: setup
	$(PY) benchmarks/graph_build.py
