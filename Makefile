# GeoSANE-HF developer commands. `make demo` and `make test` each set up the venv by themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.geosane-installed
# The only torch/torchvision pair that imports together on this machine class (see docs/install.md).
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
export HF_HUB_DISABLE_TELEMETRY := 1
export GRADIO_ANALYTICS_ENABLED := False
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-slow test-all style quality bench bench-full demo demo-quick zoo-experiment experiment research-transfer results-docs space space-bundle clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt requirements-data.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# pip 24.0: newer pips refuse solaris 0.4.0 (invalid metadata), whose SpaceNet sample files we read.
	$(PIP) install -q "pip==24.0"
	$(PIP) install -q $(TORCH_PIN)
	# torchgeo: the TorchGeo benchmarks as tasks (tests/test_torchgeo.py); its pins in constraints.txt change none of ours.
	$(PIP) install -q -c constraints.txt -e ".[dev,torchgeo]"
	$(PIP) install -q --no-deps -c constraints.txt -r requirements-data.txt
	$(PY) -c "import torch, torchvision, timm, transformers, geosane_hf; print('geosane_hf', geosane_hf.__version__, 'torch', torch.__version__, 'timm', timm.__version__)"
	@touch $(STAMP)

# The tests and every docstring example of the package (--doctest-modules: an example that no test runs rots).
test: setup
	$(PY) -m pytest -m "not slow" -q --doctest-modules tests geosane_hf modeling

test-slow: setup
	$(PY) -m pytest -m "slow" -q

test-all: setup
	$(PY) -m pytest -q

style: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

quality: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Speed figures (each script compares against its baseline in the same run; tables go to docs/benchmarks.md).
bench: setup
	$(PY) benchmarks/tokenizer_speed.py
	$(PY) benchmarks/model_speed.py
	$(PY) benchmarks/augment_speed.py
	$(PY) benchmarks/dataset_build.py --quick

# Minutes to hours: every timm architecture, ten ViT-L checkpoints, training and generation speed, and what the
# halo buys on the demo's trained model (runs the demo first when it is missing).
bench-full: setup
	$(PY) benchmarks/tokenizer_coverage.py
	$(PY) benchmarks/dataset_build.py
	$(PY) benchmarks/train_speed.py
	$(PY) benchmarks/generate_speed.py
	@test -f runs/demo/train/model/config.json || $(MAKE) demo
	$(PY) benchmarks/halo_quality.py --model runs/demo/train/model --dataset runs/demo/dataset

# The offline end-to-end demo (~12 min on 2 idle cores, resumable: run it again after an interruption).
demo: setup
	$(PY) -m geosane_hf.cli demo --out runs/demo

# The in-distribution generation experiment (~15 min on 2 idle cores, resumable): a population of one layout, the zoo
# autoencoder, generated models vs matched-distance noise, the quality-novelty curve and the targets
# (runs/zoo-experiment/zoo_experiment.json; report in runs/zoo-experiment/experiment/zoo_experiment.md).
zoo-experiment: setup
	$(PY) -m geosane_hf.cli zoo-experiment --out runs/zoo-experiment

# Issue 15, transfer (~70 min on 2 idle cores, resumable): per data source (Statlog, Landsat-8, SpaceNet), a GeoSANE
# trained on a population without it (packaged real checkpoints, zoo, ImageNet Lite0/Lite2 tuned on the other
# sources' tasks; checked by image content hash), then every start fine-tuned on the source's tasks (lite0 and lite1,
# 5 seeds, few labels); win/tie/loss of GeoSANE's recommended start per baseline.
# Report: runs/experiment/experiment.md, copied with its figures to docs/experiment.md.
experiment: setup
	$(PY) -m geosane_hf.cli experiment --out runs/experiment --docs docs

