# `make test` and `make demo` set up .venv from requirements.txt when it is missing or older
# than requirements.txt, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
DEMO_SCENE := data/synthetic/demo
MONO_SCENE := data/synthetic/monocular

.PHONY: venv test demo demo-monocular lint clean-demo

$(STAMP): requirements.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed (PYTHON=python3.11 make ...)")'
	$(PY) -m pip install --quiet pip==26.3
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .

# $(call demo_run,NAME,SCENE,SCENE_FLAGS): make the scene, describe it, fit it once (configs/synthetic/train_NAME.txt,
# skipped when log/synthetic/train_NAME has a checkpoint), edit it (edit_NAME.txt; --resume when an edit is there),
# score the edit.
define demo_run
	$(PY) tools/make_synthetic_scene.py $(2) $(3)
	$(PY) -m dataloader.describe --dataset_name synthetic --datadir $(2)
	test -n "$$(ls log/synthetic/train_$(1)/ckpt-*.th 2>/dev/null)" || \
		$(PY) stream_train.py --config configs/synthetic/train_$(1).txt --datadir $(2)
	$(PY) stream_edit.py --config configs/synthetic/edit_$(1).txt --datadir $(2) \
		$$(test -f log/synthetic/edit_$(1)/edit_state.json && echo --resume)
	$(PY) tools/evaluate_edit.py log/synthetic/edit_$(1)
	@echo "done: fitted NeRF in log/synthetic/train_$(1)/, edited NeRF in log/synthetic/edit_$(1)/"
endef

# The main job on the built-in synthetic scene: render it, fit the 4D NeRF, edit it, render videos.
# A second `make demo` reuses the fitted NeRF and continues (--resume) the edit already there; `make clean-demo`
# starts over.
demo: $(STAMP)
	$(call demo_run,demo,$(DEMO_SCENE),)
	@echo "  (side_by_side_cam00.mp4, imgs_test_all/cam00/video.mp4, imgs_path_all/video.mp4, previews/, eval/)"

# The same on a monocular capture: one camera moving through the scene (Nerfies layout), fitted in box mode, edited
# with the monocular schedule, scored over time.
demo-monocular: $(STAMP)
	$(call demo_run,monocular,$(MONO_SCENE),--monocular --frames 24)

clean-demo:
	rm -rf $(DEMO_SCENE) $(MONO_SCENE) log/synthetic
