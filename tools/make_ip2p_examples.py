"""Write the example inputs of test_ip2p.py and test_ip2p_sequence.py from the synthetic scene.

Writes (small on purpose: they are committed; JPEG, about 10 KB each):
    OUT/ip2p/sequence/0.jpg ... N-1.jpg   N consecutive frames of camera 0 (256x192 RGB)
    OUT/ip2p/image.jpg                    one frame of camera 1, mid-sequence

Usage:
    python tools/make_ip2p_examples.py examples [--frames 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.make_synthetic_scene import make_synthetic_scene

JPEG_QUALITY = 90


def write_ip2p_examples(out: str | Path, frames: int = 8, width: int = 256, height: int = 192) -> Path:
    """Render the examples into ``out/ip2p`` (see the module docstring); returns that folder."""
    import imageio.v3 as iio

    folder = Path(out) / "ip2p"
    (folder / "sequence").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        scene = make_synthetic_scene(Path(tmp) / "scene", cams=2, frames=frames, width=width, height=height,
                                     videos=False)
        for k in range(frames):
            frame = iio.imread(scene / "frames" / "cam00" / f"{k + 1:06d}.png")
            iio.imwrite(folder / "sequence" / f"{k}.jpg", frame, quality=JPEG_QUALITY)
        for stale in (folder / "sequence").glob("*.jpg"):  # frames of an earlier, longer run of this tool
            if stale.stem.isdigit() and int(stale.stem) >= frames:
                stale.unlink()
        middle = iio.imread(scene / "frames" / "cam01" / f"{frames // 2 + 1:06d}.png")
        iio.imwrite(folder / "image.jpg", middle, quality=JPEG_QUALITY)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="examples folder (the files go to OUT/ip2p/)")
    parser.add_argument("--frames", type=int, default=8, help="frames in the sequence example")
    args = parser.parse_args(argv)
    folder = write_ip2p_examples(args.out, frames=args.frames)
    print(f"IP2P examples written to {folder}")


if __name__ == "__main__":
    main()
