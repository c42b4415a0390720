"""Score an edit's run directory (``tools/evaluate_edit.py``): the edited dataset, the edited NeRF's renders, and
as floors the original frames and the original NeRF's renders, with the metrics of :mod:`editing.evaluation`.

Writes ``RUN_DIR/eval/``: ``metrics.json`` (every figure, per-frame errors included), ``metrics.md`` (the table),
``per_frame.png`` (temporal error of each frame pair), and caches (``renders_*.npy``, ``depth/``) that a rerun reuses
while the checkpoints are unchanged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from common.atomic import atomic_write
from common.image_io import to_uint8
from dataloader import load_scene
from ip2p_models.instructions import find_instruction
from models import load_checkpoint, render_image
from models.checkpoint import latest_checkpoint
from models.config import ConfigError
from runner.start import render_sampler

from .evaluation import (
    NO_CLIP,
    ClipScorer,
    Depths,
    EvaluationError,
    TemporalFlow,
    clip_scores,
    cross_view_errors,
    estimated_flow,
    fidelity,
    ground_truth_flow,
    nearest_camera_pairs,
    preservation,
    temporal_warp_errors,
)
from .state import IMAGES_FILE, STATE_FILE

log = logging.getLogger(__name__)

COLUMNS = [
    ("temporal_error", "temporal warp error ↓"),
    ("cross_view_error", "cross-view error ↓"),
    ("psnr_vs_original", "PSNR vs original"),
    ("ssim_vs_original", "SSIM vs original"),
    ("fidelity_psnr", "fidelity PSNR ↑"),
    ("clip_text_image", "CLIP text-image ↑"),
    ("clip_direction", "CLIP direction ↑"),
]


@dataclass
class EvalOptions:
    """What :func:`evaluate_run` scores and with what (``tools/evaluate_edit.py``'s flags)."""

    datadir: str | None = None
    reference: str | None = None  # the original NeRF: a training run directory or a checkpoint
    flow: str = "auto"  # gt, dis, raft; auto: gt when the scene has it, else dis
    raft_ckpt: str | None = None
    clip_model: str | None = None
    source_caption: str | None = None
    target_caption: str | None = None
    renders: str = "all"  # all: every camera; test: the test cameras; none: no NeRF renders
    clip_frames: int = 8
    neighbours: int = 2
    device: str = "cpu"
    out: str | None = None  # default RUN_DIR/eval
    extra: dict = field(default_factory=dict)


def edit_args(run_dir: Path, datadir: str | None, device: str = "cpu"):
    """The edit's options, read back from its ``config.txt`` (with ``--datadir`` overriding the saved one, and the
    devices set to the scoring's ``device``: the edit's GPUs need not exist where it is scored)."""
    from editing.options import parse_edit_args

    config = run_dir / "config.txt"
    if not config.is_file():
        raise EvaluationError(f"{run_dir} has no config.txt: pass the run directory stream_edit.py wrote")
    # --resume: a run's config.txt does not record its checkpoint (edit_state.json does); only the options are read
    argv = (["--config", str(config), "--resume", "--device", device, "--ip2p_device", device]
            + (["--datadir", datadir] if datadir else []))
    try:
        return parse_edit_args(argv)
    except ConfigError as err:
        raise EvaluationError(f"{config}: {err}") from err


def captions(prompt: str, source: str | None, target: str | None) -> tuple[str, str]:
    """Source and target captions: given ones, else the procedural instruction's, else ``a photo`` / the prompt."""
    instruction = find_instruction(prompt)
    default_source = instruction.source_caption if instruction else "a photo"
    default_target = instruction.target_caption if instruction else prompt
    return source or default_source, target or default_target


@torch.no_grad()
def render_all(ckpt: Path, scene, args, cams: list[int], cache: Path) -> np.ndarray:
    """uint8 ``[F, C, H, W, 3]`` renders of ``cams`` (other cameras black) by the checkpoint, cached in ``cache``."""
    stat = ckpt.stat()
    identity = {"ckpt": str(ckpt.resolve()), "size": stat.st_size, "mtime": int(stat.st_mtime), "cams": cams,
                "shape": list(scene.images.shape)}
    meta = cache.with_suffix(".json")
    if cache.is_file() and meta.is_file() and json.loads(meta.read_text()) == identity:
        return np.load(cache)
    field_, _ = load_checkpoint(ckpt, device=args.device, model_name=args.model_name,
                                config={"num_frames": scene.num_frames, "ld_per_frame": args.ld_per_frame})
    sampler = render_sampler(args, scene.ndc)
    out = np.zeros(scene.images.shape, np.uint8)
    for f in tqdm(range(scene.num_frames), desc=f"renders of {ckpt.name}", leave=False):
        for c in cams:
            rgb = render_image(field_, sampler, scene, f, c, chunk=args.chunk, white_bg=args.white_bkgd)["rgb"]
            out[f, c] = to_uint8(rgb)
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cache, lambda handle: np.save(handle, out))
    atomic_write(meta, lambda handle: handle.write(json.dumps(identity).encode()))
    return out


