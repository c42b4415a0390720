"""Scores of a 4D edit: how consistent it is over time and across cameras, how much it changed, how well it follows
the instruction. ``tools/evaluate_edit.py`` runs :func:`evaluate_run` on an edit's run directory.

Image sets are uint8 ``[F, C, H, W, 3]`` (frames, cameras) arrays, read one frame at a time, so a long scene is
scored in the memory of a few images. Every error is a mean absolute difference of colours in [0, 1] (lower is more
consistent); each metric says what it masks.

- temporal warp error: frame t+1 warped onto frame t with flow computed on the *original* frames, occluded and
  out-of-view pixels masked (ground-truth flow and occlusion, or an estimated flow's forward-backward and colour
  checks);
- cross-view reprojection error: at each frame, each camera's image against its nearest cameras' images warped
  into it through depth (ground truth, or the original NeRF's rendered depth), pixels failing the warp's occlusion
  test masked;
- preservation: PSNR and SSIM against the original frames (higher: less changed);
- fidelity: PSNR against the instruction's procedural target applied to the original frames (the mini model's
  instructions; for ``make it snowy`` the target's deterministic colours, without its random flakes);
- CLIP text-image similarity (cosine of the image's and the target caption's embeddings) and CLIP directional
  similarity (cosine between the change of image embedding, original to edit, and the change of caption embedding,
  source to target caption), InstructPix2Pix's definitions; higher is better.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from common.errors import UserError
from ip2p_models.depth_warp import View, depth_warp
from ip2p_models.warp import reliable_mask, warp_by_flow

log = logging.getLogger(__name__)

NO_CLIP = "no CLIP weights"


class EvaluationError(UserError, ValueError):
    """The run, the scene or the CLIP weights do not fit the evaluation; the message says what to pass."""


def to_chw(image: np.ndarray | Tensor) -> Tensor:
    """uint8 ``[H, W, 3]`` -> float ``[3, H, W]`` in [0, 1]."""
    image = torch.from_numpy(np.array(image, dtype=np.uint8))  # a copy: mmap-ed stores are read-only
    return image.permute(2, 0, 1).float() / 255.0


def masked_mean_abs(a: Tensor, b: Tensor, mask: Tensor) -> float:
    """Mean over ``mask [H, W]`` of the channel-mean absolute difference of ``a, b [3, H, W]``; nan if empty."""
    if not bool(mask.any()):
        return float("nan")
    return float((a - b).abs().mean(0)[mask].mean())


# --- geometry: what the errors warp with ---------------------------------------------------------------------
@dataclass
class TemporalFlow:
    """Flow of each frame's pixels into the next frame (on the original frames) and where it can be trusted.

    ``pair(t, c)`` returns ``flow [H, W, 2]`` (pixels, x first) of frame t's pixels into frame t+1 and the bool
    ``mask [H, W]`` of pixels visible in both.
    """

    pair: Callable[[int, int], tuple[Tensor, Tensor]]
    source: str


def ground_truth_flow(gt: dict) -> TemporalFlow:
    def pair(t: int, c: int) -> tuple[Tensor, Tensor]:
        flow = gt["flow_fw"][t, c].float()
        h, w = flow.shape[:2]
        target = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(h), indexing="xy"), -1) + flow
        inside = (target[..., 0] > -0.5) & (target[..., 0] < w - 0.5) & (target[..., 1] > -0.5) & (
            target[..., 1] < h - 0.5)
        return flow, ~gt["occ_fw"][t, c].bool() & inside
    return TemporalFlow(pair, "ground truth")


def estimated_flow(original: np.ndarray, flow_fn, name: str) -> TemporalFlow:
    """Flow by ``flow_fn(src, dst)`` on the original frames, masked by the forward-backward and colour checks."""
    def pair(t: int, c: int) -> tuple[Tensor, Tensor]:
        a, b = to_chw(original[t, c]), to_chw(original[t + 1, c])
        forward, backward = flow_fn(a, b).cpu(), flow_fn(b, a).cpu()
        return forward, reliable_mask(forward, backward, src=b, dst=a)
    return TemporalFlow(pair, name)


@dataclass
class Depths:
    """Depth of every camera at each frame and the cameras it is measured in.

    ``at(f)`` gives ``[C, H, W]``: world z-depth, or the NDC ray parameter when ``ndc``.
    """

    at: Callable[[int], Tensor]
    K: Tensor
    c2w: Tensor
    ndc: bool
    source: str


def nearest_camera_pairs(c2w: Tensor, neighbours: int = 2) -> list[tuple[int, int]]:
    """``(target, source)`` pairs: every camera with its ``neighbours`` nearest cameras (by centre)."""
    centres = c2w[:, :3, 3].float()
    distance = torch.cdist(centres, centres)
    distance.fill_diagonal_(float("inf"))
    k = min(neighbours, len(centres) - 1)
    if k < 1:
        return []
    return [(i, int(j)) for i in range(len(centres)) for j in distance[i].topk(k, largest=False).indices]


# --- the errors ---------------------------------------------------------------------------------------------------
def temporal_warp_errors(images: np.ndarray, flow: TemporalFlow, cams: Sequence[int] | None = None,
                         cache: dict | None = None) -> np.ndarray:
    """Temporal warp error of each consecutive frame pair and camera: ``[F-1, C]`` (nan where nothing is visible).

    Args:
        images: uint8 ``[F, C, H, W, 3]``.
        flow: the original frames' flow and masks.
        cams: cameras to score (default all; others are nan).
        cache: a dict shared between calls that score several image sets with the same flow (estimated flow is
            then computed once).
    """
    num_frames, num_cams = images.shape[:2]
    errors = np.full((max(num_frames - 1, 0), num_cams), np.nan)
    for t in range(num_frames - 1):
        for c in cams if cams is not None else range(num_cams):
            key = (t, c)
            if cache is not None and key in cache:
                fw, mask = cache[key]
            else:
                fw, mask = flow.pair(t, c)
                if cache is not None:
                    cache[key] = (fw, mask)
            warped = warp_by_flow(to_chw(images[t + 1, c]), fw)
            errors[t, c] = masked_mean_abs(to_chw(images[t, c]), warped, mask)
    return errors


def cross_view_errors(images: np.ndarray, depths: Depths, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Cross-view reprojection error at each frame for each camera pair: ``[F, len(pairs)]``.

    The source camera's image is warped into the target camera through both depths; pixels whose 3D points do not
    agree (occluded in the source) or that fall outside it are masked.
    """
    errors = np.full((images.shape[0], len(pairs)), np.nan)
    for f in range(images.shape[0]):
        depth = depths.at(f)
        frame = [to_chw(images[f, c]) for c in range(images.shape[1])]
        for p, (i, j) in enumerate(pairs):
            target = View(None, depth[i], depths.K[i], depths.c2w[i])
            source = View(frame[j], depth[j], depths.K[j], depths.c2w[j])
            warped, mask = depth_warp(target, source, ndc=depths.ndc)
            errors[f, p] = masked_mean_abs(frame[i], warped, mask)
    return errors


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of two images in [0, 1]."""
    mse = float(((a - b) ** 2).mean())
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: Tensor, b: Tensor, window: Tensor | None = None) -> float:
    """SSIM of ``a, b [3, H, W]`` in [0, 1] (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03;
    per channel, valid region, then averaged)."""
    window = gaussian_window() if window is None else window
    kernel = window[None, None].expand(3, 1, *window.shape)
    c1, c2 = 0.01**2, 0.03**2
    x, y = a[None].float(), b[None].float()
    mu_x, mu_y = F.conv2d(x, kernel, groups=3), F.conv2d(y, kernel, groups=3)
    var_x = F.conv2d(x * x, kernel, groups=3) - mu_x**2
    var_y = F.conv2d(y * y, kernel, groups=3) - mu_y**2
    cov = F.conv2d(x * y, kernel, groups=3) - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(value.mean())


def preservation(images: np.ndarray, original: np.ndarray) -> dict[str, float]:
    """Mean PSNR and SSIM of every image against the original frame."""
    window = gaussian_window()
    psnrs, ssims = [], []
    for f in range(images.shape[0]):
        for c in range(images.shape[1]):
            a, b = to_chw(images[f, c]), to_chw(original[f, c])
            psnrs.append(psnr(a, b))
            ssims.append(ssim(a, b, window))
    return {"psnr_vs_original": float(np.mean(psnrs)), "ssim_vs_original": float(np.mean(ssims))}


def fidelity(images: np.ndarray, original: np.ndarray, target_fn: Callable[[np.ndarray], np.ndarray]) -> float:
    """Mean PSNR of every image against ``target_fn`` (float ``[H, W, 3]`` -> same) of the original frame."""
    values = []
    for f in range(images.shape[0]):
        for c in range(images.shape[1]):
            target = target_fn(original[f, c].astype(np.float64) / 255.0)
            values.append(psnr(to_chw(images[f, c]), torch.from_numpy(target).permute(2, 0, 1).float()))
    return float(np.mean(values))


# --- CLIP ------------------------------------------------------------------------------------------------------
class ClipScorer:
    """CLIP text-image and directional similarity with a local ``transformers`` CLIP folder.

    Args:
        folder: a folder with ``config.json`` and weights of a ``CLIPModel``, plus its tokenizer and image processor
            (e.g. ``openai/clip-vit-large-patch14`` downloaded with ``hf download``).
        device: where CLIP runs.
    """

    def __init__(self, folder: str, device: str = "cpu"):
        from pathlib import Path

        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        path = Path(folder).expanduser()
        if not (path / "config.json").is_file():
            raise EvaluationError(f"--clip_model {folder}: no such CLIP folder (it needs config.json, the weights, "
                                  "the tokenizer and preprocessor_config.json); download one once with "
                                  "`hf download openai/clip-vit-large-patch14 --local-dir weights/clip`, or leave "
                                  "--clip_model out (the CLIP columns then say 'no CLIP weights')")
        try:
            self.model = CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise EvaluationError(f"--clip_model {folder}: cannot load CLIP from this folder ({err})") from err
        self.device = device

    @torch.no_grad()
    def image_embeds(self, images: Sequence[np.ndarray]) -> Tensor:
        """Unit-norm embeddings ``[N, D]`` of uint8 ``[H, W, 3]`` images."""
        inputs = self.processor(images=list(images), return_tensors="pt").to(self.device)
        features = self.model.get_image_features(**inputs)
        features = getattr(features, "pooler_output", features)
        return F.normalize(features.float(), dim=-1).cpu()

    @torch.no_grad()
    def text_embeds(self, texts: Sequence[str]) -> Tensor:
        """Unit-norm embeddings ``[N, D]`` of captions."""
        inputs = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(self.device)
        features = self.model.get_text_features(**inputs)
        features = getattr(features, "pooler_output", features)
        return F.normalize(features.float(), dim=-1).cpu()

    def scores(self, edited: Sequence[np.ndarray], original: Sequence[np.ndarray], source_caption: str,
               target_caption: str) -> dict[str, float]:
        """Mean text-image similarity of ``edited`` to ``target_caption`` and mean directional similarity."""
        e, o = self.image_embeds(edited), self.image_embeds(original)
        source, target = self.text_embeds([source_caption, target_caption])
        text_image = (e @ target).mean()
        direction = F.cosine_similarity(e - o, (target - source)[None], dim=-1).mean()
        return {"clip_text_image": float(text_image), "clip_direction": float(direction)}


def frame_sample(num_frames: int, count: int) -> list[int]:
    """``count`` evenly spaced frame indices (all when there are fewer)."""
    if count <= 0 or count >= num_frames:
        return list(range(num_frames))
    return sorted({round(i * (num_frames - 1) / (count - 1)) for i in range(count)}) if count > 1 else [0]


def clip_scores(scorer: ClipScorer | None, images: np.ndarray, original: np.ndarray, source_caption: str,
                target_caption: str, frames: int = 8) -> dict[str, float | str]:
    """CLIP scores over ``frames`` evenly spaced frames of every camera; ``"no CLIP weights"`` without a scorer."""
    if scorer is None:
        return {"clip_text_image": NO_CLIP, "clip_direction": NO_CLIP}
    picks = [(f, c) for f in frame_sample(images.shape[0], frames) for c in range(images.shape[1])]
    return scorer.scores([np.asarray(images[f, c]) for f, c in picks], [np.asarray(original[f, c]) for f, c in picks],
                         source_caption, target_caption)