# Issue 15's leave-one-source-out transfer study (resumable; ~2.5 h on 2 cores in all): RS-tuned Lite0 members of other
# data sources vs the ImageNet prompt, 10% labels, 5 seeds, every protocol of docs/generation_quality.md: 5 epochs at
# lr 1e-3, probe + fine-tune (lr 1e-3 and 1e-4), trained to ~160 steps (H3), members tuned 12 epochs (H4).
# Rows: runs/research/transfer{,-members12}/rows.jsonl; summaries and convergence plots beside them.
RESEARCH_TASKS := landsat8-cloud-segmentation,spacenet-building-segmentation,landsat8-cloudy-classification,statlog-classification
RESEARCH_STARTS := scratch,imagenet_prompt,member_average,blend_average,noise_matched
research-transfer: setup
	$(PY) tools/research_transfer.py --out runs/research/transfer --tasks $(RESEARCH_TASKS)
	$(PY) tools/research_transfer.py --out runs/research/transfer --epochs 3 --probe-epochs 3 \
		--tasks landsat8-cloud-segmentation,spacenet-building-segmentation
	$(PY) tools/research_transfer.py --out runs/research/transfer --epochs 3 --probe-epochs 3 --lr 1e-4 \
		--tasks $(RESEARCH_TASKS) --starts $(RESEARCH_STARTS)
	$(PY) tools/research_transfer.py --out runs/research/transfer --epochs 40 --starts $(RESEARCH_STARTS) \
		--tasks landsat8-cloud-segmentation
	$(PY) tools/research_transfer.py --out runs/research/transfer --epochs 12 --starts $(RESEARCH_STARTS) \
		--tasks landsat8-cloudy-classification
	$(PY) tools/research_transfer.py --out runs/research/transfer-members12 --member-epochs 12 \
		--tasks $(RESEARCH_TASKS) --starts $(RESEARCH_STARTS)
	$(PY) tools/research_transfer.py --out runs/research/transfer-members12 --member-epochs 12 \
		--tasks statlog-classification --seeds 5,6,7,8,9 --starts $(RESEARCH_STARTS)

# docs/results.md and its figures from the last `make demo` (runs it first when its report is missing).
results-docs: setup
	@test -f runs/demo/results.md || $(MAKE) demo
	$(PY) tools/demo_results_to_docs.py --demo runs/demo --docs docs

# The same pipeline at a few-minute budget (what the tests run).
demo-quick: setup
	$(PY) -m geosane_hf.cli demo --quick --out runs/demo-quick

# The Gradio Space, locally and offline (http://127.0.0.1:7860), on the model, collection, embeddings and curves of
# `make demo` (run first when missing). GEOSANE_MODEL / GEOSANE_COLLECTION / ... override (docs/space.md).
DEMO_DIR ?= runs/demo
space: setup
	@if [ -z "$$GEOSANE_MODEL" ] && [ ! -f $(DEMO_DIR)/train/model/config.json ]; then \
		echo "no demo model in $(DEMO_DIR)/train/model: running make demo first (~15 min, resumable)"; \
		$(MAKE) demo; fi
	GEOSANE_MODEL=$${GEOSANE_MODEL:-$(DEMO_DIR)/train/model} \
	GEOSANE_COLLECTION=$${GEOSANE_COLLECTION:-$(DEMO_DIR)/collection} \
	GEOSANE_EMBEDDINGS=$${GEOSANE_EMBEDDINGS:-$(DEMO_DIR)/embeddings/embeddings.safetensors} \
	GEOSANE_EVAL_DIR=$${GEOSANE_EVAL_DIR:-$(DEMO_DIR)/evaluation} \
	$(PY) spaces/app.py

# A self-contained Hugging Face Space folder (package vendored, pinned requirements.txt); upload it (docs/space.md).
SPACE_OUT ?= dist/space
SPACE_MODEL_ID ?= geosane/base
space-bundle: setup
	$(PY) tools/bundle_space.py --out $(SPACE_OUT) --model-id $(SPACE_MODEL_ID) --overwrite

clean-venv:
	rm -rf $(VENV)