def scene_depths(scene, original_ckpt: Path | None, args, cache: Path) -> Depths:
    """Ground-truth depth when the scene has it, else the original NeRF's rendered depth (cached)."""
    if scene.gt is not None and "depth" in scene.gt:
        depth = scene.gt["depth"] * scene.scale  # source units, as the ground-truth cameras
        return Depths(lambda f: depth[f], scene.gt["K"], scene.gt["c2w_source"], False, "ground truth")
    if original_ckpt is None:
        raise EvaluationError("the scene has no ground-truth depth and no original NeRF is known: pass --reference "
                              "with the training run (or checkpoint) the edit started from")
    from .depth_cache import DepthCache, load_depth

    field_, _ = load_checkpoint(original_ckpt, device=args.device, model_name=args.model_name,
                                config={"num_frames": scene.num_frames, "ld_per_frame": args.ld_per_frame})
    depth_cache = DepthCache(cache, original_ckpt, scene, field_, render_sampler(args, scene.ndc), args.chunk)
    return Depths(lambda f: load_depth(depth_cache.ensure([f])[0]), scene.K, scene.c2w, bool(scene.ndc),
                  f"depth rendered by {original_ckpt}")


def temporal_flow(scene, options: EvalOptions) -> TemporalFlow:
    name = options.flow
    has_gt = scene.gt is not None and "flow_fw" in scene.gt
    if name == "auto":
        name = "gt" if has_gt else "dis"
    if name == "gt":
        if not has_gt:
            raise EvaluationError("--flow gt: the scene has no ground-truth flow (only tools/make_synthetic_scene.py "
                                  "scenes loaded whole at their size do); use --flow dis or raft")
        return ground_truth_flow(scene.gt)
    from ip2p_models.flow import make_flow

    try:
        flow_fn = make_flow(name, options.raft_ckpt, device=options.device)
    except (ValueError, FileNotFoundError) as err:
        raise EvaluationError(f"--flow {name}: {err}") from err
    return estimated_flow(scene.original.numpy(), flow_fn, name)


def score(images: np.ndarray, original: np.ndarray, cams: list[int], flow: TemporalFlow, flow_cache: dict,
          depths: Depths, pairs: list[tuple[int, int]], target_fn, clip: ClipScorer | None,
          caption_pair: tuple[str, str], clip_frames: int) -> dict:
    """Every metric of one image set (only ``cams`` are scored)."""
    sub, sub_original = images[:, cams], original[:, cams]
    temporal = temporal_warp_errors(images, flow, cams, flow_cache)[:, cams]
    usable = [(i, j) for i, j in pairs if i in cams and j in cams]
    cross = cross_view_errors(images, depths, usable) if usable else np.full((images.shape[0], 0), np.nan)
    row = {
        "temporal_error": float(np.nanmean(temporal)) if np.isfinite(temporal).any() else float("nan"),
        "temporal_per_pair": np.nanmean(temporal, axis=1).tolist() if temporal.size else [],
        "cross_view_error": float(np.nanmean(cross)) if np.isfinite(cross).any() else float("nan"),
        "cross_view_per_frame": np.nanmean(cross, axis=1).tolist() if cross.size else [],
        **preservation(sub, sub_original),
        "fidelity_psnr": fidelity(sub, sub_original, target_fn) if target_fn is not None else "no procedural target",
        **clip_scores(clip, sub, sub_original, *caption_pair, frames=clip_frames),
        "cameras": cams,
    }
    return row


