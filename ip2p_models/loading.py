"""Load InstructPix2Pix from a local diffusers folder or a Hugging Face hub id, as an :class:`IP2PEditor`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from common.errors import UserError

from .sequence_editor import IP2PEditor
from .settings import DEFAULT_IP2P_MODEL

log = logging.getLogger(__name__)

PIPELINE_LAYOUT = "model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/"


class IP2PWeightsError(UserError, FileNotFoundError):
    """The InstructPix2Pix weights are neither in a local folder nor downloadable; the message says how to get them."""


def download_hint(model: str) -> str:
    """How to get ``model``'s weights once and use them offline afterwards."""
    repo = model if looks_like_hub_id(model) else DEFAULT_IP2P_MODEL
    folder = f"weights/{repo.split('/')[-1]}"
    return (f"Download the weights once, on a machine with network access:\n"
            f"    hf download {repo} --local-dir {folder}\n"
            f"(older huggingface_hub: `huggingface-cli download ...`), then pass the folder: --ip2p_model {folder} "
            f"(a local folder in diffusers layout works offline: {PIPELINE_LAYOUT}). Loading a hub id needs the "
            f"network once; afterwards it is cached and HF_HUB_OFFLINE=1 keeps it offline.")


def looks_like_hub_id(model: str) -> bool:
    """Whether ``model`` has the form of a hub repository id (``name`` or ``owner/name``) rather than a path."""
    if model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1:
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        return False
    return True


def ip2p_dtype(device: str | torch.device, full_precision: bool = False) -> torch.dtype:
    """float16 on CUDA (unless ``full_precision``), float32 everywhere else."""
    return torch.float16 if torch.device(device).type == "cuda" and not full_precision else torch.float32


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device; raises ValueError when it is a CUDA device this machine does not have."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--ip2p_device {device}: CUDA is not available on this machine; use --ip2p_device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--ip2p_device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device


# The files each component of a pipeline folder needs: a config, and weights where the component has any.
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                     "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors.index.json")
COMPONENT_FILES = {
    "unet": ("config.json", DIFFUSERS_WEIGHTS),
    "vae": ("config.json", DIFFUSERS_WEIGHTS),
    "text_encoder": ("config.json", ("model.safetensors", "pytorch_model.bin", "model.fp16.safetensors",
                                     "model.safetensors.index.json")),
    "tokenizer": ("tokenizer_config.json", ("vocab.json", "tokenizer.json")),
    "scheduler": ("scheduler_config.json", ()),
}


def missing_components(folder: Path) -> list[str]:
    """The component files a local pipeline folder lacks (``unet/``, ``unet/config.json``, ``unet/<weights>``...)."""
    missing = []
    for name, (config, weights) in COMPONENT_FILES.items():
        part = folder / name
        if not part.is_dir():
            missing.append(f"{name}/")
            continue
        if not (part / config).is_file():
            missing.append(f"{name}/{config}")
        if weights and not any((part / w).is_file() for w in weights):
            missing.append(f"{name}/{weights[0]}")
    return missing


def weights_source(model: str) -> str:
    """``model`` as a complete local pipeline folder or a hub id; IP2PWeightsError naming what is wrong otherwise."""
    local = Path(model).expanduser()
    if local.is_dir():
        if not (local / "model_index.json").is_file():
            raise IP2PWeightsError(f"--ip2p_model {model}: this folder has no model_index.json, so it is not a "
                                   f"diffusers pipeline folder (expected {PIPELINE_LAYOUT}).\n{download_hint(model)}")
        missing = missing_components(local)
        if missing:
            raise IP2PWeightsError(f"--ip2p_model {model}: the folder is incomplete, it misses {', '.join(missing)} "
                                   f"(expected {PIPELINE_LAYOUT}). Copy or download the whole folder again.\n"
                                   f"{download_hint(model)}")
        return str(local)
    if local.exists():
        raise IP2PWeightsError(f"--ip2p_model {model} is a file; pass a diffusers pipeline folder "
                               f"({PIPELINE_LAYOUT}) or a hub id such as {DEFAULT_IP2P_MODEL}")
    if looks_like_hub_id(model):
        return model
    raise IP2PWeightsError(f"--ip2p_model {model}: no such folder, and it is not a Hugging Face hub id.\n"
                           f"{download_hint(model)}")


