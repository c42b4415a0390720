# `make test` and `make demo` set up .venv from requirements.txt when it is missing or older
# than requirements.txt, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
DEMO_SCENE := data/synthetic/demo

.PHONY: venv test demo lint clean-demo

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .

# The main job on the built-in synthetic scene: render it, fit the 4D NeRF, render test views and a path.
demo: $(STAMP)
	$(PY) tools/make_synthetic_scene.py $(DEMO_SCENE)
	$(PY) -m dataloader.describe --dataset_name synthetic --datadir $(DEMO_SCENE)
	$(PY) stream_train.py --config configs/synthetic/train_demo.txt --datadir $(DEMO_SCENE)
	@echo "demo done: renders in log/synthetic/train_demo/ (imgs_test_all/cam00/video.mp4, imgs_path_all/video.mp4)"

clean-demo:
	rm -rf $(DEMO_SCENE) log/synthetic