def find_reference(given: str | None, recorded: str | None) -> Path | None:
    """The original NeRF's checkpoint: ``--reference`` (a run directory or a file; an error when it holds none),
    else the checkpoint the edit recorded (None, with a warning, when it is gone)."""
    for source, must in ((given, True), (recorded, False)):
        if not source:
            continue
        path = Path(source)
        ckpt = latest_checkpoint(path) if path.is_dir() else path if path.is_file() else None
        if ckpt is not None:
            return ckpt
        if must:
            raise EvaluationError(f"--reference {given}: no checkpoint there; pass the training run directory "
                                  "(or its ckpt-N.th) the edit started from")
        log.warning("the edit's original NeRF %s is gone: no original-NeRF row (pass --reference)", recorded)
    return None


def evaluate_run(run_dir: str | Path, options: EvalOptions) -> dict:
    """Score the edit in ``run_dir``; returns the report (also written to ``{out}/metrics.json`` and ``.md``)."""
    run_dir = Path(run_dir)
    # 1. the run: its edited dataset, options, checkpoints
    if not run_dir.is_dir():
        raise EvaluationError(f"run directory {run_dir} not found: pass the folder stream_edit.py wrote "
                              "(log/.../edit_{scene})")
    clip = ClipScorer(options.clip_model, options.device) if options.clip_model else None
    if not (run_dir / IMAGES_FILE).is_file():
        raise EvaluationError(f"{run_dir} holds no edit ({IMAGES_FILE} is missing): pass the run directory of a "
                              f"stream_edit.py run (a training run directory has no edit to score)")
    args = edit_args(run_dir, options.datadir, options.device)
    state = json.loads((run_dir / STATE_FILE).read_text()) if (run_dir / STATE_FILE).is_file() else {}
    edited = np.load(run_dir / IMAGES_FILE, mmap_mode="r")
    out = Path(options.out) if options.out else run_dir / "eval"

    # 2. the scene, checked against the run
    scene = load_scene(args.dataset_name, args.datadir, downsample=args.downsample_train,
                       num_frames=args.num_frames or None, frame_list=args.frame_list or None,
                       skip_cams=args.skip_cams, ndc=bool(args.ndc_ray), hold_out_test=bool(args.hold_out_test))
    if tuple(edited.shape) != tuple(scene.images.shape):
        raise EvaluationError(f"{run_dir / IMAGES_FILE} has shape {list(edited.shape)} (frames, cameras, H, W, 3) but "
                              f"the scene {args.datadir} loads as {list(scene.images.shape)}: pass --datadir with the "
                              "scene the edit was made on (and the run's frame options)")
    original = scene.original.numpy()

    # 3. the NeRFs: the edited one (latest checkpoint of the run) and the original one (--reference or the edit's)
    edited_ckpt = latest_checkpoint(run_dir)
    original_ckpt = find_reference(options.reference, state.get("info", {}).get("ckpt") or args.ckpt)

    # 4. what the metrics use: flow, depth, camera pairs, the target, CLIP
    flow = temporal_flow(scene, options)
    depths = scene_depths(scene, original_ckpt, args, out / "depth")
    # a monocular capture's cameras are not a rig: no cross-view pairs (its validation cameras are never edited)
    pairs = [] if scene.moving else nearest_camera_pairs(depths.c2w, options.neighbours)
    instruction = find_instruction(args.prompt)
    target_fn = instruction.reference if instruction is not None else None
    caption_pair = captions(args.prompt, options.source_caption, options.target_caption)

    # 5. the four image sets
    all_cams = list(range(scene.num_cams))
    data_cams = list(scene.train_cams) if scene.moving else all_cams
    render_cams = {"all": all_cams, "test": list(scene.test_cams), "none": []}[options.renders]
    sets = [("original frames", original, data_cams), ("edited dataset", edited, data_cams)]
    if render_cams and original_ckpt is not None:
        sets.insert(1, ("original NeRF", render_all(original_ckpt, scene, args, render_cams,
                                                    out / "renders_original.npy"), render_cams))
    if render_cams and edited_ckpt is not None:
        sets.append(("edited NeRF", render_all(edited_ckpt, scene, args, render_cams, out / "renders_edited.npy"),
                     render_cams))
    flow_cache: dict = {}
    rows = {}
    for name, images, cams in sets:
        log.info("scoring %s", name)
        rows[name] = score(images, original, cams, flow, flow_cache, depths, pairs, target_fn, clip, caption_pair,
                           options.clip_frames)

    report = {
        "run_dir": str(run_dir), "prompt": args.prompt, "scene": str(args.datadir),
        "shape": list(scene.images.shape), "flow": flow.source, "depth": depths.source,
        "camera_pairs": [list(p) for p in pairs], "instruction": instruction.name if instruction else None,
        "captions": {"source": caption_pair[0], "target": caption_pair[1]},
        "edited_ckpt": str(edited_ckpt) if edited_ckpt else None,
        "original_ckpt": str(original_ckpt) if original_ckpt else None, "rows": rows,
    }
    write_report(report, out)
    return report


