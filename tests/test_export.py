"""ONNX export: the same answers as PyTorch on real aligned faces, at batch sizes 1 and 7."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from faceattr.cli import main
from faceattr.data.align import MTCNNDetector, align_face
from faceattr.predict import load_model

from .conftest import TINY_VARIANTS

pytest.importorskip("onnxruntime")
pytest.importorskip("facenet_pytorch")


@pytest.fixture(scope="module")
def crops(pipeline) -> np.ndarray:
    """Seven real aligned faces: Grace Hopper, mirrored, shifted, rescaled and recoloured."""
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        photo = Image.open(fh).convert("RGB")
    size = int(load_model(pipeline["models"] / "finetune" / f"{TINY_VARIANTS[0]}-s0").meta["input_size"])
    variants = [
        photo,
        ImageOps.mirror(photo),
        photo.crop((20, 0, 512, 560)),
        photo.resize((384, 450)),
        ImageOps.grayscale(photo).convert("RGB"),
        ImageOps.autocontrast(photo, cutoff=5),
        photo.rotate(8, expand=True),
    ]
    detector = MTCNNDetector("cpu", min_probability=0.9)
    out = []
    for im in variants:
        (det,) = detector.detect([im])
        out.append(align_face(im, det.landmarks, size).crop)
    return np.stack(out)


def test_onnx_matches_pytorch_on_real_faces(tmp_path, pipeline, crops, capsys) -> None:
    run = pipeline["models"] / "finetune" / f"{TINY_VARIANTS[0]}-s0"
    onnx_file = tmp_path / "model.onnx"
    assert main(["export", str(run), "--onnx", str(onnx_file)]) == 0
    ours, theirs = load_model(run), load_model(onnx_file)
    assert theirs.kind == "onnx" and theirs.meta == json.loads(json.dumps(ours.meta))
    mean = torch.tensor(ours.meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(ours.meta["std"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255 - mean) / std
    for n in (1, 7):
        a, b = ours.raw(x[:n]), theirs.raw(x[:n])
        assert set(a) == set(b) == {"gender", "age", "landmarks"}
        for k in a:
            np.testing.assert_allclose(b[k].numpy(), a[k].numpy(), rtol=1e-3, atol=1e-5, err_msg=f"{k}, batch {n}")
    assert main(["export", str(tmp_path / "missing"), "--onnx", str(tmp_path / "x.onnx")]) == 1
    assert "not found" in capsys.readouterr().err


def test_predict_accepts_the_onnx_file(tmp_path, pipeline, crops) -> None:
    run = pipeline["models"] / "finetune" / f"{TINY_VARIANTS[0]}-s0"
    onnx_file = tmp_path / "model.onnx"
    assert main(["export", str(run), "--onnx", str(onnx_file)]) == 0
    for i, crop in enumerate(crops):
        Image.fromarray(crop).save(tmp_path / f"face{i}.png")
    rows = {}
    for model in (run, onnx_file):
        out = tmp_path / f"{model.name}.jsonl"
        argv = ["predict", str(tmp_path / "face*.png"), "--aligned", "--model", str(model), "--out", str(out)]
        assert main(argv) == 0
        rows[model.name] = [json.loads(line) for line in out.read_text().splitlines()]
    for a, b in zip(rows[run.name], rows["model.onnx"], strict=True):
        assert a["gender"] == b["gender"] and abs(a["age"] - b["age"]) < 0.05


def test_export_stage_fails_and_leaves_no_onnx_when_parity_fails(tmp_path, pipeline, monkeypatch) -> None:
    """A graph that does not compute what the checkpoint does (here: another seed's network
    exported in its place) fails the stage; neither it nor an earlier export is left at --out."""
    from faceattr import export

    from .conftest import load_stage

    out = tmp_path / "export" / "model.onnx"
    out.parent.mkdir()
    out.write_bytes(b"an earlier export")
    chosen = json.loads((pipeline["metrics"] / "export.json").read_text())["run"]
    impostor = chosen[: -len("-s0")] + ("-s1" if chosen.endswith("-s0") else "-s0")  # same heads, other weights
    assert (pipeline["models"] / "finetune" / impostor).is_dir()
    real = export.export_onnx
    monkeypatch.setattr(
        export,
        "export_onnx",
        lambda path, dest, opset=18: real(pipeline["models"] / "finetune" / impostor, dest, opset),
    )
    argv = [
        "--params", str(pipeline["params"]),
        "--evaluation", str(pipeline["metrics"] / "evaluate.json"),
        "--models", str(pipeline["models"] / "finetune"),
        "--store", str(pipeline["store"]),
        "--split", str(pipeline["split.csv"]),
        "--out", str(out),
        "--metrics", str(tmp_path / "export.json"),
    ]  # fmt: skip
    with pytest.raises(export.ParityError, match=r"differs from PyTorch by .* \(export\.parity_tolerance"):
        load_stage("export").main(argv)
    assert not out.exists() and list(out.parent.iterdir()) == []
    assert not (tmp_path / "export.json").exists()
