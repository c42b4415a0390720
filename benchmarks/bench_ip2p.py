"""IP2P editing cost per edited frame: plain per-frame IP2P vs anchor-aware sequences of several lengths.

For each mode, edits the same frames (the bundled example sequence, repeated to --frames) and prints wall time and
UNet evaluations per edited frame and peak memory over the idle model (CUDA: allocated; CPU: process RSS, sampled).
Anchor-aware batches of length L >= 2 repeat the anchor in every batch after the first: F frames take
``ceil((F - 1) / (L - 1))`` batches and ``F + batches - 1`` frame evaluations per step and guidance branch.

Usage:
    python benchmarks/bench_ip2p.py                                   # tiny random model, CPU, 12 frames 64x64
    python benchmarks/bench_ip2p.py --arch sd15 --size 256 --steps 2  # SD 1.5 architecture, random weights
    python benchmarks/bench_ip2p.py --ip2p_model timbrooks/instruct-pix2pix --device cuda --size 512
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "What if it was painted by Van Gogh?"


class PeakMemory:
    """Peak memory in bytes above the level at entry: CUDA allocated memory, or the process RSS sampled every 2 ms."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            import psutil

            self.process = psutil.Process()
            self.base = self.process.memory_info().rss
            self.running = True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss - self.base)
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.running = False
            self.thread.join()


def build_editor(args: argparse.Namespace):
    """The editor: real or local weights with --ip2p_model, else a random pipeline of --arch built in memory."""
    from ip2p_models import IP2PEditor, load_ip2p
    from ip2p_models.loading import check_device, ip2p_dtype

    if args.ip2p_model:
        return load_ip2p(args.ip2p_model, device=args.device, full_precision=args.full_precision,
                         attention_slicing=args.attention_slicing)
    from ip2p_models.tiny import tiny_ip2p_pipeline

    device = check_device(args.device)
    pipe = tiny_ip2p_pipeline(seed=0, full_size=args.arch == "sd15").to(device)
    if ip2p_dtype(device, args.full_precision) != torch.float32:
        pipe.to(dtype=ip2p_dtype(device, args.full_precision))
    return IP2PEditor(pipe, device, attention_slice=1 if args.attention_slicing else None)


def load_frames(count: int, size: int) -> torch.Tensor:
    """``[count, 3, h, w]``: the example sequence (repeated as needed) with its long side resized to ``size``."""
    from ip2p_models.image_io import fit_size, list_images, read_image, resize

    files = list_images(ROOT / "examples" / "ip2p" / "sequence")
    frames = torch.stack([read_image(files[k % len(files)]) for k in range(count)])
    return resize(frames, fit_size(*frames.shape[-2:], size, multiple=8))


def run_mode(editor, frames: torch.Tensor, length: int | None, args: argparse.Namespace) -> dict:
    """Best-of-repeats time, UNet evaluations and peak memory of editing ``frames`` (length None: per-frame)."""
    edit = dict(guidance_scale=10.5, image_guidance_scale=1.5, diffusion_steps=args.steps, T=args.T, init=args.init,
                seed=0)
    times, peak = [], 0
    for _ in range(args.repeats):
        evals = editor.unet_evals
        with PeakMemory(editor.device) as memory:
            start = time.perf_counter()
            if length is None:
                for frame in frames:
                    editor.edit_image(frame, frame, PROMPT, **edit)
            else:
                editor.edit_sequence(frames, frames, PROMPT, sequence_length=length, **edit)
            if editor.device.type == "cuda":
                torch.cuda.synchronize(editor.device)
            times.append(time.perf_counter() - start)
        peak = max(peak, memory.peak)
        evals = editor.unet_evals - evals
    return {"seconds": min(times), "evals": evals, "peak": peak}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ip2p_model", default=None, help="weights (folder or hub id); default: random --arch")
    parser.add_argument("--arch", choices=("tiny", "sd15"), default="tiny",
                        help="random-weight architecture when no --ip2p_model: tiny, or SD 1.5's (the real size)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device")
    parser.add_argument("--full_precision", action="store_true", help="fp32 on CUDA too")
    parser.add_argument("--attention_slicing", action="store_true", help="self-attention one batch item at a time")
    parser.add_argument("--frames", type=int, default=12, help="frames to edit")
    parser.add_argument("--size", type=int, default=64, help="long side of the frames in pixels")
    parser.add_argument("--steps", type=int, default=20, help="diffusion steps")
    parser.add_argument("--init", choices=("noise", "noisy_latent", "ddim_inv"), default="noise", help="start point")
    parser.add_argument("--T", type=int, default=600, help="noise level for --init noisy_latent / ddim_inv")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1, 3, 6, 12], help="anchor-aware sequence lengths")
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode (the fastest is reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    # 1. model and frames; one warm-up edit
    editor = build_editor(args)
    frames = load_frames(args.frames, args.size)
    editor.edit_sequence(frames[:2], frames[:2], PROMPT, diffusion_steps=1, seed=0)
    name = args.ip2p_model or f"random {args.arch}"
    device = torch.cuda.get_device_name(editor.device) if editor.device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"IP2P {name} ({str(editor.dtype).removeprefix('torch.')}) on {device}: {args.frames} frames "
          f"{frames.shape[-1]}x{frames.shape[-2]}, {args.steps} steps, init {args.init}, best of {args.repeats}")

    # 2. each mode
    modes = [("per-frame IP2P", None)] + [(f"anchor-aware, length {n}", n) for n in args.lengths]
    memory = "peak CUDA MiB" if editor.device.type == "cuda" else "peak RSS MiB"
    print(f"| {'mode':<24} | {'s/frame':>8} | {'UNet evals/frame':>16} | {'total s':>8} | {memory:>13} |")
    print(f"|{'-' * 26}|{'-' * 9}:|{'-' * 17}:|{'-' * 9}:|{'-' * 14}:|")
    for label, length in modes:
        result = run_mode(editor, frames, length, args)
        print(f"| {label:<24} | {result['seconds'] / args.frames:8.3f} | {result['evals'] / args.frames:16.1f} | "
              f"{result['seconds']:8.2f} | {result['peak'] / 2**20:13.1f} |", flush=True)


if __name__ == "__main__":
    main()
