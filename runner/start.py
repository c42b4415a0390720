"""How a run of either program starts: its directory, its scene from the options, and its field (new, loaded or
resumed from a checkpoint), with the checks both programs need."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from pathlib import Path

from dataloader import load_scene
from models import FitSettings, build_sampler, field_from_args, load_checkpoint
from models.checkpoint import check_matches_config, iteration_from_name
from models.config import ConfigError

log = logging.getLogger(__name__)


def run_directory(basedir: str | Path, expname: str, timestamp: bool) -> Path:
    """``{basedir}/{expname}``, with ``-YYYYmmdd-HHMMSS`` appended when ``timestamp``."""
    name = expname + (datetime.datetime.now().strftime("-%Y%m%d-%H%M%S") if timestamp else "")
    return Path(basedir) / name


def keep_previous_config(path: Path) -> Path | None:
    """Rename an existing ``config.txt`` (a resumed run's) to ``config-{n}.txt`` so each run's options are kept."""
    if not path.exists():
        return None
    n = 1
    while path.with_name(f"{path.stem}-{n}{path.suffix}").exists():
        n += 1
    kept = path.rename(path.with_name(f"{path.stem}-{n}{path.suffix}"))
    log.info("the previous run's %s is kept as %s", path.name, kept.name)
    return kept


def render_sampler(args, ndc: bool):
    """The ray sampler of renders the options describe: ``--sampling`` with the fast renders' options
    (``--occupancy_*``, ``--render_color_voxels``), for test views, paths, the editor's depth and scoring alike."""
    return build_sampler(args.sampling, ndc, **FitSettings.from_args(args).sampler_options())


def scene_from_args(args):
    """The scene the options describe (``dataset_name``, ``datadir``, ``downsample_train``, frames, cameras, NDC)."""
    if not args.datadir:
        raise ConfigError("no scene given: pass --datadir (or datadir = ... in the config)")
    return load_scene(args.dataset_name, args.datadir, downsample=args.downsample_train,
                      num_frames=args.num_frames or None, frame_list=args.frame_list or None,
                      skip_cams=args.skip_cams, ndc=bool(args.ndc_ray), hold_out_test=bool(args.hold_out_test))


@dataclass
class Start:
    """Where fitting starts: the field, the first iteration, and Adam's saved state (None: fresh)."""

    field: object
    iteration: int = 0
    optimizer_state: dict | None = None
    ckpt: dict | None = None


def load_field(ckpt: str | Path, args, scene, *, resume: bool, check_config: bool = False) -> Start:
    """A field from a checkpoint; with ``resume``, the iteration after the saved one and the optimizer state.

    Args:
        check_config: refuse a checkpoint whose shapes differ from the field the options describe (resuming a
            training run with its own config).
    """
    config = {"num_frames": scene.num_frames, "ld_per_frame": args.ld_per_frame}
    field, saved = load_checkpoint(ckpt, device=args.device, model_name=args.model_name, config=config)
    if check_config:
        check_matches_config(field, field_from_args(args, scene), ckpt)
    check_frame_count(field, scene, ckpt)
    if not resume:
        return Start(field, ckpt=saved)
    iteration = saved.get("instruct4d", {}).get("iteration")
    iteration = iteration_from_name(ckpt) if iteration is None else iteration
    return Start(field, 0 if iteration is None else iteration + 1, saved.get("optimizer"), saved)


def check_frame_count(field, scene, source) -> None:
    """ConfigError when the field models another number of frames than the scene loads."""
    if field.num_frames != scene.num_frames:
        raise ConfigError(f"{source} models {field.num_frames} frames but the scene loads {scene.num_frames}: use "
                          "the num_frames / frame_list of the run that trained it")