def format_cell(value) -> str:
    """A metric for the table: "n/a" where there is nothing to score (e.g. cross-view without camera pairs)."""
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def markdown_table(report: dict) -> str:
    """The report's table: one row per image set, one column per metric."""
    lines = ["| images | " + " | ".join(title for _, title in COLUMNS) + " |",
             "|---|" + "--:|" * len(COLUMNS)]
    for name, row in report["rows"].items():
        lines.append(f"| {name} | " + " | ".join(format_cell(row.get(key, "")) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "metrics.json", lambda handle: handle.write(json.dumps(report, indent=1).encode()))
    text = (f"# Edit scores: {report['run_dir']}\n\nprompt: {report['prompt']!r}; scene {report['scene']} "
            f"{report['shape']}; flow: {report['flow']}; depth: {report['depth']}; captions: "
            f"{report['captions']['source']!r} -> {report['captions']['target']!r}\n\n{markdown_table(report)}\n\n"
            "Errors are mean absolute colour differences in [0, 1]; see the README's 'Scoring an edit'.\n"
            + ("" if report["camera_pairs"] else "No camera pairs (a single moving camera): no cross-view error.\n"))
    atomic_write(out / "metrics.md", lambda handle: handle.write(text.encode()))
    plot_per_frame(report, out / "per_frame.png")


def plot_per_frame(report: dict, path: Path) -> None:
    """Temporal warp error of each frame pair and cross-view error of each frame, one line per image set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for name, row in report["rows"].items():
        if row["temporal_per_pair"]:
            axes[0].plot(row["temporal_per_pair"], marker=".", label=name)
        if row["cross_view_per_frame"]:
            axes[1].plot(row["cross_view_per_frame"], marker=".", label=name)
    axes[0].set(title="temporal warp error (frame t+1 onto t)", xlabel="frame pair t", ylabel="mean |diff|")
    axes[1].set(title="cross-view reprojection error", xlabel="frame", ylabel="mean |diff|")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["NO_CLIP", "EvalOptions", "evaluate_run", "markdown_table"]
