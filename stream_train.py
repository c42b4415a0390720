"""Fit a 4D NeRF (stream TensoRF) to a multi-view video scene, or render a fitted one.

    python stream_train.py --config configs/n3dv/train_coffee_50_2.txt \
        --datadir ./data/neural_3d/coffee_martini --basedir ./log/neural_3d --render_test 1 --render_path 1

Writes into the run directory ``{basedir}/{expname}`` (``-YYYYmmdd-HHMMSS`` appended with ``--add_timestamp 1``):
``config.txt`` (resolved options; reads back with ``--config``), ``ckpt-{iteration}.th``, TensorBoard logs,
``imgs_vis/`` (periodic test renders), ``imgs_test_all/`` and ``imgs_path_all/`` (final renders and videos).
``--ckpt`` resumes a run in the checkpoint's folder; ``--render_only 1 --ckpt ...`` only renders. Ctrl-C saves a
checkpoint before exiting.
"""

from __future__ import annotations

import datetime
import logging
import sys
from pathlib import Path

import torch

from common.errors import UserError
from dataloader import load_scene
from models import FitSettings, Trainer, build_sampler, field_from_args, load_checkpoint
from models.checkpoint import check_matches_config, iteration_from_name, latest_checkpoint
from models.config import ConfigError, parse_args, write_config
from runner.outputs import render_path_views, render_test_views

log = logging.getLogger("stream_train")


def run_directory(args) -> Path:
    """``{basedir}/{expname}``, or the checkpoint's folder when resuming or rendering."""
    if args.ckpt:
        return Path(args.ckpt).parent
    name = args.expname
    if args.add_timestamp:
        name += datetime.datetime.now().strftime("-%Y%m%d-%H%M%S")
    return Path(args.basedir) / name


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


def load_scene_from_args(args):
    if not args.datadir:
        raise ConfigError("no scene given: pass --datadir (or datadir = ... in the config)")
    return load_scene(args.dataset_name, args.datadir, downsample=args.downsample_train,
                      num_frames=args.num_frames or None, frame_list=args.frame_list or None,
                      skip_cams=args.skip_cams, ndc=bool(args.ndc_ray), hold_out_test=bool(args.hold_out_test))


def render_outputs(field, scene, args, run_dir: Path) -> None:
    """Final renders requested by ``--render_test`` / ``--render_path``."""
    sampler = build_sampler(args.sampling, scene.ndc, **FitSettings.from_args(args).sampler_options())
    if args.render_test:
        psnrs = render_test_views(field, sampler, scene, run_dir / "imgs_test_all", chunk=args.chunk,
                                  white_bg=args.white_bkgd)
        mean = sum(sum(v) for v in psnrs.values()) / max(1, sum(len(v) for v in psnrs.values()))
        log.info("======> %s test all psnr: %.2f (renders in %s)", args.expname, mean, run_dir / "imgs_test_all")
    if args.render_path:
        video = render_path_views(field, sampler, scene, run_dir / "imgs_path_all", views=args.path_views,
                                  chunk=args.chunk, white_bg=args.white_bkgd)
        log.info("render path video: %s", video)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        args = parse_args(argv)
        torch.manual_seed(args.seed)
        scene = load_scene_from_args(args)
        run_dir = run_directory(args)
        config = {"num_frames": scene.num_frames, "ld_per_frame": args.ld_per_frame}

        if args.render_only:
            if not args.ckpt:
                raise ConfigError("--render_only 1 needs --ckpt PATH/ckpt-N.th")
            field, _ = load_checkpoint(args.ckpt, device=args.device, model_name=args.model_name, config=config)
            render_outputs(field, scene, args, run_dir)
            return 0

        existing = sorted(run_dir.glob("ckpt-*.th"))
        if existing and not args.ckpt:
            latest = latest_checkpoint(run_dir)
            raise ConfigError(f"{run_dir} already holds a fitted NeRF ({', '.join(p.name for p in existing)}); "
                              f"nothing was changed. Resume it with --ckpt {latest}, render it with --render_only 1 "
                              f"--ckpt {latest}, or start a new run with another --expname (or --add_timestamp 1)")
        run_dir.mkdir(parents=True, exist_ok=True)
        start, optimizer_state = 0, None
        if args.ckpt:
            field, ckpt = load_checkpoint(args.ckpt, device=args.device, model_name=args.model_name, config=config)
            check_matches_config(field, field_from_args(args, scene), args.ckpt)
            saved = ckpt.get("instruct4d", {}).get("iteration")
            saved = iteration_from_name(args.ckpt) if saved is None else saved
            start = 0 if saved is None else saved + 1
            optimizer_state = ckpt.get("optimizer")
            log.info("resuming %s at iteration %d", run_dir, start)
        else:
            field = field_from_args(args, scene)
        if field.num_frames != scene.num_frames:
            raise ConfigError(f"the model has {field.num_frames} frames but the scene loads {scene.num_frames}: "
                              "set num_frames / frame_list as in the training run")
        keep_previous_config(run_dir / "config.txt")
        write_config(args, run_dir / "config.txt")
        log.info("run directory %s", run_dir)

        trainer = Trainer(field, scene, FitSettings.from_args(args), device=args.device, run_dir=run_dir,
                          start_iteration=start, optimizer_state=optimizer_state)
        try:
            trainer.train()
        except KeyboardInterrupt:
            path = trainer.save()
            log.warning("interrupted: checkpoint %s; resume with --ckpt %s", path, path)
            return 130
        trainer.save()
        render_outputs(trainer.field, scene, args, run_dir)
        return 0
    except UserError as err:
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
