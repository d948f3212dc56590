# fitscope: set-up, demo, tests and benchmarks. Needs only Python 3.11 and pip.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,ray,federated]'
	@touch $(STAMP)

## make demo: quick randomization study on built-in digits; prints the report path
demo: $(STAMP)
	rm -rf runs/demo-randomization
	$(BIN)/fitscope randomization --data digits --quick --out runs/demo-randomization

## make test: the whole test suite (what CI runs)
test: $(STAMP)
	$(BIN)/python -m pytest -q

## make bench: performance targets (not tests); results in bench/results/
bench: $(STAMP)
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/randomization.py

clean:
	rm -rf $(VENV) runs build *.egg-info
