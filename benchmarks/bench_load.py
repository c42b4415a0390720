"""Scene loading: time, peak RSS and bytes held per pixel, for the synthetic scene at two sizes.

Scenes are read with the DyNeRF reader (what real scenes use; the ground truth is left out).

Each load runs in a fresh process so its peak RSS is its own.

Usage:
    python benchmarks/bench_load.py [--out benchmarks/out/load] [--sizes 6x12x160x120 8x24x320x240]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time
import psutil, torch
sys.path.insert(0, sys.argv[1])
from dataloader import load_scene
base = psutil.Process().memory_info().rss
runs = []
for attempt in range(2):  # the second load reads the downsample cache when there is one
    start = time.perf_counter()
    scene = load_scene(sys.argv[3], sys.argv[2], downsample=float(sys.argv[4]))
    runs.append(time.perf_counter() - start)
    pixels = scene.images.shape[:4].numel()
    held = scene.nbytes()
    del scene
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(first_s=runs[0], second_s=runs[1], pixels=pixels, held=held, base_rss=base, peak_rss=peak)))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "load", help="scenes go here")
    parser.add_argument("--sizes", nargs="+", default=["6x12x160x120", "8x24x320x240"],
                        help="scenes as CAMSxFRAMESxWIDTHxHEIGHT")
    parser.add_argument("--downsample", type=float, nargs="+", default=[1.0, 2.0], help="downsample factors")
    args = parser.parse_args()

    from tools.make_synthetic_scene import make_synthetic_scene

    print(f"{'scene':>16} {'d':>4} {'pixels':>10} {'load s':>8} {'reload s':>9} {'held MiB':>9} {'B/px':>6} "
          f"{'peak RSS MiB':>13} {'RSS over imports MiB':>21}")
    for size in args.sizes:
        cams, frames, width, height = (int(v) for v in size.split("x"))
        datadir = args.out / size
        if not (datadir / "gt" / "meta.json").exists():
            start = time.perf_counter()
            make_synthetic_scene(datadir, cams, frames, width, height, videos=False)
            print(f"(rendered {size} in {time.perf_counter() - start:.1f} s)")
        for d in args.downsample:
            out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(datadir), "n3dv", str(d)],
                                 check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            mib = 2**20
            print(f"{size:>16} {d:>4g} {r['pixels']:>10} {r['first_s']:>8.2f} {r['second_s']:>9.2f} "
                  f"{r['held'] / mib:>9.1f} {r['held'] / r['pixels']:>6.2f} {r['peak_rss'] / mib:>13.0f} "
                  f"{(r['peak_rss'] - r['base_rss']) / mib:>21.0f}")


if __name__ == "__main__":
    main()
