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

import logging
import sys
from pathlib import Path

import torch

from common.errors import UserError
from models import FitSettings, Trainer, field_from_args
from models.checkpoint import latest_checkpoint
from models.config import ConfigError, parse_args, write_config
from runner.outputs import final_renders
from runner.start import Start, keep_previous_config, load_field, render_sampler, scene_from_args
from runner.start import run_directory as runner_directory

log = logging.getLogger("stream_train")


def run_directory(args) -> Path:
    """``{basedir}/{expname}``, or the checkpoint's folder when resuming or rendering."""
    if args.ckpt:
        return Path(args.ckpt).parent
    return runner_directory(args.basedir, args.expname, bool(args.add_timestamp))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        args = parse_args(argv)
        torch.manual_seed(args.seed)
        scene = scene_from_args(args)
        run_dir = run_directory(args)
        sampler = render_sampler(args, scene.ndc)

        if args.render_only:
            if not args.ckpt:
                raise ConfigError("--render_only 1 needs --ckpt PATH/ckpt-N.th")
            field = load_field(args.ckpt, args, scene, resume=False).field
            final_renders(field, sampler, scene, args, run_dir, test=bool(args.render_test),
                          path=bool(args.render_path))
            return 0

        existing = sorted(run_dir.glob("ckpt-*.th"))
        if existing and not args.ckpt:
            latest = latest_checkpoint(run_dir)
            raise ConfigError(f"{run_dir} already holds a fitted NeRF ({', '.join(p.name for p in existing)}); "
                              f"nothing was changed. Resume it with --ckpt {latest}, render it with --render_only 1 "
                              f"--ckpt {latest}, or start a new run with another --expname (or --add_timestamp 1)")
        if args.ckpt:
            start = load_field(args.ckpt, args, scene, resume=True, check_config=True)
            log.info("resuming %s at iteration %d", run_dir, start.iteration)
        else:
            start = Start(field_from_args(args, scene))
        run_dir.mkdir(parents=True, exist_ok=True)
        keep_previous_config(run_dir / "config.txt")
        write_config(args, run_dir / "config.txt")
        log.info("run directory %s", run_dir)

        trainer = Trainer(start.field, scene, FitSettings.from_args(args), device=args.device, run_dir=run_dir,
                          start_iteration=start.iteration, optimizer_state=start.optimizer_state)
        try:
            trainer.train()
        except KeyboardInterrupt:
            path = trainer.save() or args.ckpt
            if path:
                log.warning("interrupted: checkpoint %s; resume with --ckpt %s", path, path)
            else:
                log.warning("interrupted before the first iteration: nothing to checkpoint")
            return 130
        finally:
            trainer.close()
        trainer.save()
        final_renders(trainer.field, sampler, scene, args, run_dir, test=bool(args.render_test),
                      path=bool(args.render_path))
        return 0
    except UserError as err:
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
