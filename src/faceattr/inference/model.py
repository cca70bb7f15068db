"""A fine-tuned network to run on new crops: a checkpoint, an MLflow model or an ONNX file, with
its meta; run in fp32 on the CPU (the precision its ONNX export is checked against)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceattr.train.data import LabelCodec, to_input

CPU = torch.device("cpu")
ONNX_META_KEY = "faceattr_meta"  # the ONNX file's metadata entry holding the checkpoint meta (JSON)


class ModelError(ValueError):
    """The model argument names nothing faceattr can load (a user error: one line, exit 1)."""


@dataclass
class Model:
    """A fine-tuned network (PyTorch or ONNX Runtime) with its checkpoint meta."""

    meta: dict[str, Any]
    torch_model: torch.nn.Module | None = None
    onnx_session: Any = None
    output_names: tuple[str, ...] = ()
    sha256: str = ""  # of the file the network was read from (model.pt or .onnx)
    codec: LabelCodec = field(init=False)

    def __post_init__(self) -> None:
        self.codec = LabelCodec.from_meta(self.meta)

    @property
    def id(self) -> str:
        """Which model answered: its run (``<variant>-s<seed>``) and the first 12 hex digits of its
        file's sha256, e.g. ``face_resnet18-identity-gender+age-s0@3f2a9c01b7de``."""
        run = f"{self.meta['variant']}-s{self.meta['seed']}" if "variant" in self.meta else "model"
        return f"{run}@{self.sha256[:12]}" if self.sha256 else run

    @property
    def kind(self) -> str:
        return "onnx" if self.onnx_session is not None else "pytorch"

    def raw(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The heads' raw outputs for a normalised NCHW float batch."""
        if self.onnx_session is not None:
            outs = self.onnx_session.run(None, {"image": x.numpy()})
            return {k: torch.from_numpy(v) for k, v in zip(self.output_names, outs, strict=True)}
        with torch.no_grad():
            return self.torch_model(x)

    def decode(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """Decoded predictions for uint8 (N, S, S, 3) crops: gender logits, age, spread, landmarks..."""
        x = to_input(
            torch.from_numpy(crops).permute(0, 3, 1, 2), CPU, tuple(self.meta["mean"]), tuple(self.meta["std"])
        )
        pred = self.codec.decode(self.raw(x))
        return {k: v.float().numpy() for k, v in pred.items()}


def load_model(spec: str | Path, device: torch.device | None = None) -> Model:
    """Load a run folder, a ``model.pt``, an MLflow ``models:/`` URI or an ONNX file."""
    text = str(spec)
    if text.startswith(("runs:/", "models:/")):
        return _from_mlflow(text)
    path = Path(text)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise ModelError(f"ONNX model '{path}' not found")
        return _from_onnx(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise ModelError(
            f"model '{text}' not found: give a run folder (models/finetune/<variant>-s<seed>), its model.pt, "
            "an MLflow models:/ URI, or an .onnx file"
        )
    from faceattr.models.checkpoint import load_multitask

    model, meta = load_multitask(path)
    return Model(meta, torch_model=model.to(device or torch.device("cpu")).eval(), sha256=_sha256(path))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _from_onnx(path: Path) -> Model:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    if ONNX_META_KEY not in props:
        raise ModelError(f"ONNX model '{path}' carries no faceattr meta: export it with `faceattr export`")
    return Model(
        json.loads(props[ONNX_META_KEY]),
        onnx_session=session,
        output_names=tuple(o.name for o in session.get_outputs()),
        sha256=_sha256(path),
    )


def _from_mlflow(uri: str) -> Model:
    import mlflow

    from faceattr.tracking import store_uri, tracking_uri

    mlflow.set_tracking_uri(store_uri())
    try:
        local = Path(mlflow.artifacts.download_artifacts(uri))
    except Exception as err:
        raise ModelError(f"MLflow model '{uri}' cannot be fetched from {tracking_uri()}: {err}") from None
    found = sorted(local.rglob("model.pt"))
    if not found:
        raise ModelError(f"MLflow model '{uri}' holds no model.pt (log it with faceattr's evaluate stage)")
    return load_model(found[0])
