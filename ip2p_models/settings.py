"""How InstructPix2Pix edits: guidance, steps and the refinement's noise level, written once.

Every program and routine that edits takes its defaults (and option help) from :class:`RefineSettings`:
``stream_edit.py`` (whose ``EditSettings`` extends it), the demos (``test_*.py``) and the sequence editor.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.settings import setting

DEFAULT_IP2P_MODEL = "timbrooks/instruct-pix2pix"  # the real InstructPix2Pix weights (hub id)


@dataclass
class RefineSettings:
    """Guidance, the full edit's steps, a refinement's noise level and steps, and the warp's colour check."""

    guidance_scale: float = setting(10.5, "IP2P text guidance weight")
    image_guidance_scale: float = setting(1.5, "IP2P image guidance weight (higher keeps more of the input)")
    diffusion_steps: int = setting(20, "denoising (DDIM) steps of a full edit")
    refine_num_steps: int = setting(600, "noise level (of 1000) a temporal window's refinement starts from "
                                         "(the release's demo calls it painting_num_train_timesteps)",
                                    aliases=("painting_num_train_timesteps",))
    refine_diffusion_steps: int = setting(4, "denoising steps of a temporal window's refinement (the release's demo "
                                             "calls it painting_diffusion_steps)",
                                          aliases=("painting_diffusion_steps",))
    photometric_threshold: float | None = setting(
        0.05, "colour tolerance in [0, 1] of the flow warp's photometric check (a warped pixel whose colour in the "
        "original frames differs by more is not trusted); <= 0 turns the check off", type=float)

    def __post_init__(self):
        if self.photometric_threshold is not None and self.photometric_threshold <= 0:
            self.photometric_threshold = None