def load_pipeline(model: str = DEFAULT_IP2P_MODEL, dtype: torch.dtype = torch.float32):
    """``StableDiffusionInstructPix2PixPipeline`` (no safety checker) from a local folder or a hub id.

    Raises:
        IP2PWeightsError: the folder is missing or incomplete, or the hub id cannot be fetched (offline, unknown id).
        ValueError: the weights are not an InstructPix2Pix model (the UNet does not take 8 input channels).
    """
    from diffusers import StableDiffusionInstructPix2PixPipeline

    model = str(model)
    local = Path(model).expanduser()
    # 1. where the weights are: a local folder, or a hub id (downloaded once, then cached)
    source = weights_source(model)
    # 2. load the components (diffusers goes to the hub only for a hub id that is not cached)
    try:
        pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
            source, dtype=dtype, safety_checker=None, requires_safety_checker=False)
    except (OSError, ValueError) as err:
        where = (f"the folder {source} is incomplete or unreadable" if source != model or local.is_dir() else
                 f"the hub id {model} is not cached here and could not be downloaded "
                 f"(no network, HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}, or no such repository)")
        raise IP2PWeightsError(f"--ip2p_model {model}: cannot load InstructPix2Pix: {where}.\n{download_hint(model)}\n"
                               f"(cause: {type(err).__name__}: {err})") from err
    if pipe.unet.config.in_channels != 8:
        raise ValueError(f"--ip2p_model {model}: its UNet takes {pipe.unet.config.in_channels} input channels; an "
                         f"InstructPix2Pix UNet takes 8 (noisy latent + image latent). Use e.g. {DEFAULT_IP2P_MODEL}")
    return pipe


def load_ip2p(model: str = DEFAULT_IP2P_MODEL, device: str | torch.device = "cpu", full_precision: bool = False, *,
              sequence_length: int | None = None, attention_slicing: bool | int = False, cpu_offload: bool = False,
              progress: bool = False) -> IP2PEditor:
    """An anchor-aware InstructPix2Pix editor (``--ip2p_model``, ``--ip2p_device``, ``--ip2p_use_full_precision``).

    Args:
        model: local folder in diffusers layout, or hub id (default ``timbrooks/instruct-pix2pix``).
        device: device to run on; fp16 on CUDA, fp32 elsewhere.
        full_precision: force fp32 on CUDA too.
        sequence_length: default frames per UNet batch (anchor included); None: a whole sequence at once.
        attention_slicing: True (or a number of batch items) computes self-attention a few items at a time,
            trading speed for memory.
        cpu_offload: keep the models on the CPU and move each to ``device`` only while it runs (accelerate's model
            CPU offload; for GPUs that cannot hold the whole model).
        progress: progress bars over denoising steps.

    Returns:
        The :class:`IP2PEditor`.

    Raises:
        IP2PWeightsError: weights neither local nor downloadable (the message says how to get them).
    """
    device = check_device(device)
    dtype = ip2p_dtype(device, full_precision)
    pipe = load_pipeline(model, dtype)
    pipe.set_progress_bar_config(disable=True)
    if cpu_offload and device.type != "cpu":
        pipe.enable_model_cpu_offload(device=device)
    else:
        if cpu_offload:
            log.warning("cpu_offload has no effect when the IP2P device is the CPU")
        pipe.to(device)
    slice_size = None if attention_slicing is False else 1 if attention_slicing is True else int(attention_slicing)
    log.info("loaded InstructPix2Pix %s on %s (%s)", model, device, str(dtype).removeprefix("torch."))
    editor = IP2PEditor(pipe, device, sequence_length=sequence_length, attention_slice=slice_size, progress=progress)
    if Path(model).expanduser().is_dir():
        editor.model_path = str(model)
    return editor


INSTRUCTIONS_FILE = "instructions.json"  # a model trained on a fixed set of instructions lists them here


def known_prompts(model: str) -> list[str] | None:
    """The prompts a local model folder says it was trained on (its ``instructions.json``), or None (any prompt)."""
    import json

    path = Path(str(model)).expanduser() / INSTRUCTIONS_FILE
    if not path.is_file():
        return None
    try:
        listed = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("%s is unreadable; not checking prompts against it", path)
        return None
    return [p for entry in listed.values() for p in entry.get("prompts", [])]


def warn_if_unknown_prompt(model: str, prompt: str) -> bool:
    """Log a warning when ``model`` lists the instructions it knows and ``prompt`` is not one of them; returns
    whether it warned."""
    from .instructions import normalize_prompt

    prompts = known_prompts(model)
    if prompts is None or normalize_prompt(prompt) in {normalize_prompt(p) for p in prompts}:
        return False
    log.warning("the prompt %r is not one the model in %s was trained on; it knows: %s. Its edit will not follow "
                "the prompt (a small model trained on a few instructions; use the real InstructPix2Pix for others)",
                prompt, model, "; ".join(repr(p) for p in prompts))
    return True


def check_available(model: str) -> str:
    """Make sure ``model``'s weights can be loaded (a complete local folder, or a hub id that is cached or can be
    fetched now), without loading them; returns where they are.

    Raises:
        IP2PWeightsError: as :func:`load_pipeline` would, with the same hint.
    """
    model = str(model)
    source = weights_source(model)
    if Path(model).expanduser().is_dir():
        return source
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(model, allow_patterns=["model_index.json"])
    except Exception as err:  # noqa: BLE001 - offline, unknown id, no permission: all mean "not loadable here"
        raise IP2PWeightsError(f"--ip2p_model {model}: the hub id is not cached here and could not be fetched "
                               f"(no network, HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}, or no such "
                               f"repository).\n{download_hint(model)}\n(cause: {type(err).__name__}: {err})") from err
