"""Self-describing checkpoints: ``{"state_dict": ..., "meta": {...}}``.

``meta`` holds everything needed to rebuild and use the network (backbone, width, embedding and
input size, normalisation, alignment template, label normalisation, tasks, params), so no code
ever infers structure from key names. Files are loaded with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from faceattr.io import atomic_path
from faceattr.models.backbones import create_backbone
from faceattr.models.heads import MultiTaskModel


def save_checkpoint(path: str | Path, state_dict: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write a checkpoint atomically."""
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state_dict, "meta": meta}, tmp)


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load (state_dict, meta) safely; a missing or foreign file gets a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' not found")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or "state_dict" not in data or "meta" not in data:
        raise ValueError(f"'{path}' is not a faceattr checkpoint (no state_dict/meta)")
    return data["state_dict"], data["meta"]


def build_trunk(meta: dict[str, Any]) -> nn.Module:
    """Rebuild a trunk described by a checkpoint's meta (weights not loaded)."""
    return create_backbone(
        meta["backbone"],
        input_size=meta["input_size"],
        embedding_size=meta["embedding_size"],
        width=meta["width"],
        stem=meta["stem"],
        features=meta.get("features", "embedding"),
        norm=meta.get("norm"),
    )


def load_multitask(path: str | Path) -> tuple[MultiTaskModel, dict[str, Any]]:
    """Rebuild a fine-tuned multi-task model from its checkpoint, in eval mode."""
    state, meta = load_checkpoint(path)
    model = MultiTaskModel(
        build_trunk(meta),
        tuple(meta["tasks"]),
        meta.get("head_input", meta["embedding_size"]),
        age_head=meta["age_head"],
        max_age=meta["max_age"],
        group_edges=meta["group_edges"],
        gender_conditioned=meta["gender_conditioned"],
        attributes=len(meta["attribute_names"]),
    )

    model.load_state_dict(state)
    if meta.get("tta", "none") == "flip":
        model.flip_at_test(meta["template"], meta["input_size"], meta["landmark_unit"])
    return model.eval(), meta
