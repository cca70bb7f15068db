"""ONNX export of a fine-tuned network: the trunk and every head, a dynamic batch axis, and the
checkpoint's meta (crop size, template, normalisation, label decoding) in the file's metadata, so
``faceattr predict --model model.onnx`` decodes it exactly as the PyTorch checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from faceattr.inference.model import ONNX_META_KEY, load_model
from faceattr.models.checkpoint import load_multitask


class _Outputs(nn.Module):
    """The model's output dict as a tuple in a fixed order (ONNX graphs return sequences)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(image)
        return tuple(out[k] for k in self.names)


def export_onnx(model_path: str | Path, out: str | Path, opset: int = 18) -> Path:
    """Write ``out`` from a run folder or ``model.pt``; exported in ``eval()`` with a batch of 2,
    so the batch axis stays dynamic (a batch-1 example would let the exporter fix it)."""
    path = Path(model_path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"model '{model_path}' not found: give a run folder (models/finetune/<run>) or model.pt"
        )
    model, meta = load_multitask(path)
    model.eval()
    size = int(meta["input_size"])
    example = torch.randn(2, 3, size, size)
    with torch.no_grad():
        names = tuple(model(example))
    wrapped = _Outputs(model, names).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapped,
            (example,),
            input_names=["image"],
            output_names=list(names),
            dynamic_shapes={"image": {0: batch}},
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    program.optimize()
    import onnx

    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps(meta)
    onnx.save(proto, str(tmp))
    tmp.replace(out)
    return out


class ParityError(ValueError):
    """The exported graph does not compute what the checkpoint does."""


def export_checked(
    model_path: str | Path, out: str | Path, store: Path, split_file: Path, opset: int, tolerance: float
) -> dict:
    """Export, then check ONNX Runtime against PyTorch on test crops before ``out`` appears: a
    graph whose outputs differ by more than ``tolerance`` is removed and the stage fails."""
    out = Path(out)
    candidate = export_onnx(model_path, out.with_name(f".{out.name}.unchecked.onnx"), opset)
    try:
        diff = parity(model_path, candidate, store, split_file)
        if not diff["parity_max_abs_diff"] <= tolerance:
            raise ParityError(
                f"the ONNX export of '{model_path}' differs from PyTorch by {diff['parity_max_abs_diff']:.3g} on "
                f"{diff['parity_images']} test crops (export.parity_tolerance {tolerance:g}); no {out} was written"
            )
        candidate.replace(out)
    finally:
        candidate.unlink(missing_ok=True)
    return diff


def parity(model_path: str | Path, onnx_file: str | Path, store: Path, split_file: Path, images: int = 16) -> dict:
    """Largest absolute difference of every head's raw output, ONNX Runtime against PyTorch, on the
    first ``images`` test crops (batch of all of them, and of one)."""
    import numpy as np

    from faceattr.train.data import load_split, to_input

    test = load_split(store, split_file, ("test",))
    crops = test.images[:images]
    ours, theirs = load_model(model_path), load_model(onnx_file)
    x = to_input(crops, torch.device("cpu"), tuple(ours.meta["mean"]), tuple(ours.meta["std"]))
    worst = 0.0
    for batch in (x, x[:1]):
        a, b = ours.raw(batch), theirs.raw(batch)
        worst = max(worst, *(float(np.abs(a[k].numpy() - b[k].numpy()).max()) for k in a))
    return {"parity_max_abs_diff": worst, "parity_images": len(crops), "onnx_bytes": Path(onnx_file).stat().st_size}
