"""Write ``configs/n3dv/{train,edit}_*.txt`` from the table of the release's config values.

The table (``../shared/spec/release-configs.tsv``) lists, for every config file of the public release, the values
that differ between files; its header comment lists the values every file shares. This tool writes one config per
row with those values, plus the project's own choices, which the README documents:
- ``datadir = ./data/neural_3d/<scene folder>``, ``basedir = ./log/neural_3d``, ``expname`` = the file name and
  ``add_timestamp = 0``, so the README's paths (``log/neural_3d/train_coffee_50_2/ckpt-*.th``) hold;
- ``skip_cams = [12]`` for coffee_martini (its camera 12 is not synchronized);
- an edit config's ``ckpt`` is the matching training run directory (its latest checkpoint is used).

Usage:
    python tools/make_release_configs.py [--table ../shared/spec/release-configs.tsv] [--out configs/n3dv]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = ROOT.parent / "shared" / "spec" / "release-configs.tsv"

SHARED = {  # the values every release config has (the table's header comment)
    "dataset_name": "n3dv_dynamic", "ndc_ray": "1", "batch_size": "4096", "N_voxel_init": "2097156",
    "update_AlphaMask_list": "[-1]", "N_vis": "-1", "render_test": "1", "render_path": "1",
    "n_lamb_sigma": "[16,4,4]", "n_lamb_sh": "[48,12,12]", "shadingMode": "MLP_Fea", "fea2denseAct": "relu",
    "view_pe": "0", "fea_pe": "0", "TV_weight_density": "1.0", "TV_weight_app": "1.0",
}
EDITING = """
# editing (the release's keys and values)
prompt = What if it was painted by Van Gogh?
guidance_scale = 9.5
image_guidance_scale = 1.5
diffusion_steps = 20
sequence_length = 6
keyframe_rounds = 12
warp_ratio = 0.5
refine_num_steps = 600
refine_diffusion_steps = 4
restview_refine_num_steps = 700
restview_refine_diffusion_steps = 6
edit_schedule = keyframe
"""
VOXELS = {"2097156": "128**3 + 4", "16777216": "256**3", "262144000": "640**3", "512000000": "800**3"}


def read_table(path: Path) -> list[dict[str, str]]:
    """Rows of the table (comment lines skipped), keyed by its header."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


def frame_list(value: str) -> list[int] | None:
    """``a..b`` -> the 0-based frames a to b; ``-`` -> None."""
    if value == "-":
        return None
    start, end = (int(v) for v in value.split(".."))
    return list(range(start, end + 1))


def train_name(edit_file: str) -> str:
    return "train_" + edit_file.removeprefix("edit_").removesuffix(".txt")


def config_text(row: dict[str, str]) -> str:
    """One config file's text for a row of the table."""
    name = row["file"].removesuffix(".txt")
    editing = name.startswith("edit_")
    scene = row["datadir_scene"]
    frames = frame_list(row["frame_list"])
    what = f"{row['num_frames']} frames at 1/{float(row['downsample_train']):g} resolution"
    header = (f"# Edit the 4D NeRF of DyNeRF {scene}: {what} (the release's values). Needs the NeRF from "
              f"{train_name(row['file'])}.txt." if editing else
              f"# Fit the 4D NeRF to DyNeRF {scene}: {what} (the release's values).")
    lines = [header, "# Written by tools/make_release_configs.py from ../shared/spec/release-configs.tsv.",
             f"dataset_name = {SHARED['dataset_name']}", f"datadir = ./data/neural_3d/{scene}", f"expname = {name}"]
    if editing:
        lines.append(f"ckpt = ./log/neural_3d/{train_name(row['file'])} # the training run: its latest checkpoint")
    lines += ["basedir = ./log/neural_3d", "add_timestamp = 0"]
    if scene == "coffee_martini":
        lines.append("skip_cams = [12] # cam12 of coffee_martini is not synchronized")
    lines += ["", f"downsample_train = {row['downsample_train']}", f"ndc_ray = {SHARED['ndc_ray']}",
              f"num_frames = {row['num_frames']}"]
    if frames is not None:
        lines.append(f'frame_list = "{",".join(str(f) for f in frames)}" # {frames[0]}..{frames[-1]}')
    lines.append(f"ld_per_frame = {row['ld_per_frame']}")
    lines += ["", f"n_iters = {row['n_iters']}", f"batch_size = {SHARED['batch_size']}", "",
              f"N_voxel_init = {SHARED['N_voxel_init']} # {VOXELS[SHARED['N_voxel_init']]}",
              f"N_voxel_final = {row['N_voxel_final']} # {VOXELS.get(row['N_voxel_final'], '')}".rstrip(" #"),
              f"upsamp_list = {row['upsamp_list']}" + (" # ignored when editing: the grid stays the checkpoint's"
                                                         if editing else ""),
              f"update_AlphaMask_list = {SHARED['update_AlphaMask_list']}", "",
              f"N_vis = {SHARED['N_vis']} # render every test frame", f"vis_every = {row['vis_every']}", "",
              f"render_test = {SHARED['render_test']}", f"render_path = {SHARED['render_path']}", ""]
    lines += [f"{key} = {SHARED[key]}" for key in ("n_lamb_sigma", "n_lamb_sh", "shadingMode", "fea2denseAct",
                                                  "view_pe", "fea_pe", "TV_weight_density", "TV_weight_app")]
    text = "\n".join(lines) + "\n"
    return text + EDITING if editing else text


def write_configs(table: Path, out: Path) -> list[Path]:
    """Write every row's config into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for row in read_table(table):
        path = out / row["file"]
        path.write_text(config_text(row))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="the release's config table (TSV)")
    parser.add_argument("--out", type=Path, default=ROOT / "configs" / "n3dv", help="folder of the configs")
    args = parser.parse_args(argv)
    if not args.table.is_file():
        print(f"make_release_configs: table {args.table} not found: pass --table", file=sys.stderr)
        return 2
    written = write_configs(args.table, args.out)
    print(f"wrote {len(written)} configs into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
