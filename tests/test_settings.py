"""Options built from the settings dataclasses: each default written once, the release's names accepted."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from common.settings import add_settings, setting, settings_from_args
from editing.options import parse_edit_args
from editing.schedules import EditSettings
from ip2p_models.settings import RefineSettings
from models.config import parse_args
from models.settings import FitSettings


@dataclasses.dataclass
class Example:
    steps: int = setting(20, "steps")
    flag: bool = setting(True, "1: on")
    quiet: bool = setting(False, "be quiet", action="store_true")
    levels: list[int] = setting([], "repeatable")
    level: float | None = setting(0.5, "a level", type=float, aliases=("old_level",))
    seed: int = setting(0, "the seed", option="run_seed")
    internal: int = 3  # no help: not an option


def test_parser_from_a_dataclass():
    parser = argparse.ArgumentParser()
    add_settings(parser, Example)
    assert {a.dest for a in parser._actions} == {"help", "steps", "flag", "quiet", "levels", "level", "run_seed"}
    args = parser.parse_args([])
    assert (args.steps, args.flag, args.quiet, args.levels, args.level, args.run_seed) == (20, 1, False, None, 0.5, 0)
    args = parser.parse_args(["--steps", "5", "--flag", "0", "--quiet", "--levels", "1", "--levels", "2",
                              "--old_level", "0.25", "--run_seed", "9"])
    example = settings_from_args(Example, args)
    assert example == Example(steps=5, flag=0, quiet=True, levels=[1, 2], level=0.25, seed=9)
    assert settings_from_args(Example, parser.parse_args([])) == Example()


def test_fit_and_edit_options_take_their_defaults_from_the_settings():
    args = parse_args([])
    assert FitSettings.from_args(args) == FitSettings()
    edit = EditSettings.from_args(parse_edit_args(["--prompt", "p", "--ckpt", "x.th"]))
    assert edit == EditSettings(prompt="p", ndc=False)
    # the guidance defaults live in one place
    assert (edit.guidance_scale, edit.image_guidance_scale, edit.refine_num_steps) == (
        RefineSettings.guidance_scale, RefineSettings.image_guidance_scale, RefineSettings.refine_num_steps)


def test_edit_options_the_settings_used_to_drop():
    args = parse_edit_args(["--prompt", "p", "--ckpt", "x.th", "--photometric_threshold", "0.1", "--edit_seed", "4",
                            "--painting_diffusion_steps", "3", "--painting_num_train_timesteps", "500"])
    edit = EditSettings.from_args(args)
    assert (edit.photometric_threshold, edit.seed, edit.refine_diffusion_steps, edit.refine_num_steps) == (
        0.1, 4, 3, 500)
    off = EditSettings.from_args(parse_edit_args(["--prompt", "p", "--ckpt", "x.th", "--photometric_threshold", "0"]))
    assert off.photometric_threshold is None


def test_the_fast_render_options_reach_every_render_sampler():
    from runner.start import render_sampler

    flags = ["--occupancy_render_mib", "0", "--render_color_voxels", "0", "--occupancy_min_transmittance", "0.001"]
    for args in (parse_args(flags), parse_edit_args(["--prompt", "p", "--ckpt", "x.th", *flags])):
        sampler = render_sampler(args, ndc=True)  # test views, the editor's depth and scoring all render with it
        assert (sampler.time_volume.budget_mib, sampler.color_voxels, sampler.early_stop) == (0, 0, 0.001)
    assert type(render_sampler(parse_args(["--sampling", "dense"]), ndc=True)).__name__ == "DenseSampler"


def test_window_overlap_bounds():
    from models.config import ConfigError

    base = ["--prompt", "p", "--ckpt", "x.th"]
    assert parse_edit_args(base + ["--sequence_length", "2", "--overlap_length", "1"]).overlap_length == 1
    assert parse_edit_args(base + ["--sequence_length", "6", "--overlap_length", "5"]).overlap_length == 5
    for seq, overlap in (("6", "0"), ("6", "6"), ("2", "2")):
        with pytest.raises(ConfigError, match=f"overlap_length = {overlap}: need 1 <= overlap_length < "):
            parse_edit_args(base + ["--sequence_length", seq, "--overlap_length", overlap])
