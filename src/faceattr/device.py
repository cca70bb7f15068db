"""Where tensors go: CUDA when present, else CPU; ``FACEATTR_DEVICE`` overrides."""

from __future__ import annotations

import os

import torch


def pick_device() -> torch.device:
    """CUDA when present, else CPU; ``FACEATTR_DEVICE`` overrides (e.g. ``cpu`` on a GPU box).

    Under torchrun each process takes the GPU of its ``LOCAL_RANK``.
    """
    name = os.environ.get("FACEATTR_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        name = f"cuda:{os.environ['LOCAL_RANK']}"
    return torch.device(name)
