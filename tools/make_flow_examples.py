"""Write the example inputs of test_flow.py, test_flow_sequence.py and test_depth.py from the synthetic scene.

Writes (small on purpose: they are committed):
    OUT/flow/frames/0.png ... N-1.png   N consecutive frames of one camera (128x96 RGB)
    OUT/depth/0.png, 1.png              frame 0 of two neighbouring cameras (64x48 RGB), views 0 and 1
    OUT/depth/pts_0.pt                  torch float16 [V, H, W, 3]: world point of every pixel of view v
    OUT/depth/warp_0.pt                 torch float16 [V, V, H, W, 2]: warp[s][t][y, x] = (x, y) pixel index
                                        coordinates in view s of the point target view t shows at pixel (x, y)
    OUT/depth/depth_0.npy               float32 [V, H, W] z-depth of each view (world units)
    OUT/depth/cameras.npz               c2w [V, 4, 4] (OpenGL camera-to-world), K [V, 3, 3], height, width

Pixel index coordinates put pixel (i, j)'s centre at (i, j); world and cameras are those of
``tools/make_synthetic_scene.py`` (see ``dataloader/cameras.py``).

Usage:
    python tools/make_flow_examples.py examples
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloader.cameras import project_points, unproject_depth
from tools.make_synthetic_scene import make_synthetic_scene

log = logging.getLogger(__name__)


def write_flow_examples(out: Path, frames: int = 5, width: int = 128, height: int = 96, cam: int = 0) -> Path:
    """``frames`` consecutive frames of camera ``cam`` as ``out/flow/frames/<k>.png``; returns the folder."""
    import imageio.v3 as iio

    with tempfile.TemporaryDirectory() as tmp:
        scene = make_synthetic_scene(Path(tmp) / "scene", cams=cam + 1, frames=frames, width=width, height=height,
                                     videos=False)
        folder = out / "flow" / "frames"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(frames):
            iio.imwrite(folder / f"{k}.png", iio.imread(scene / "frames" / f"cam{cam:02d}" / f"{k + 1:06d}.png"))
        for stale in folder.glob("*.png"):  # frames of an earlier, longer run of this tool
            if stale.stem.isdigit() and int(stale.stem) >= frames:
                stale.unlink()
    return folder


def view_maps(depth: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> tuple[Tensor, Tensor]:
    """World points ``[V, H, W, 3]`` of each view and the pixel maps ``[V, V, H, W, 2]`` between views."""
    V = depth.shape[0]
    points = torch.stack([unproject_depth(torch.from_numpy(depth[v]).float(), torch.from_numpy(K[v]).float(),
                                          torch.from_numpy(c2w[v]).float()) for v in range(V)])
    maps = torch.zeros(V, V, *depth.shape[1:], 2)
    for s in range(V):
        for t in range(V):
            maps[s, t] = project_points(points[t], torch.from_numpy(K[s]).float(), torch.from_numpy(c2w[s]).float())[0]
    return points, maps


def write_depth_examples(out: Path, width: int = 64, height: int = 48, cams: tuple[int, int] = (0, 1)) -> Path:
    """Two views of frame 0 with points, pixel maps, depth and cameras in ``out/depth``; returns the folder."""
    import imageio.v3 as iio

    with tempfile.TemporaryDirectory() as tmp:
        scene = make_synthetic_scene(Path(tmp) / "scene", cams=max(cams) + 2, frames=1, width=width, height=height,
                                     videos=False)
        folder = out / "depth"
        folder.mkdir(parents=True, exist_ok=True)
        for v, cam in enumerate(cams):
            iio.imwrite(folder / f"{v}.png", iio.imread(scene / "frames" / f"cam{cam:02d}" / "000001.png"))
        depth = np.load(scene / "gt" / "depth.npy")[0, list(cams)].astype(np.float32)
        cameras = np.load(scene / "gt" / "cameras.npz")
        c2w, K = cameras["c2w"][list(cams)], cameras["K"][list(cams)]
    points, maps = view_maps(depth, c2w, K)
    torch.save(points.half().clone(), folder / "pts_0.pt")
    torch.save(maps.half().clone(), folder / "warp_0.pt")
    np.save(folder / "depth_0.npy", depth)
    np.savez(folder / "cameras.npz", c2w=c2w, K=K, height=height, width=width)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, nargs="?", default=Path("examples"), help="examples folder")
    parser.add_argument("--frames", type=int, default=5, help="frames of the flow sequence")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    flow_dir = write_flow_examples(args.out, frames=args.frames)
    depth_dir = write_depth_examples(args.out)
    total = sum(p.stat().st_size for d in (flow_dir, depth_dir) for p in d.iterdir())
    print(f"wrote {flow_dir} and {depth_dir} ({total / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
