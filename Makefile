# Entry points for a fresh machine: `make demo`, `make test` and, on a machine with a CUDA GPU, `make gpu-check`.
# Each builds .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= .demo
GPU_CHECK ?= gpu_check.json
BUNDLE := bundles/lesion_inpainting
RUN := $(PY) -m monai.bundle run

.PHONY: venv demo test test-fast gpu-check clean

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-monailabel.txt setup.cfg
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-monailabel.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# Phantom EMIDEC-like data -> LeFusion-J training at CPU demo scale -> lesion synthesis with preview.
demo: venv
	$(PY) -m pathosynth.cli phantom $(DEMO_DIR)/data --n_normal 2 --n_pathological 8 --seed 0
	$(RUN) training --config_file "['$(BUNDLE)/configs/common.json','$(BUNDLE)/configs/train.json','$(BUNDLE)/configs/demo.json']" \
		--dataset_dir $(DEMO_DIR)/data --ckpt_dir $(DEMO_DIR)/models --output_dir $(DEMO_DIR)/logs
	$(RUN) inference --config_file "['$(BUNDLE)/configs/common.json','$(BUNDLE)/configs/inference.json','$(BUNDLE)/configs/demo.json']" \
		--dataset_dir $(DEMO_DIR)/data --ckpt_dir $(DEMO_DIR)/models --output_dir $(DEMO_DIR)/synthetic
	@echo "demo done: $(DEMO_DIR)/synthetic/datalist.json, $(DEMO_DIR)/synthetic/preview.png"

# The lint gate first (ruff: pyflakes, pycodestyle, isort at 120 columns; pyproject.toml), then the suite.
test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2 --dist worksteal --timeout 900 -ra

# Every bundle's smoke training + inference on the GPU (AMP where a config has an `amp` key) and the paper-size
# LeFusion network's forward time and peak memory -> $(GPU_CHECK); without CUDA the same on the CPU at smoke scale.
gpu-check: venv
	$(PY) -m pathosynth.gpu_check --output $(GPU_CHECK)

test-fast: venv
	$(PY) -m pytest -n 2 -m "not slow" -ra

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
