# The two set-up commands of the README. Each installs what it needs first (idempotent).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench study atlas testbed-validity clean-cluster gpu-check gpu-wheels mutate

# pip -q says nothing for a minute or more: a line every 5 s says it is still at work.
$(BIN)/abcx: pyproject.toml constraints-cpu.txt
	@echo "installing abcx and its dependencies into $(VENV) (first time: 1-2 min)"
	$(PY) -m venv $(VENV)
	# torch is pinned by constraints-cpu.txt: on a CPU machine pip takes the local CPU wheel instead of GBs of CUDA.
	@$(BIN)/pip install -q -c constraints-cpu.txt -e '.[dev]' & pid=$$!; s=0; \
	while kill -0 $$pid 2>/dev/null; do sleep 1; s=$$((s + 1)); \
		if [ $$((s % 5)) -eq 0 ] && kill -0 $$pid 2>/dev/null; then echo "[install] pip install: $$s s so far"; fi; \
	done; wait $$pid
	touch $(BIN)/abcx

install: $(BIN)/abcx

# The main job on the embedded default: the warm start's held-out accuracy (what RL starts from), then
# GRPO vs ABC-GRPO on the tiny testbed (local backend, W&B offline), evaluated along the way with the
# same settings (conf/eval/demo.yaml), and the comparison report with its figures (results/plots/demo/).
demo: install
	$(BIN)/abcx eval tiny eval=demo
	$(BIN)/abcx sweep run demo --wait
	$(BIN)/abcx report results --sweep demo --plots results/plots/demo

# The whole test suite, including a real single-node SLURM cluster (installed with apt, started and
# stopped by the tests) and real tiny-model training.
test: install
	$(BIN)/python -m pytest -q

# The testbed as an instrument: its validity targets, measured and written to results/testbed/validity.md.
testbed-validity: install
	$(BIN)/python bench/testbed_validity.py

# The testbed study of results/testbed/ (see its README): the clipping rules x 3 seeds, the eps3 x eps4
# grid, the regime study (GRPO vs ABC-GRPO in cells that move one axis), the warm start evaluated as
# the base model, then the reports and the study's own tables and plots.
study: install
	$(BIN)/abcx sweep run study --wait
	$(BIN)/abcx sweep run epsilons --wait
	$(BIN)/abcx sweep run regime --wait
	$(BIN)/python bench/testbed_study.py --out results/testbed
	$(BIN)/abcx report results --sweep study --format markdown --out results/testbed/study_report.md --plots results/testbed/plots
	$(BIN)/abcx report results --sweep epsilons --format markdown --out results/testbed/epsilons.md \
		--plots results/testbed/epsilons_plots --pivot method.eps3,method.eps4,entropy_last \
		--pivot method.eps3,method.eps4,eval/chain/pass@64 --pivot method.eps3,method.eps4,q4_share

# The atlas (results/atlas/): every registered rule on the testbed under the same settings, seed 0, seeds
# 1 and 2 where a difference from GRPO needs confirming; its tables and the figure (bench/atlas.py).
# The rules `make study` trains reuse its runs: run it after `make study` to spend less.
atlas: install
	$(BIN)/python bench/atlas.py --out results/atlas

bench: install
	$(BIN)/python bench/run_all.py

# What the CPU tests cannot check, on one CUDA GPU in under 8 minutes (bench/gpu_check.py; not part of
# `make test`): bf16 training, chunked vs fused LM head, vLLM colocate weight sync, the LM-head roofline,
# `abcx eval` through vLLM. Writes GPU_OUT (results/gpu)/README.md. Where its packages come from:
#   make gpu-check                                   online: makes .venv-gpu (CUDA torch and vLLM from the index)
#   make gpu-check GPU_PY=python3                    an environment that already has abcx's dependencies
#   make gpu-check GPU_PY=python3 GPU_WHEELS=dir     offline, as on the GPU machines we borrow: their image's
#       torch, transformers and accelerate, plus the bundle of `make gpu-wheels` installed with pip --no-index
#       --no-deps --target .gpu-site/lib, and abcx from this checkout; the checks that need vLLM (which
#       cannot travel) report "not run: vLLM not installed".
# `make gpu-wheels [GPU_WHEELS=dir] [GPU_PYVER=3.12]`, where the package index is reachable: that bundle
# (bench/gpu_bundle.py: TRL, datasets, Hydra, submitit and what they need that the image lacks, as cp312
# manylinux wheels, with the testbed model built here), 4.3 MiB of the 64 MiB that may travel.
GPU_VENV ?= .venv-gpu
GPU_PY ?= $(GPU_VENV)/bin/python
GPU_WHEELS ?=
GPU_PYVER ?= 3.12
GPU_OUT ?= results/gpu

$(GPU_VENV)/bin/python: pyproject.toml
	$(PY) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/pip install -q -e '.[dev,vllm]'

ifeq ($(GPU_PY),$(GPU_VENV)/bin/python)
gpu-check: $(GPU_PY)
endif
gpu-check:
	$(GPU_PY) bench/gpu_check.py --out $(GPU_OUT) $(if $(GPU_WHEELS),--wheels $(GPU_WHEELS))

gpu-wheels: install
	$(BIN)/python bench/gpu_bundle.py download $(or $(GPU_WHEELS),.gpu-wheels) --python-version $(GPU_PYVER)

clean-cluster:
	bash slurm/cluster_down.sh

# Mutation testing (mutmut, outside CI: minutes) of the loss math, the metrics and the report's
# statistics ([tool.mutmut] in pyproject.toml); survivors and why each is equivalent: results/mutation.md.
mutate: install
	rm -rf mutants
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results > results/mutation_survivors.txt || true
