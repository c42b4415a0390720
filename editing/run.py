"""One edit, start to end: setup, the NeRF trainer in this process beside editor processes, resume, outputs.

The stages of a pass (``keyframe`` schedule: ``keyframe`` then ``time``; ``keyview``: ``keytime`` then ``views``)
run one after the other; each stage is a pool of editor processes (:mod:`editing.worker`) over disjoint camera
sets, while this process keeps fitting the NeRF to the image store they write into. The store and the list of
finished units are saved every ``--edit_save_every`` seconds and after each stage; checkpoints as in training.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from common.image_io import read_rgb, to_uint8, write_video
from models import FitSettings, Trainer, render_image
from models.checkpoint import latest_checkpoint
from models.config import ConfigError, write_config
from runner.outputs import render_path_views, render_test_views
from runner.start import Start, keep_previous_config, load_field, render_sampler, scene_from_args
from runner.start import run_directory as runner_directory

from .depth_cache import DepthCache
from .options import build_edit_parser
from .processes import EditorFailed, EditorPool
from .schedules import (
    Cameras,
    EditSettings,
    anchored_keys,
    joint_key_views,
    key_camera,
    key_views_key,
    keyframe_keys,
    per_frame_keys,
    time_keys,
    views_keys,
)
from .state import EditState, ResumeError
from .store import ImageStore
from .worker import EditJob, EditorSpec, load_factory, run_editor

log = logging.getLogger("stream_edit")

class Interrupted(Exception):
    """Ctrl-C during the edit (the checkpoint and the edit state are saved)."""


def run_directory(args: argparse.Namespace) -> Path:
    """``{basedir}/{expname}``, timestamped with ``--add_timestamp 1`` (not when resuming)."""
    return runner_directory(args.basedir, args.expname, bool(args.add_timestamp) and not args.resume)


def resolve_editor_model(args: argparse.Namespace, run_dir: Path) -> str:
    """The IP2P weights to load (``--ip2p_model``), checked to be loadable before anything starts.

    Raises:
        IP2PWeightsError: a missing or incomplete folder (the message names the missing file), or a hub id that is
            neither cached nor downloadable.
    """
    from ip2p_models.loading import check_available

    if args.ip2p_fallback_tiny:
        log.warning("ip2p_fallback_tiny is no longer used: the demo edits with the mini InstructPix2Pix in "
                    "weights/mini-ip2p; pass --ip2p_model")
    check_available(args.ip2p_model)
    return args.ip2p_model


def choose_schedule(asked: str | None, scene) -> str:
    """The edit schedule: ``asked``, checked against the scene, or the scene's default (``monocular`` for a
    capture whose camera moves from frame to frame, else ``keyframe``)."""
    if asked is None:
        return "monocular" if scene.moving else "keyframe"
    if scene.moving and asked in ("keyframe", "keyview"):
        raise ConfigError(f"edit_schedule = {asked} needs cameras fixed over time; this scene is a monocular "
                          "capture (one moving camera): use --edit_schedule monocular (or leave it unset)")
    if not scene.moving and asked == "monocular":
        raise ConfigError("edit_schedule = monocular is for monocular captures (a camera that moves from frame to "
                          "frame); this scene's cameras are fixed: use keyframe or keyview")
    return asked


class EditRun:
    """Everything one ``stream_edit.py`` invocation does; :meth:`run` returns the exit code.

    Args:
        args: parsed options (:func:`editing.options.parse_edit_args`).
    """

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.run_dir = run_directory(args)
        self.last_save = time.monotonic()
        self.bar: tqdm | None = None
        self.units_total = 0
        self.editor_stats: list[dict] = []  # per finished editor process: stage, unet_evals, peak_rss_mib, times
        self.timing: defaultdict[str, float] = defaultdict(float)  # wall seconds by part (report_timing)

    # -- setup -------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        args, run_dir = self.args, self.run_dir
        has_state = EditState.exists(run_dir)
        if args.resume and not has_state:
            raise ResumeError(f"--resume: {run_dir} holds no edit to continue (no edit_state.json); drop --resume "
                              "to start it")
        if not args.resume and has_state:
            raise ConfigError(f"{run_dir} already holds an edit: pass --resume to continue it, or another --expname "
                              "to start a new one (nothing was overwritten)")
        began_from = EditState.read_info(run_dir).get("ckpt") if args.resume else None
        if args.resume and not args.ckpt:
            args.ckpt = began_from
        if args.ckpt and Path(args.ckpt).is_dir():  # a training run directory: its latest checkpoint
            latest = latest_checkpoint(args.ckpt)
            if latest is None:
                raise ConfigError(f"--ckpt {args.ckpt} is a folder without ckpt-*.th: train first (stream_train.py) "
                                  "or pass the checkpoint file")
            args.ckpt = str(latest)
        if not args.ckpt or not Path(args.ckpt).is_file():
            raise ConfigError(f"checkpoint {args.ckpt} not found: pass --ckpt with the fitted NeRF "
                              "(log/.../train_{scene}/ckpt-N.th from stream_train.py, or the release's)")
        if began_from and Path(args.ckpt).resolve() != Path(began_from).resolve():
            raise ResumeError(f"--resume: this edit began from {began_from}, but --ckpt gives "
                              f"{Path(args.ckpt).resolve()} (a training folder's newer checkpoint?): pass --ckpt "
                              f"{began_from}")
        if Path(args.ckpt).resolve().parent == run_dir.resolve():
            raise ConfigError(f"the edit's run directory {run_dir} is the folder of --ckpt {args.ckpt}; the edit "
                              "would replace its checkpoints: pass another --expname")
        others = sorted(p.name for p in run_dir.glob("ckpt-*.th")) if not has_state else []
        if others:  # e.g. the training run's folder: its config, renders and checkpoints are not the edit's to replace
            raise ConfigError(f"{run_dir} holds checkpoints of another run ({', '.join(others)}) and no edit: pass "
                              "another --expname for the edit (nothing was overwritten)")
        if not args.datadir:
            raise ConfigError("no scene given: pass --datadir (or datadir = ... in the config)")
        # the editor's weights: checked before anything is loaded or written, loaded in the editor processes
        if args.editor != "ip2p":
            try:
                load_factory(args.editor)
            except ValueError as err:
                raise ConfigError(str(err)) from err
        self.editor_model = resolve_editor_model(args, run_dir) if args.editor == "ip2p" else args.ip2p_model
        if args.editor == "ip2p":
            from ip2p_models.loading import warn_if_unknown_prompt

            warn_if_unknown_prompt(self.editor_model, args.prompt)

        # 1. the scene: a store of its own to edit, in shared memory; the schedule that suits it
        scene = scene_from_args(args)
        scene.make_editable()
        scene.share_memory_()
        self.scene = scene
        args.edit_schedule = choose_schedule(args.edit_schedule, scene)

        # 2. the NeRF: the fitted one, or the edit's last checkpoint when resuming
        original = load_field(args.ckpt, args, scene, resume=False).field
        self.sampler = render_sampler(args, scene.ndc)
        start = Start(original)
        resume_ckpt = latest_checkpoint(run_dir) if args.resume else None
        if resume_ckpt is not None:
            start = load_field(resume_ckpt, args, scene, resume=True)
            log.info("resuming the NeRF from %s (iteration %d)", resume_ckpt, start.iteration)
        field = start.field

        # 3. the edit's identity and state
        settings = EditSettings.from_args(args)
        self.settings = settings
        self.key_cams = self.resolve_key_cams()
        identity = {"prompt": args.prompt, "edit_schedule": args.edit_schedule, "shape": list(scene.images.shape),
                    "cam_ids": [int(c) for c in scene.cam_ids], "times": [round(float(t), 6) for t in scene.times],
                    "sequence_length": args.sequence_length, "overlap_length": args.overlap_length,
                    "keyframe_rounds": args.keyframe_rounds, "key_cams": self.key_cams, "edit_seed": args.edit_seed,
                    "editor": args.editor, "workers": args.workers}  # workers: how the stages split the cameras
        run_dir.mkdir(parents=True, exist_ok=True)
        if args.resume:
            self.state = EditState.load(run_dir, identity, scene.images)
            log.info("resuming the edit in %s: %d unit(s) done", run_dir, len(self.state.done))
        else:
            self.state = EditState(run_dir, identity)
            self.state.info["ckpt"] = str(Path(args.ckpt).resolve())
        written = copy.copy(args)
        del written.resume
        keep_previous_config(run_dir / "config.txt")  # a resume's options may differ: the earlier ones are kept
        write_config(written, run_dir / "config.txt", build_edit_parser())

        # 4. depth of every camera at the frames the schedule warps between cameras
        frames = {"keyframe": [0], "keyview": list(range(scene.num_frames))}.get(args.edit_schedule, [])
        cache = DepthCache(args.cache or run_dir / "cache", args.ckpt, scene, original, self.sampler, args.chunk)
        self.depth_files = {f: str(p) for f, p in zip(frames, cache.ensure(frames))}
        if field is not original:
            del original

        # 5. the trainer: the NeRF's grid stays as fitted (no upsampling), fresh schedules from iteration 0
        fit = FitSettings.from_args(args)
        fit.upsamp_list = []
        self.trainer = Trainer(field, scene, fit, device=args.device, run_dir=run_dir,
                               start_iteration=start.iteration, optimizer_state=start.optimizer_state)
        # the editor may need longer than n_iters: the learning rates stop decaying at their final values
        self.lr_floor = [g["lr"] * fit.lr_decay_target_ratio for g in field.param_groups(fit.lr_init, fit.lr_basis)]
        # the TV weights decay with the learning rates, and stop with them (else the regularizer against the floaters
        # of inconsistent edits fades away during a long edit)
        ratio = fit.lr_decay_target_ratio
        self.tv_floor = (fit.TV_weight_density * ratio, fit.TV_weight_app * ratio)
        if not args.resume:  # from now on the folder is this edit's: a crash before the first periodic save resumes
            self.state.save(self.scene.images)
        log.info("run directory %s", run_dir)

    def resolve_key_cams(self) -> list[int]:
        """Positions (along the scene's C axis) of ``--key_cams``; default the camera nearest the rig's centre."""
        scene = self.scene
        if not self.args.key_cams:
            return [key_camera(scene.c2w)] if self.args.edit_schedule == "keyview" else []
        positions = []
        for number in self.args.key_cams:
            if number not in scene.cam_ids:
                raise ConfigError(f"key_cams: camera {number} is not in the scene (cameras {list(scene.cam_ids)})")
            positions.append(list(scene.cam_ids).index(number))
        if self.args.edit_schedule == "keyview" and len(positions) > self.args.sequence_length:
            raise ConfigError(f"key_cams: {len(positions)} key cameras, but their frame 0 is edited as one batch of at "
                              f"most sequence_length = {self.args.sequence_length}: name fewer key cameras")
        return positions

    # -- stages ------------------------------------------------------------------------------------------------
    def stages(self, pass_index: int) -> list[tuple[str, list[list[int]], list[str]]]:
        """``(stage, camera sets of the editor processes, unit keys)`` of one pass, in order."""
        args, scene, s = self.args, self.scene, self.settings
        C, F, ids = scene.num_cams, scene.num_frames, list(scene.cam_ids)
        workers = args.workers

        def split(cams: list[int]) -> list[list[int]]:
            return [cams[i::workers] for i in range(min(workers, len(cams)))]

        # a monocular capture's validation cameras are never fitted, so never edited
        edited = list(scene.train_cams) if scene.moving else list(range(C))
        if args.edit_schedule == "perframe":
            cams = edited
            return [("perframe", split(cams), [k for c in cams for k in per_frame_keys(F, ids[c], s, pass_index)])]
        if args.edit_schedule == "anchor":
            cams = edited
            return [("anchor", split(cams), [k for c in cams for k in anchored_keys(ids[c], pass_index)])]
        if args.edit_schedule == "monocular":
            # the video is one pseudo-view: a full edit of the first window, then the sliding window through time
            units = [k for c in edited for k in time_keys(F, ids[c], s, pass_index, False, True)]
            return [("keytime", split(edited), units)]
        if args.edit_schedule == "keyframe":
            cams = list(range(C))
            time_units = [k for c in cams for k in time_keys(F, ids[c], s, pass_index, True, False)]
            return [("keyframe", [cams], keyframe_keys(C, s, pass_index)), ("time", split(cams), time_units)]
        others = [c for c in range(C) if c not in self.key_cams]
        joint = joint_key_views(self.key_cams, pass_index)  # several key cameras: their frame 0 together first
        key_units = [k for c in self.key_cams for k in time_keys(F, ids[c], s, pass_index, False, not joint)]
        sets = split(others)
        view_units = [k for cams in sets for k in views_keys(F, cams, ids, s, pass_index)]
        first = [("keyviews", [list(self.key_cams)], [key_views_key(pass_index)])] if joint else []
        return first + [("keytime", split(list(self.key_cams)), key_units), ("views", sets, view_units)]

    def job(self, stage: str, pass_index: int, cams: list[int], rank: int) -> EditJob:
        args, scene = self.args, self.scene
        device = args.ip2p_devices[rank % len(args.ip2p_devices)]
        spec = EditorSpec(args.editor, self.editor_model, device, bool(args.ip2p_use_full_precision),
                          args.sequence_length, bool(args.attention_slicing), bool(args.cpu_offload))
        flow = {"name": args.flow, "raft_ckpt": args.raft_ckpt, "iters": args.raft_iters}
        return EditJob(stage, pass_index, cams, self.settings, scene.original, Cameras(scene.K, scene.c2w),
                       list(scene.cam_ids), spec, flow, self.depth_files, list(self.key_cams), set(self.state.done),
                       str(self.run_dir / "previews"), args.preview_every, args.editor_threads)

    # -- the loop ----------------------------------------------------------------------------------------------
    def save_state(self) -> None:
        self.state.save(self.scene.images, self.lock)
        self.last_save = time.monotonic()

    def take_notes(self, pool: EditorPool) -> None:
        for rank, note in pool.take_notes():
            if "done" in note:
                self.state.mark_done(note["done"])
            elif "peak_rss_mib" in note:
                self.editor_stats.append({"rank": rank, **note})

    def step(self) -> None:
        """One NeRF iteration, then the trainer's logging, evaluation and checkpoints (:meth:`Trainer.after_step`)."""
        trainer = self.trainer
        stats = trainer.step()
        for group, floor in zip(trainer.optimizer.param_groups, self.lr_floor):
            group["lr"] = max(group["lr"], floor)
        trainer.tv_density, trainer.tv_app = max(trainer.tv_density, self.tv_floor[0]), max(trainer.tv_app,
                                                                                           self.tv_floor[1])
        stats = trainer.after_step(stats)
        iteration = stats["iteration"]
        if trainer.writer is not None:
            trainer.writer.add_scalar("edit/units_done", len(self.state.done), iteration)
        if self.bar is not None:
            self.bar.update(1)
            if iteration % trainer.settings.progress_refresh_rate == 0:
                units = sum(1 for k in self.state.done if "/" in k and k.count("/") >= 2)
                self.bar.set_description(f"NeRF {iteration:05d}: train_psnr = {stats['psnr']:.2f}, "
                                         f"edit units {units}/{self.units_total}")
                trainer.recent_psnr = []

    def fit_while_editing(self, pool: EditorPool) -> None:
        while True:
            pool.poll()
            self.take_notes(pool)
            if pool.done:
                return
            start = time.monotonic()
            self.step()
            self.timing["NeRF iterations while editing"] += time.monotonic() - start
            if time.monotonic() - self.last_save > self.args.edit_save_every:
                start = time.monotonic()
                self.save_state()
                self.timing["saving the edited images"] += time.monotonic() - start

    def refresh_from_nerf(self, pass_index: int) -> None:
        """Pass 2 and later start from the NeRF's renders: write them into the store (iterative dataset update)."""
        scene, store = self.scene, ImageStore(self.scene.images, self.scene.original, self.lock)
        # cameras never fitted (a monocular capture's validation cameras, a held-out test camera) keep their images
        cams = list(scene.train_cams)
        with torch.no_grad():
            for frame in tqdm(range(scene.num_frames), desc=f"pass {pass_index}: NeRF renders into the dataset",
                              leave=False):
                rgbs = [render_image(self.trainer.field, self.trainer.sampler, scene, frame, cam,
                                     chunk=self.args.chunk, white_bg=self.args.white_bkgd)["rgb"].cpu()
                        for cam in cams]
                store.put(frame, cams, torch.stack(rgbs).permute(0, 3, 1, 2))

    def edit(self) -> None:
        args, state = self.args, self.state
        plan = [(p, self.stages(p)) for p in range(args.edit_rounds)]
        self.units_total = sum(len(keys) for _, stages in plan for _, _, keys in stages)
        for pass_index, stages in plan:
            renders_key = f"pass{pass_index}/renders"
            if pass_index > 0 and not state.is_done(renders_key):
                self.refresh_from_nerf(pass_index)
                state.mark_done(renders_key)
                self.save_state()
            todo = [(stage, cam_sets, keys) for stage, cam_sets, keys in stages
                    if not state.is_done(f"pass{pass_index}/{stage}")]
            # one editor process for all stages (loaded once) when each stage has one; else a pool per stage
            groups = [todo] if todo and all(len(sets) == 1 for _, sets, _ in todo) else [[s_] for s_ in todo]
            for group in groups:
                for stage, cam_sets, keys in group:
                    left = sum(1 for k in keys if not state.is_done(k))
                    log.info("pass %d, stage %s: %d of %d unit(s) to edit with %d editor process(es)", pass_index,
                             stage, left, len(keys), len(cam_sets))
                ranks = len(group[0][1])
                jobs = [tuple(self.job(stage, pass_index, cam_sets[rank], rank) for stage, cam_sets, _ in group)
                        for rank in range(ranks)]
                stage_start = time.monotonic()
                pool = EditorPool(run_editor, self.scene.images, jobs, lock=self.lock).start()
                try:
                    self.fit_while_editing(pool)
                finally:
                    pool.shutdown()
                    self.take_notes(pool)
                    self.timing["editing stages (wall)"] += time.monotonic() - stage_start
                for stage, _, keys in group:
                    missing = [k for k in keys if not state.is_done(k)]
                    if missing:
                        raise EditorFailed(f"stage {stage} of pass {pass_index} ended with {len(missing)} unit(s) "
                                           f"not done, e.g. {missing[0]}")
                    state.mark_done(f"pass{pass_index}/{stage}")
                self.save_state()

    def run(self) -> int:
        args = self.args
        started = time.monotonic()
        self.setup()
        self.timing["setup (scene, NeRF, depth renders)"] = time.monotonic() - started
        self.lock = torch.multiprocessing.get_context("spawn").Lock()
        trainer = self.trainer
        self.bar = tqdm(initial=trainer.iteration, total=trainer.settings.n_iters, position=0, dynamic_ncols=True,
                        desc="NeRF")
        try:
            try:
                done_before = len(self.state.done)
                self.edit()
                # the edit ended now if this run edited anything (a resume may add passes to a finished edit)
                if "edit_end" not in self.state.info or len(self.state.done) > done_before:
                    self.state.info["edit_end"] = trainer.iteration
                    self.save_state()
                target = max(trainer.settings.n_iters, self.state.info["edit_end"] + args.post_edit_iters)
                self.bar.total = target
                start = time.monotonic()
                while trainer.iteration < target:
                    self.step()
                self.timing["NeRF iterations after the edit"] += time.monotonic() - start
            except KeyboardInterrupt as err:
                raise Interrupted from err
        except (EditorFailed, Interrupted) as err:
            self.bar.close()
            trainer.close()
            path = trainer.save()
            self.save_state()
            saved = f"checkpoint {path}, " if path else ""
            again = ("the same command plus --resume" if self.run_dir.name == self.args.expname else
                     f"the same command plus --resume --expname {self.run_dir.name}")  # a timestamped run's name
            resume = f"resume with {again} ({saved}edit state in {self.run_dir})"
            if isinstance(err, Interrupted):
                log.warning("interrupted: %s", resume)
                return 130
            log.error("%s\nthe NeRF and the edit so far are saved; %s", err, resume)
            return 1
        except Exception:  # the trainer itself failed (e.g. out of memory): keep what is done, then report
            self.bar.close()
            trainer.close()
            trainer.save()
            self.save_state()
            raise
        self.bar.close()
        trainer.close()
        trainer.save()
        self.save_state()
        start = time.monotonic()
        self.write_outputs()
        self.timing["final renders and videos"] = time.monotonic() - start
        self.timing["total"] = time.monotonic() - started
        self.report_timing()
        return 0

    def report_timing(self) -> None:
        """Where the wall time went (also ``timing.json`` in the run directory): the editor processes' own work
        against everything around it."""
        t = dict(self.timing)
        t["editor processes: loading models (max)"] = max((s.get("load_s") or 0.0 for s in self.editor_stats),
                                                           default=0.0)
        t["editor processes: editing (sum of stages)"] = sum(s.get("edit_s") or 0.0 for s in self.editor_stats)
        (self.run_dir / "timing.json").write_text(json.dumps({k: round(v, 2) for k, v in t.items()}, indent=2) + "\n")
        log.info("wall time: %s", "; ".join(f"{k} {v:.1f} s" for k, v in t.items()))

    # -- outputs -----------------------------------------------------------------------------------------------
    def write_outputs(self) -> None:
        """Test-view and spiral-path renders and videos of the edited NeRF; original | edited side by side."""
        args, scene, field = self.args, self.scene, self.trainer.field
        test_dir = self.run_dir / "imgs_test_all"
        render_test_views(field, self.trainer.sampler, scene, test_dir, chunk=args.chunk, white_bg=args.white_bkgd)
        video = render_path_views(field, self.trainer.sampler, scene, self.run_dir / "imgs_path_all",
                                  views=args.path_views, chunk=args.chunk, white_bg=args.white_bkgd)
        for cam in scene.test_cams:
            name = f"cam{scene.cam_ids[cam]:02d}"
            frames = []
            for frame in range(scene.num_frames):
                rendered = read_rgb(test_dir / name / "rgb" / f"{frame:03d}.png")
                original = to_uint8(scene.image(frame, cam, original=True))
                edited = to_uint8(scene.image(frame, cam))
                frames.append(np.concatenate([original, edited, rendered[..., :3]], axis=1))
            write_video(self.run_dir / f"side_by_side_{name}.mp4", frames)
        log.info("edited NeRF: %s (test views), %s (path), side_by_side_*.mp4 (original | edited images | NeRF)",
                 test_dir, video)
