"""The checks only a GPU shows, in one run of under 8 minutes on one GPU, no network; prints one table.

1. Fitting at the release's grid: a coffee-sized synthetic scene (676x507, the DyNeRF coffee_martini frames at 1/4)
   with the grid at 640^3 from the start, dense against fast sampling: s/iteration and peak CUDA memory; then one
   test view of the fast fit rendered dense and fast (s/frame, PSNR between them).
2. Anchor-aware editing in fp16 with the real model's architecture (Stable Diffusion 1.5 UNet, VAE and CLIP with
   random weights, no download): 6-frame sequences at 512x384, 20 steps: s/frame and peak CUDA memory.
3. A short two-process edit (``stream_edit.py`` machinery) with the trainer and the editor process on the one GPU:
   the mini InstructPix2Pix on the synthetic demo scene; wall time and its breakdown.

    bash benchmarks/gpu_check.sh                       # on the GPU machine (cuda:0)
    python benchmarks/gpu_check.py --dry_run           # the same plumbing on the CPU at toy sizes (tests it)
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataloader import load_scene  # noqa: E402
from dataloader.synthetic_render import make_synthetic_scene  # noqa: E402
from models import FitSettings, Trainer, build_sampler, field_from_args, render_image  # noqa: E402
from models.config import parse_args  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def peak_mib(device: str) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.startswith("cuda") else float("nan")


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def check_fitting(out: Path, device: str, dry: bool) -> list[tuple[str, str, str]]:
    size = (64, 48) if dry else (676, 507)
    scene_dir = out / f"scene_{size[0]}x{size[1]}"
    if not (scene_dir / "poses_bounds.npy").exists():
        make_synthetic_scene(scene_dir, cams=4, frames=6, width=size[0], height=size[1], videos=False)
    scene = load_scene("synthetic", scene_dir, ndc=True)
    voxels = 24**3 if dry else 640**3
    iters = 20 if dry else 1000
    rows = []
    for mode in ("dense", "fast"):
        args = parse_args(["--config", str(ROOT / "configs/n3dv/train_coffee_300_4.txt"), "--datadir",
                           str(scene_dir), "--dataset_name", "synthetic", "--num_frames", "6", "--device", device,
                           "--N_voxel_init", str(voxels), "--N_voxel_final", str(voxels), "--n_iters", str(iters),
                           "--sampling", mode, "--occupancy_warmup", str(iters // 10), "--vis_every", "100000"])
        args.upsamp_list = []
        reset_peak(device)
        torch.manual_seed(0)
        trainer = Trainer(field_from_args(args, scene), scene, FitSettings.from_args(args), device=device,
                          tensorboard=False)
        warm = iters // 5
        for _ in range(warm):
            trainer.step()
        sync(device)
        start = time.perf_counter()
        for _ in range(iters - warm):
            trainer.step()
        sync(device)
        per_it = (time.perf_counter() - start) / (iters - warm)
        rows.append((f"fit {mode}, {round(voxels ** (1 / 3))}^3 grid, {size[0]}x{size[1]}, batch 4096",
                     f"{per_it:.3f} s/it", f"{peak_mib(device):.0f} MiB"))
        if mode == "fast":
            rows += check_renders(trainer, device)
        del trainer
    return rows


def check_renders(trainer, device: str) -> list[tuple[str, str, str]]:
    """One test view of the fitted field: dense (the release's), fast with the all-times grid and the field's own
    lookups (a 640^3 node volume is over the default 512 MiB), fast with the frame's node volume (2 GiB allowed)."""
    scene, cam = trainer.scene, trainer.scene.test_cams[0]
    samplers = [("dense", build_sampler("dense", scene.ndc)),
                ("fast, all-times grid", build_sampler("fast", scene.ndc, render_volume_mib=0)),
                ("fast, time volume", build_sampler("fast", scene.ndc, render_volume_mib=2048))]
    rows, reference = [], None
    for name, sampler in samplers:
        render_image(trainer.field, sampler, scene, 0, cam)  # warm-up, and the volume of that time
        reset_peak(device)
        sync(device)
        start = time.perf_counter()
        rgb = render_image(trainer.field, sampler, scene, 1, cam)["rgb"].float().cpu()
        sync(device)
        seconds = time.perf_counter() - start
        match = ""
        if reference is None:
            reference = rgb
        else:
            mse = torch.mean((rgb - reference) ** 2).item()
            match = f", {-10 * math.log10(max(mse, 1e-20)):.1f} dB vs dense"
        rows.append((f"render {name}, {scene.width}x{scene.height}, {trainer.field.n_samples_full} samples/ray",
                     f"{seconds:.2f} s/frame{match}", f"{peak_mib(device):.0f} MiB"))
    return rows


def check_editing(device: str, dry: bool) -> list[tuple[str, str, str]]:
    from ip2p_models import IP2PEditor
    from ip2p_models.loading import ip2p_dtype
    from ip2p_models.tiny import tiny_ip2p_pipeline

    width, height, frames = (64, 48, 6) if dry else (512, 384, 6)
    pipe = tiny_ip2p_pipeline(seed=0, full_size=not dry).to(device)
    dtype = ip2p_dtype(torch.device(device), False)
    pipe.to(dtype=dtype)
    editor = IP2PEditor(pipe, device)
    images = torch.rand(frames, 3, height, width)
    rows = []
    for length, label in ((frames, "anchor-aware sequence of 6"), (1, "per frame")):
        reset_peak(device)
        editor.edit_sequence(images, images, "make it snowy", diffusion_steps=2, sequence_length=length, seed=0)
        sync(device)
        start = time.perf_counter()
        editor.edit_sequence(images, images, "make it snowy", diffusion_steps=20, sequence_length=length, seed=0)
        sync(device)
        seconds = (time.perf_counter() - start) / frames
        arch = "tiny" if dry else "SD 1.5 architecture"
        rows.append((f"edit {label}, {arch} ({str(dtype).replace('torch.', '')}), {width}x{height}, 20 steps",
                     f"{seconds:.2f} s/frame", f"{peak_mib(device):.0f} MiB"))
    del editor, pipe
    return rows


def check_two_process_edit(out: Path, device: str, dry: bool) -> list[tuple[str, str, str]]:
    import stream_train
    from editing.options import parse_edit_args
    from editing.run import EditRun

    scene_dir = out / "demo_scene"
    if not (scene_dir / "poses_bounds.npy").exists():
        make_synthetic_scene(scene_dir, frames=4 if dry else 12, width=48 if dry else 160, height=36 if dry else 120,
                             cams=3 if dry else 6, videos=False)
    log = out / "log"
    nerf = log / "nerf"
    if not list(nerf.glob("ckpt-*.th")):
        assert stream_train.main(["--config", str(ROOT / "configs/synthetic/train_demo.txt"), "--datadir",
                                  str(scene_dir), "--basedir", str(log), "--expname", "nerf", "--device", device,
                                  "--n_iters", "30" if dry else "600", "--render_test", "0", "--render_path",
                                  "0"]) == 0
    shutil.rmtree(log / "edit", ignore_errors=True)
    argv = ["--config", str(ROOT / "configs/synthetic/edit_demo.txt"), "--datadir", str(scene_dir), "--basedir",
            str(log), "--expname", "edit", "--ckpt", str(nerf), "--device", device, "--ip2p_device", device,
            "--n_iters", "20" if dry else "300", "--post_edit_iters", "10" if dry else "100", "--path_views", "2",
            "--preview_every", "0", "--diffusion_steps", "2" if dry else "20", "--keyframe_rounds",
            "1" if dry else "4"]
    start = time.perf_counter()
    assert EditRun(parse_edit_args(argv)).run() == 0
    wall = time.perf_counter() - start
    timing = json.loads((log / "edit" / "timing.json").read_text())
    editing = timing.get("editor processes: editing (sum of stages)", float("nan"))
    return [("two-process edit on one device (mini IP2P, keyframe schedule)", f"{wall:.0f} s wall",
             f"editor's own {editing:.0f} s")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu_check")
    parser.add_argument("--dry_run", action="store_true", help="CPU, toy sizes: checks the script itself")
    parser.add_argument("--parts", default="fit,edit,two_process")
    opts = parser.parse_args(argv)
    device = "cpu" if opts.dry_run else opts.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; run it on the GPU machine or pass --dry_run")
    opts.out.mkdir(parents=True, exist_ok=True)
    rows = []
    parts = opts.parts.split(",")
    started = time.perf_counter()
    if "fit" in parts:
        rows += check_fitting(opts.out, device, opts.dry_run)
    if "edit" in parts:
        rows += check_editing(device, opts.dry_run)
    if "two_process" in parts:
        rows += check_two_process_edit(opts.out, device, opts.dry_run)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU (dry run)"
    print(f"\n{name}, torch {torch.__version__}, {time.perf_counter() - started:.0f} s in all:\n")
    print("| check | speed | memory / note |\n|---|--:|--:|")
    for check, speed, memory in rows:
        print(f"| {check} | {speed} | {memory} |")


if __name__ == "__main__":
    main()
