"""The 4D radiance field (stream TensoRF): fields, ray sampling, volume rendering, regularizers, fitting, checkpoints.

Conventions: images are float [0, 1] HWC; time is in [0, 1] (frame k of F at k / (F - 1)); a training batch and a
full-image render hold rays of ONE frame; rays are in NDC when the scene uses it (``scene.ndc``), and depth
renders are then NDC ray parameters (see :func:`dataloader.cameras.ndc_depth_to_points`).

Typical use (also by the editing program)::

    field, ckpt = load_checkpoint("log/n3dv/train_coffee_50_2/ckpt-99999.th", device="cuda:0")
    sampler = build_sampler("fast", ndc=scene.ndc)              # "dense": the release's sampling, every sample
    out = render_image(field, sampler, scene, frame=0, cam=3)   # rgb [H, W, 3], depth [H, W], acc [H, W]
    trainer = Trainer(field, scene, FitSettings.from_args(args), device="cuda:0", run_dir=run_dir)
    trainer.train(600)                                           # or trainer.step() in your own loop
"""

from __future__ import annotations

from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from .compositing import alpha_weights, composite_depth, composite_rgb
from .fields import N_to_reso, StreamTensorBase, StreamTensorCP, StreamTensorVMSplit
from .fitting import Trainer, field_from_args
from .registry import MODELS, ModelError, build_model
from .rendering import render_chunked, render_image, render_rays
from .sampling import SAMPLERS, build_sampler
from .settings import FitSettings

__all__ = [
    "MODELS", "SAMPLERS", "CheckpointError", "FitSettings", "ModelError", "N_to_reso", "StreamTensorBase",
    "StreamTensorCP", "StreamTensorVMSplit", "Trainer", "alpha_weights", "build_model", "build_sampler",
    "composite_depth", "composite_rgb", "field_from_args", "latest_checkpoint", "load_checkpoint", "render_chunked",
    "render_image", "render_rays", "save_checkpoint",
]
