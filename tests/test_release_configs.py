"""configs/n3dv/*.txt hold the release's values (../shared/spec/release-configs.tsv), and parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from editing.options import parse_edit_args
from models.config import parse_args
from tools.make_release_configs import DEFAULT_TABLE, SHARED, config_text, frame_list, read_table

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "n3dv"

pytestmark = pytest.mark.skipif(not DEFAULT_TABLE.is_file(), reason=f"{DEFAULT_TABLE} not beside the repository")


def rows() -> list[dict[str, str]]:
    return read_table(DEFAULT_TABLE) if DEFAULT_TABLE.is_file() else []


def test_every_release_config_exists_and_no_other():
    assert sorted(p.name for p in CONFIGS.glob("*.txt")) == sorted(r["file"] for r in rows())


@pytest.mark.parametrize("row", rows(), ids=lambda r: r["file"])
def test_config_matches_the_release_table(row):
    path = CONFIGS / row["file"]
    assert path.read_text() == config_text(row), "regenerate with python tools/make_release_configs.py"
    editing = row["file"].startswith("edit_")
    args = (parse_edit_args if editing else parse_args)(["--config", str(path)])
    assert args.num_frames == int(row["num_frames"])
    assert args.frame_list == (frame_list(row["frame_list"]) or [])
    assert args.downsample_train == float(row["downsample_train"])
    assert args.ld_per_frame == float(row["ld_per_frame"])
    assert args.n_iters == int(row["n_iters"])
    assert args.N_voxel_final == int(row["N_voxel_final"])
    assert str(args.upsamp_list).replace(" ", "") == row["upsamp_list"]
    assert args.vis_every == int(row["vis_every"])
    assert args.datadir == f"./data/neural_3d/{row['datadir_scene']}"
    assert args.N_voxel_init == int(SHARED["N_voxel_init"]) and args.batch_size == 4096
    assert args.n_lamb_sigma == [16, 4, 4] and args.n_lamb_sh == [48, 12, 12] and args.N_vis == -1
    assert args.expname == row["file"].removesuffix(".txt") and not args.add_timestamp
    assert args.skip_cams == ([12] if row["datadir_scene"] == "coffee_martini" else [])
