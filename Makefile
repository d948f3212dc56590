# fitscope: set-up, demo, tests and benchmarks. Needs only Python 3.11 and pip.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench bench-device bench-nt-venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,ray,federated]'
	@touch $(STAMP)

## make demo: quick data audit of built-in digits with 10% flipped labels; prints the report path
demo: $(STAMP)
	rm -rf runs/demo-audit
	$(BIN)/fitscope audit --data digits --noise 0.1 --quick --out runs/demo-audit

## make test: the whole test suite (what CI runs), in TEST_WORKERS processes (pytest-xdist; a file's tests stay
## in one process, so its fixtures are made once, and the files that start Ray share one process: tests/conftest.py);
## each worker trains on one torch thread
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

## make bench: performance targets (not tests); results in bench/results/
bench: $(STAMP)
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/randomization.py

## make bench-device: throughput on a CUDA GPU vs the same code on CPU and the vmap recipe (needs a GPU);
## results in bench/results/device.json. Without a GPU: $(BIN)/python bench/device.py --device cpu --quick
bench-device: $(STAMP)
	$(BIN)/python bench/device.py --device cuda

## make bench-nt-venv: separate venv with neural-tangents for bench/kernels.py (not a fitscope dependency)
NT_VENV := .venv-nt
bench-nt-venv: $(NT_VENV)/.installed

$(NT_VENV)/.installed:
	@test -x $(NT_VENV)/bin/python || $(PY) -m venv $(NT_VENV)
	$(NT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "jax==0.4.30" "jaxlib==0.4.30" \
		"tensorflow-cpu==2.16.*" "tf2jax==0.3.6" "numpy==1.26.*" "neural-tangents==0.6.5"
	@touch $@

clean:
	rm -rf $(VENV) runs build *.egg-info
