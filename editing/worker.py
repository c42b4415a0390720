"""The editor process: loads the editor and the flow backend, runs one stage of a schedule over its cameras, and
writes each finished unit into the shared image store (see :mod:`editing.processes` for the process plumbing)."""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from tqdm.auto import tqdm

from ip2p_models.settings import DEFAULT_IP2P_MODEL

from .depth_cache import load_depth
from .previews import write_preview
from .schedules import (
    Cameras,
    EditSettings,
    Units,
    edit_anchored,
    edit_key_frame,
    edit_key_views,
    edit_other_views,
    edit_per_frame,
    edit_through_time,
    joint_key_views,
)
from .store import ImageStore

log = logging.getLogger(__name__)

STAGES = ("keyframe", "time", "keyviews", "keytime", "views", "perframe", "anchor")


@dataclass
class EditorSpec:
    """Which editor to build: ``ip2p`` (with the loader's options) or ``module:factory`` (called without arguments)."""

    name: str = "ip2p"
    model: str = DEFAULT_IP2P_MODEL
    device: str = "cpu"
    full_precision: bool = False
    sequence_length: int | None = None
    attention_slicing: bool = False
    cpu_offload: bool = False

    def build(self):
        if self.name == "ip2p":
            from ip2p_models import load_ip2p

            return load_ip2p(self.model, device=self.device, full_precision=self.full_precision,
                             sequence_length=self.sequence_length, attention_slicing=self.attention_slicing,
                             cpu_offload=self.cpu_offload)
        return load_factory(self.name)()


def load_factory(name: str):
    """``module:function`` -> the function; ValueError naming ``--editor`` when it cannot be imported."""
    module, _, attr = name.partition(":")
    if not module or not attr:
        raise ValueError(f"--editor {name!r}: expected ip2p or module:factory, e.g. editing.toy_editors:colour_shift")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"--editor {name!r}: cannot import it ({err})") from err


@dataclass
class EditJob:
    """One editor process's share of one stage.

    Attributes:
        stage: ``keyframe`` (frame 0 of all cameras), ``time`` (cameras through time, anchored on frame 0),
            ``keyviews`` (several key cameras' frame 0 together), ``keytime`` (key cameras through time, sliding
            window), ``views`` (other cameras from the key views).
        pass_index: editing pass (0 first; later passes refine the NeRF's renders).
        cams: camera positions this process edits.
        originals: the unedited uint8 store (shared memory).
        cameras: intrinsics and poses in the scene space of the depth.
        cam_ids: camera numbers (for keys and file names).
        depth_files: frame -> depth cache file.
        key_cams: key camera positions (``views``).
    """

    stage: str
    pass_index: int
    cams: list[int]
    settings: EditSettings
    originals: torch.Tensor
    cameras: Cameras
    cam_ids: list[int]
    editor: EditorSpec
    flow: dict = field(default_factory=dict)
    depth_files: dict[int, str] = field(default_factory=dict)
    key_cams: list[int] = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    preview_dir: str | None = None
    preview_every: int = 1
    threads: int = 0
    progress: bool = True


def run_editor(ctx, *jobs: EditJob) -> None:
    """Editor process target (:class:`editing.processes.EditorPool`): run ``jobs`` (stages of one pass, in order) with
    one editor and flow model, loaded once, and report finished units."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s editor-{ctx.rank} %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    first = jobs[0]
    if first.threads > 0:
        torch.set_num_threads(first.threads)
    unknown = [job.stage for job in jobs if job.stage not in STAGES]
    if unknown:
        raise ValueError(f"unknown editing stage {unknown[0]!r}")
    started = time.monotonic()
    editor = first.editor.build()
    flow = None
    if any(job.stage != "keyframe" for job in jobs):
        from ip2p_models.flow import make_flow

        flow = make_flow(first.flow.get("name"), first.flow.get("raft_ckpt"), device=first.editor.device,
                         iters=first.flow.get("iters"))
    loaded = time.monotonic()
    count = {"units": 0}
    for job in jobs:
        store = ImageStore(ctx.images, job.originals, ctx.lock)
        bar = tqdm(desc=f"editor {ctx.rank}: {job.stage} pass {job.pass_index}", position=ctx.rank + 1,
                   unit="unit", disable=not job.progress, leave=False)

        def preview(key: str, rows, job=job) -> None:
            count["units"] += 1
            if job.preview_dir and job.preview_every > 0 and (count["units"] - 1) % job.preview_every == 0:
                write_preview(job.preview_dir, key, rows)

        def report(key: str, bar=bar) -> None:
            bar.update(1)
            ctx.report(done=key)

        run_stage(job, editor, flow, store, Units(job.done, report=report, preview=preview, stop=ctx.stop.is_set))
        bar.close()
        if ctx.stop.is_set():
            break
    ctx.report(stage="+".join(job.stage for job in jobs), unet_evals=getattr(editor, "unet_evals", None),
               peak_rss_mib=peak_rss_mib(), load_s=loaded - started, edit_s=time.monotonic() - loaded)


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB: ``VmHWM`` on Linux (``ru_maxrss`` survives ``exec``, so a spawned
    process would report its parent's peak), ``ru_maxrss`` elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    import sys

    scale = 2**20 if sys.platform == "darwin" else 2**10
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / scale / 1024


def run_stage(job: EditJob, editor, flow, store: ImageStore, units: Units) -> None:
    """Run ``job``'s stage in this process (also usable without processes, e.g. in tests and benchmarks)."""
    s, p = job.settings, job.pass_index
    if job.stage == "keyframe":
        edit_key_frame(editor, store, load_depth(job.depth_files[0]), job.cameras, s, p, units)
    elif job.stage == "perframe":
        for cam in job.cams:
            edit_per_frame(editor, store, cam, job.cam_ids[cam], s, p, units)
    elif job.stage == "anchor":
        for cam in job.cams:
            edit_anchored(editor, store, cam, job.cam_ids[cam], s, p, units)
    elif job.stage in ("time", "keytime"):
        key = job.stage == "keytime"
        # a key camera's first window is its first edit of the pass, unless the key views' frame 0 was edited
        # together first (edit_key_views)
        first = key and not joint_key_views(job.key_cams, p)
        for cam in job.cams:
            edit_through_time(editor, store, flow, cam, job.cam_ids[cam], s, p, units, anchored_on_first=not key,
                              full_first=first)
    elif job.stage == "keyviews":
        edit_key_views(editor, store, job.cams, s, p, units)
    else:
        depth_at = lru_cache(maxsize=2)(lambda f: load_depth(job.depth_files[f]))
        edit_other_views(editor, store, flow, depth_at, job.cameras, job.key_cams, job.cams, job.cam_ids, s, p,
                         units)
