"""tools/prepare_video.py: extraction from camXX.mp4, skipping, and errors on bad videos."""

from __future__ import annotations

import shutil

import pytest
import torch

from common.image_io import ImageError
from dataloader import load_scene
from dataloader.video import VideoError
from tools.prepare_video import main, prepare_scene


@pytest.fixture
def video_scene(synthetic_scene_dir, tmp_path):
    """A copy of the synthetic scene with its videos and poses only (frames to be extracted)."""
    datadir = tmp_path / "scene"
    datadir.mkdir()
    for path in [*synthetic_scene_dir.glob("cam0[0-2].mp4")]:
        shutil.copy(path, datadir)
    import numpy as np

    np.save(datadir / "poses_bounds.npy", np.load(synthetic_scene_dir / "poses_bounds.npy")[:3])
    return datadir


def test_extract_then_skip(video_scene, synthetic_scene_dir):
    assert prepare_scene(video_scene, progress=False) == {f"cam0{i}": "extracted" for i in range(3)}
    frames = sorted((video_scene / "frames" / "cam01").glob("*.jpg"))
    assert [f.name for f in frames[:2]] == ["000001.jpg", "000002.jpg"] and len(frames) == 12
    assert prepare_scene(video_scene, progress=False) == {f"cam0{i}": "skipped" for i in range(3)}
    # the extracted frames are the rendered ones up to video and JPEG compression
    extracted = load_scene("n3dv", video_scene)
    rendered = load_scene("n3dv", synthetic_scene_dir, skip_cams=[3, 4, 5])
    error = (extracted.images.float() - rendered.images.float()).abs().mean() / 255
    assert error < 0.03, error


def test_loader_extracts_missing_frames(video_scene):
    scene = load_scene("n3dv", video_scene, num_frames=5)
    assert scene.images.shape[:2] == (5, 3)
    assert (video_scene / "frames" / "cam02" / ".extracted").exists()


def test_loader_extracts_again_after_the_frames_were_deleted(video_scene):
    load_scene("n3dv", video_scene, num_frames=2)
    frame_dir = video_scene / "frames" / "cam01"
    for frame in frame_dir.glob("*.jpg"):  # rm frames/cam01/*: the hidden marker stays
        frame.unlink()
    assert load_scene("n3dv", video_scene, num_frames=2).images.shape[:2] == (2, 3)
    assert len(list(frame_dir.glob("*.jpg"))) == 12


def test_loader_names_a_frame_folder_holding_other_files(video_scene):
    user_dir = video_scene / "frames" / "cam00"
    user_dir.mkdir(parents=True)
    (user_dir / "notes.txt").write_text("mine")
    with pytest.raises(VideoError, match="cam00 holds files that are not frames to load \\(notes.txt\\)"):
        load_scene("n3dv", video_scene)
    assert sorted(p.name for p in user_dir.iterdir()) == ["notes.txt"]
    assert not (video_scene / "frames" / "cam00.partial").exists()


def test_a_frame_that_cannot_be_written_is_not_called_a_corrupt_video(video_scene, monkeypatch):
    import dataloader.video as video

    def full_disk(path, *args, **kwargs):
        raise ImageError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(video, "write_rgb", full_disk)
    with pytest.raises(VideoError, match="could not write the frames of .*cam00.mp4.*free disk space") as err:
        load_scene("n3dv", video_scene)
    assert "corrupt" not in str(err.value)
    assert not (video_scene / "frames" / "cam00.partial").exists()


def test_user_frames_are_left_alone(video_scene):
    user_dir = video_scene / "frames" / "cam00"
    user_dir.mkdir(parents=True)
    (user_dir / "notes.txt").write_text("mine")
    status = prepare_scene(video_scene, progress=False)
    assert status["cam00"] == "skipped" and (user_dir / "notes.txt").read_text() == "mine"


def test_corrupt_video(video_scene, capsys):
    (video_scene / "cam01.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(VideoError, match="cam01.mp4.*corrupt"):
        prepare_scene(video_scene, progress=False)
    assert not (video_scene / "frames" / "cam01").exists()
    assert not (video_scene / "frames" / "cam01.partial").exists()
    assert main([str(video_scene)]) == 1
    assert "corrupt" in capsys.readouterr().err


def test_missing_videos(tmp_path):
    with pytest.raises(VideoError, match="no camXX.mp4 videos"):
        prepare_scene(tmp_path, progress=False)
    with pytest.raises(VideoError, match="not found"):
        prepare_scene(tmp_path / "missing", progress=False)


def test_images_are_shareable(video_scene):
    scene = load_scene("n3dv", video_scene, num_frames=2).share_memory_()
    assert scene.images.is_shared() and scene.images.dtype == torch.uint8


def test_re_extraction_keeps_other_files_and_the_frames_when_it_fails(video_scene):
    prepare_scene(video_scene, progress=False)
    frame_dir = video_scene / "frames" / "cam01"
    (frame_dir / "000005.jpg").unlink()
    (frame_dir / "notes.txt").write_text("mine")
    assert prepare_scene(video_scene, progress=False)["cam01"] == "skipped"  # someone's file: left as it is
    assert (frame_dir / "notes.txt").read_text() == "mine"
    (frame_dir / "notes.txt").unlink()
    (video_scene / "cam01.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(VideoError, match="corrupt"):
        prepare_scene(video_scene, progress=False)
    assert len(list(frame_dir.glob("*.jpg"))) == 11  # the frames that were there are back
    assert not (video_scene / "frames" / "cam01.stale").exists()
