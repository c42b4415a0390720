# `make test` and `make demo` set up .venv from requirements.txt when it is missing or older
# than requirements.txt, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
DEMO_SCENE := data/synthetic/demo
MONO_SCENE := data/synthetic/monocular

.PHONY: venv test demo demo-monocular lint clean-demo

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

# The main job on the built-in synthetic scene: render it, fit the 4D NeRF, edit it, render videos.
# A second `make demo` reuses the fitted NeRF and continues (--resume) the edit already there; `make clean-demo`
# starts over.
demo: $(STAMP)
	$(PY) tools/make_synthetic_scene.py $(DEMO_SCENE)
	$(PY) -m dataloader.describe --dataset_name synthetic --datadir $(DEMO_SCENE)
	test -n "$$(ls log/synthetic/train_demo/ckpt-*.th 2>/dev/null)" || \
		$(PY) stream_train.py --config configs/synthetic/train_demo.txt --datadir $(DEMO_SCENE)
	$(PY) stream_edit.py --config configs/synthetic/edit_demo.txt --datadir $(DEMO_SCENE) \
		$$(test -f log/synthetic/edit_demo/edit_state.json && echo --resume)
	$(PY) tools/evaluate_edit.py log/synthetic/edit_demo
	@echo "demo done: fitted NeRF in log/synthetic/train_demo/, edited NeRF in log/synthetic/edit_demo/"
	@echo "  (side_by_side_cam00.mp4, imgs_test_all/cam00/video.mp4, imgs_path_all/video.mp4, previews/, eval/)"

# The same on a monocular capture: one camera moving through the scene (Nerfies layout), fitted in box mode, edited
# with the monocular schedule, scored over time.
demo-monocular: $(STAMP)
	$(PY) tools/make_synthetic_scene.py $(MONO_SCENE) --monocular --frames 24
	$(PY) -m dataloader.describe --dataset_name synthetic --datadir $(MONO_SCENE)
	test -n "$$(ls log/synthetic/train_monocular/ckpt-*.th 2>/dev/null)" || \
		$(PY) stream_train.py --config configs/synthetic/train_monocular.txt --datadir $(MONO_SCENE)
	$(PY) stream_edit.py --config configs/synthetic/edit_monocular.txt --datadir $(MONO_SCENE) \
		$$(test -f log/synthetic/edit_monocular/edit_state.json && echo --resume)
	$(PY) tools/evaluate_edit.py log/synthetic/edit_monocular
	@echo "monocular demo done: fitted NeRF in log/synthetic/train_monocular/, edited NeRF in log/synthetic/edit_monocular/"

clean-demo:
	rm -rf $(DEMO_SCENE) $(MONO_SCENE) log/synthetic
