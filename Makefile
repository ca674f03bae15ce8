# The two set-up commands of the README. Each installs what it needs first (idempotent).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench clean-cluster

$(BIN)/abcx: pyproject.toml constraints-cpu.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned by constraints-cpu.txt: on a CPU machine pip takes the local CPU wheel instead of GBs of CUDA.
	$(BIN)/pip install -q -c constraints-cpu.txt -e '.[dev]'
	touch $(BIN)/abcx

install: $(BIN)/abcx

# The main job on the embedded default: GRPO vs ABC-GRPO on the tiny testbed (local backend, W&B
# offline), evaluation, and the comparison report.
demo: install
	$(BIN)/abcx sweep run demo --wait
	$(BIN)/abcx report results --sweep demo

# The whole test suite, including a real single-node SLURM cluster (installed with apt, started and
# stopped by the tests) and real tiny-model training.
test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/run_all.py

clean-cluster:
	bash slurm/cluster_down.sh
