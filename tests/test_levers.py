"""Recipe levers of fine-tuning: flip test-time augmentation and a moving average of the weights."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from faceattr.cli import main
from faceattr.config import FinetuneConfig, load_section
from faceattr.data.align import crop_template
from faceattr.inference import load_model
from faceattr.models.backbones import create_backbone
from faceattr.models.checkpoint import save_checkpoint
from faceattr.models.heads import MultiTaskModel
from faceattr.train.data import LabelCodec
from faceattr.train.finetune import EMA, finetune
from faceattr.variants import parse_variant

from .conftest import TINY_VARIANTS
from .test_stages import Killed, _finetune_inputs, kill_after_first_epoch

SIZE = 32
MIRROR = [1, 0, 2, 4, 3]  # the image's left eye is the mirrored image's right eye, and so on


def _model(age_head: str = "dldl") -> tuple[MultiTaskModel, LabelCodec]:
    torch.manual_seed(0)
    trunk = create_backbone("face_resnet18", input_size=SIZE, embedding_size=16, width=4)
    model = MultiTaskModel(trunk, ("gender", "age", "landmarks"), 16, age_head=age_head)
    codec = LabelCodec(SIZE, 30.0, 12.0, age_head=age_head)
    return model.eval(), codec


def _mirror_points(points: torch.Tensor) -> torch.Tensor:
    """Landmarks (N, 5, 2) in crop pixels of an image, as they lie in its mirror image."""
    x, y = SIZE - points[..., 0], points[..., 1]
    return torch.stack([x, y], -1)[:, MIRROR]


@pytest.mark.parametrize("age_head", ["dldl", "regression"])
def test_flip_tta_answers_an_image_and_its_mirror_alike(age_head) -> None:
    """With flip TTA the model's answer for the mirrored image is the mirror of its answer: the
    same gender and age, the landmarks mirrored (x → S − x, left and right swapped). Without it a
    random network's answers differ, so the check can fail."""
    model, codec = _model(age_head)
    x = torch.randn(6, 3, SIZE, SIZE)
    with torch.no_grad():
        plain, plain_mirror = codec.decode(model(x)), codec.decode(model(x.flip(3)))
        model.flip_at_test(crop_template(SIZE).tolist(), SIZE, codec.landmark_unit)
        tta, tta_mirror = codec.decode(model(x)), codec.decode(model(x.flip(3)))
    assert not torch.allclose(_mirror_points(plain["landmarks"]), plain_mirror["landmarks"], atol=1e-3)
    torch.testing.assert_close(tta_mirror["gender"], tta["gender"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tta_mirror["age"], tta["age"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(tta_mirror["landmarks"], _mirror_points(tta["landmarks"]), atol=1e-4, rtol=1e-5)
    # and it is the mean of the two passes: gender logits are linear in the average
    torch.testing.assert_close(tta["gender"], (plain["gender"] + plain_mirror["gender"]) / 2, atol=1e-5, rtol=1e-5)


def test_flip_tta_runs_each_image_once_in_training() -> None:
    model, codec = _model()
    model.flip_at_test(crop_template(SIZE).tolist(), SIZE, codec.landmark_unit).train()
    calls = []
    model.trunk.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    model(torch.randn(4, 3, SIZE, SIZE))
    assert calls == [4]


def test_ema_is_the_moving_average_of_the_weights() -> None:
    """The first update copies the weights; each later one moves the average by (1 − decay)."""
    net = nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema = EMA(net, 0.9)
    ema.update()
    with torch.no_grad():
        net.weight.fill_(3.0)
    ema.update()
    torch.testing.assert_close(ema.model.weight, torch.full((1, 2), 0.9 * 1.0 + 0.1 * 3.0))
    assert float(net.weight[0, 0]) == 3.0  # the trained weights themselves are untouched


def _cfg(pipeline, **changes) -> FinetuneConfig:
    cfg = load_section(pipeline["params"], "finetune_multitask", FinetuneConfig)
    cfg = dataclasses.replace(cfg, accel=dataclasses.replace(cfg.accel, resume_every_s=0.0))
    return dataclasses.replace(cfg, **changes)


def test_ema_training_saves_the_average_and_resumes_to_the_uninterrupted_weights(pipeline, tmp_path) -> None:
    cfg = _cfg(pipeline, ema=0.9)
    variant = parse_variant(TINY_VARIANTS[0])
    common = _finetune_inputs(pipeline)
    full, meta, _ = finetune(variant, cfg, resume_path=tmp_path / "full.pt", on_epoch=lambda row: None, **common)
    assert meta["ema"] == 0.9
    last = torch.load(tmp_path / "full.pt", weights_only=True)["modules"]["model"]
    differs = [k for k, v in full.state_dict().items() if v.is_floating_point() and not torch.allclose(v, last[k])]
    assert differs, "the saved model is the moving average, not the last weights"
    with pytest.raises(Killed):
        finetune(variant, cfg, resume_path=tmp_path / "killed.pt", on_epoch=kill_after_first_epoch, **common)
    resumed, _, _ = finetune(variant, cfg, resume_path=tmp_path / "killed.pt", on_epoch=lambda row: None, **common)
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, msg=f"weights differ at {k}")


def test_a_flip_tta_checkpoint_is_loaded_exported_and_predicted_with_it(pipeline, tmp_path) -> None:
    """The checkpoint's meta carries `tta: flip`: loading it (evaluate, predict, serving) and its
    ONNX export apply the same test-time augmentation as the model training validated."""
    cfg = _cfg(pipeline, tta="flip")
    model, meta, _ = finetune(
        parse_variant(TINY_VARIANTS[0]), cfg, resume_path=tmp_path / "r.pt", on_epoch=lambda row: None,
        **_finetune_inputs(pipeline),
    )  # fmt: skip
    assert meta["tta"] == "flip" and model.flip
    run = tmp_path / "run"
    save_checkpoint(run / "model.pt", model.state_dict(), meta)
    loaded = load_model(run)
    assert loaded.torch_model.flip
    x = torch.randn(5, 3, meta["input_size"], meta["input_size"])
    with torch.no_grad():
        expected = model.eval()(x)
    for k, v in loaded.raw(x).items():
        torch.testing.assert_close(v, expected[k])
    onnx_file = tmp_path / "model.onnx"
    assert main(["export", str(run), "--onnx", str(onnx_file)]) == 0
    onnx = load_model(onnx_file)
    assert json.loads(json.dumps(meta)) == onnx.meta
    for k, v in onnx.raw(x).items():
        np.testing.assert_allclose(v.numpy(), expected[k].numpy(), rtol=1e-3, atol=1e-5, err_msg=k)


def test_ema_outside_its_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"ema is the moving average's decay per step, in \[0, 1\)"):
        FinetuneConfig(ema=1.0)
