"""Optical flow behind one call: ``flow(src, dst) -> [H, W, 2]``.

Conventions: the result is in pixels, ``flow[..., 0]`` is x, and it belongs to ``src``'s pixels:
``src[y, x]`` shows the surface point that ``dst`` shows at ``(x + flow[y, x, 0], y + flow[y, x, 1])``
(pixel index coordinates, see :mod:`ip2p_models.warp`). So ``warp_by_flow(dst, flow(src, dst))`` looks like ``src``.

Inputs are one image each, float in [0, 1] as CHW ``[3, H, W]`` or HWC ``[H, W, 3]`` (torch or numpy; uint8 is
read as 0..255). The result is a float32 tensor on the device of ``src`` (CPU for numpy inputs).

Backends:
- ``raft``: torchvision's ``raft_large`` / ``raft_small`` with weights from a local file (torchvision layout, or
  the original repository's ``raft-things.pth`` / ``raft-small.pth``, converted on load), or torchvision's
  download when no file is given and the network is there. Inputs are padded to multiples of 8 (and to at
  least 128 pixels a side, which torchvision's RAFT needs).
- ``dis``: OpenCV's DIS optical flow; no weights, CPU, the default when no RAFT weights are given.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .raft_convert import (
    RaftWeightsError,
    build_torchvision_raft,
    detect_variant,
    is_original_layout,
    original_to_torchvision,
)

log = logging.getLogger(__name__)

FLOW_BACKENDS = ("raft", "dis")
DEFAULT_ITERS = {"large": 20, "small": 12}
RAFT_MIN_SIZE = 128  # torchvision's correlation pyramid needs 1/8-resolution feature maps of at least 16 pixels


def to_chw(image: Tensor | np.ndarray) -> Tensor:
    """One image as float ``[3, H, W]`` in [0, 1] from CHW or HWC, float [0, 1] or uint8, torch or numpy."""
    t = torch.as_tensor(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    if t.dim() != 3 or (t.shape[0] != 3 and t.shape[-1] != 3):
        raise ValueError(f"flow: expected one RGB image [3, H, W] or [H, W, 3], got shape {tuple(t.shape)}")
    if t.shape[0] != 3:
        t = t.permute(2, 0, 1)
    return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()


class InputPadder:
    """Pads images so height and width are multiples of ``multiple`` and crops results back (RAFT's padder).

    Padding is split evenly between both sides (replicating the edge pixels), so a padded pixel index
    ``(x + left, y + top)`` is pixel ``(x, y)`` of the input; flows need no offset, only cropping. ``min_size``
    pads small images further (torchvision's RAFT refuses sides under 128 pixels; the original accepted them).
    """

    def __init__(self, height: int, width: int, multiple: int = 8, mode: str = "replicate", min_size: int = 0):
        pad_h = max((-height) % multiple, min_size - height)
        pad_w = max((-width) % multiple, min_size - width)
        self.height, self.width, self.mode = height, width, mode
        self.left, self.top = pad_w // 2, pad_h // 2
        self.pads = (self.left, pad_w - self.left, self.top, pad_h - self.top)  # F.pad order: W then H

    def pad(self, *images: Tensor) -> list[Tensor]:
        """``[N, C, H, W]`` each -> ``[N, C, H', W']`` with H', W' multiples of ``multiple``."""
        return [F.pad(x, self.pads, mode=self.mode) if any(self.pads) else x for x in images]

    def unpad(self, x: Tensor) -> Tensor:
        """``[..., H', W']`` -> ``[..., H, W]`` (the padded border cropped off)."""
        return x[..., self.top:self.top + self.height, self.left:self.left + self.width]


class DISFlow:
    """OpenCV DIS optical flow on grayscale images (CPU).

    The defaults (finest scale 0, 8-pixel patches every 4 pixels, on top of the ``medium`` preset) measured an
    end-point error of 0.19 px on the synthetic scene's visible pixels, against 0.55 px for the plain preset.
    """

    name = "dis"

    def __init__(self, preset: str = "medium", finest_scale: int = 0, patch_size: int = 8, patch_stride: int = 4):
        import cv2

        if not hasattr(cv2, "DISOpticalFlow_create"):
            raise RuntimeError("this OpenCV build has no DISOpticalFlow_create; install opencv-python-headless "
                               ">= 4.0 (see requirements.txt) or use --flow raft with --raft_ckpt")
        presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                   "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
        if preset not in presets:
            raise ValueError(f"DISFlow: unknown preset {preset!r}; choose one of {sorted(presets)}")
        self._cv2 = cv2
        self._dis = cv2.DISOpticalFlow_create(presets[preset])
        self._dis.setFinestScale(finest_scale)
        self._dis.setPatchSize(patch_size)
        self._dis.setPatchStride(patch_stride)

    def _gray(self, image: Tensor) -> np.ndarray:
        rgb = (to_chw(image).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        return self._cv2.cvtColor(np.ascontiguousarray(rgb), self._cv2.COLOR_RGB2GRAY)

    def __call__(self, src: Tensor | np.ndarray, dst: Tensor | np.ndarray) -> Tensor:
        """Flow ``[H, W, 2]`` (pixels) of ``src``'s pixels into ``dst``."""
        a, b = self._gray(src), self._gray(dst)
        if a.shape != b.shape:
            raise ValueError(f"flow: src {a.shape} and dst {b.shape} must have the same size")
        flow = torch.from_numpy(self._dis.calc(a, b, None))
        return flow.to(src.device if isinstance(src, Tensor) else "cpu")


class RAFTFlow:
    """torchvision RAFT (large or small) as a flow estimator.

    Args:
        model: a torchvision ``RAFT`` module with its weights loaded.
        variant: ``"large"`` or ``"small"`` (sets the default number of iterations: 20 / 12).
        iters: refinement iterations; None for the variant's default.
        device: where the model runs.
    """

    name = "raft"

    def __init__(self, model: torch.nn.Module, variant: str, iters: int | None = None,
                 device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.variant = variant
        self.iters = iters or DEFAULT_ITERS[variant]

    @torch.no_grad()
    def __call__(self, src: Tensor | np.ndarray, dst: Tensor | np.ndarray) -> Tensor:
        """Flow ``[H, W, 2]`` (pixels) of ``src``'s pixels into ``dst``."""
        a, b = to_chw(src), to_chw(dst)
        if a.shape != b.shape:
            raise ValueError(f"flow: src {tuple(a.shape)} and dst {tuple(b.shape)} must have the same size")
        padder = InputPadder(a.shape[1], a.shape[2], min_size=RAFT_MIN_SIZE)
        # torchvision's RAFT, like the original, takes images scaled to [-1, 1]
        a, b = padder.pad(a[None].to(self.device) * 2 - 1, b[None].to(self.device) * 2 - 1)
        flow = self.model(a, b, num_flow_updates=self.iters)[-1]
        flow = padder.unpad(flow)[0].permute(1, 2, 0).float()
        return flow.to(src.device if isinstance(src, Tensor) else "cpu")


def load_raft_state_dict(path: str | Path) -> tuple[dict[str, Tensor], str]:
    """Read a RAFT weight file in either layout and return torchvision's state dict and the variant.

    Accepts a plain state dict or one wrapped under ``state_dict`` / ``model``; original-layout files
    (``module.fnet...``) are converted with :func:`ip2p_models.raft_convert.original_to_torchvision`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RAFT weights {path} not found: pass the path of raft-things.pth / raft-small.pth "
                                "(original repo) or of a torchvision RAFT state dict, or use --flow dis")
    data = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict) or not data:
        raise RaftWeightsError(f"{path} holds no state dict (found {type(data).__name__})")
    if is_original_layout(data):
        state, variant = original_to_torchvision(data, source=str(path))
        log.info("converted %s from the original RAFT layout (RAFT-%s)", path, variant)
        return state, variant
    data = {k[len("module."):] if k.startswith("module.") else k: v for k, v in data.items()}
    return data, detect_variant(data)


def load_raft(path: str | Path | None = None, variant: str = "large") -> tuple[torch.nn.Module, str]:
    """A torchvision RAFT with weights from ``path``, or torchvision's pretrained download when ``path`` is None.

    Returns:
        ``(model, variant)``; the variant of a file comes from its keys, not from ``variant``.
    """
    if path is not None:
        state, variant = load_raft_state_dict(path)
        model = build_torchvision_raft(variant)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise RaftWeightsError(f"{path}: does not fit torchvision's raft_{variant}: {err}") from err
        return model, variant
    from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights, raft_large, raft_small

    try:
        if variant == "small":
            return raft_small(weights=Raft_Small_Weights.DEFAULT), variant
        return raft_large(weights=Raft_Large_Weights.DEFAULT), variant
    except Exception as err:  # no network, no cache
        raise RaftWeightsError(f"could not download torchvision's RAFT-{variant} weights ({err}); pass "
                               "--raft_ckpt PATH (raft-things.pth / raft-small.pth of the original repo, or a "
                               "torchvision state dict) or use --flow dis") from err


def make_flow(name: str | None = None, raft_ckpt: str | Path | None = None, device: torch.device | str = "cpu",
              iters: int | None = None, raft_variant: str = "large") -> DISFlow | RAFTFlow:
    """Build a flow estimator ``flow(src, dst) -> [H, W, 2]``.

    Args:
        name: ``"raft"``, ``"dis"``, or None for ``raft`` when ``raft_ckpt`` is given and ``dis`` otherwise.
        raft_ckpt: RAFT weight file (torchvision or original layout); None downloads torchvision's weights.
        device: where RAFT runs (DIS always runs on the CPU).
        iters: RAFT iterations (default 20 for large, 12 for small).
        raft_variant: ``"large"`` or ``"small"`` for the download (a file's own variant wins).
    """
    name = name or ("raft" if raft_ckpt else "dis")
    if name not in FLOW_BACKENDS:
        raise ValueError(f"unknown flow backend {name!r}: choose one of {FLOW_BACKENDS}")
    if name == "dis":
        if raft_ckpt:
            log.warning("--raft_ckpt %s is ignored with --flow dis", raft_ckpt)
        return DISFlow()
    model, variant = load_raft(raft_ckpt, raft_variant)
    return RAFTFlow(model, variant, iters=iters, device=device)
