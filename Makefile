# Two entry points for a fresh machine: `make demo` and `make test`. Both build .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= .demo
BUNDLE := bundles/lesion_inpainting
RUN := $(PY) -m monai.bundle run

.PHONY: venv demo test test-fast clean

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
	$(RUN) training --config_file "['$(BUNDLE)/configs/train.json','$(BUNDLE)/configs/demo.json']" \
		--dataset_dir $(DEMO_DIR)/data --ckpt_dir $(DEMO_DIR)/models --output_dir $(DEMO_DIR)/logs
	$(RUN) inference --config_file "['$(BUNDLE)/configs/inference.json','$(BUNDLE)/configs/demo.json']" \
		--dataset_dir $(DEMO_DIR)/data --ckpt_dir $(DEMO_DIR)/models --output_dir $(DEMO_DIR)/synthetic
	@echo "demo done: $(DEMO_DIR)/synthetic/datalist.json, $(DEMO_DIR)/synthetic/preview.png"

test: venv
	$(PY) -m pytest -n 2 --dist worksteal --timeout 900 -ra

test-fast: venv
	$(PY) -m pytest -n 2 -m "not slow" -ra

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
