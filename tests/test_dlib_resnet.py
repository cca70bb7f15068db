"""dlib's face-recognition ResNet: the .dat reader on the real file, the PyTorch port against dlib
itself on real face chips, and the chip template against MTCNN on chips dlib cut."""

from __future__ import annotations

import struct
import tarfile

import numpy as np
import pandas as pd
import pytest
import torch

from faceattr.models import dlib_resnet as dr

from .conftest import SHARED

LFW = SHARED / "lfw" / "lfw-deepfunneled.tgz"


@pytest.fixture(scope="module")
def dat():
    try:
        return dr.dat_path()
    except FileNotFoundError as err:
        pytest.skip(f"dlib's weights are not installed: {err}")


def test_the_reader_parses_the_real_file_into_dlibs_network(dat) -> None:
    net = dr.read_dat(dat)
    kinds = {k: len(net.of_kind(k)) for k in ("con_4", "affine_", "relu_", "add_prev_", "avg_pool_2", "max_pool_2")}
    # 29 convolutions (the stem and 14 blocks of two), an affine and a relu after each, 14 residual
    # sums, 4 shortcut pools plus the global one, the stem's max-pool
    assert kinds == {"con_4": 29, "affine_": 29, "relu_": 29, "add_prev_": 14, "avg_pool_2": 5, "max_pool_2": 1}
    assert net.input_size == (150, 150) and net.means == pytest.approx((122.782, 117.001, 104.298), abs=1e-3)
    assert net.threshold == pytest.approx(0.6) and net.margin == pytest.approx(0.04)
    # every parameter of the network of dnn_face_recognition_ex.cpp, counted from its layers
    convs = [(3, 32, 7)] + [(a if i == 0 else b, b, 3) for a, b, _ in dr.BLOCKS for i in range(2)]
    expected = sum(k * k * cin * cout + cout + 2 * cout for cin, cout, k in convs) + 256 * 128
    assert net.parameter_count == expected == 5_614_592
    # a known weight: the stem's first filter value, read straight from the bytes at offset 0x160
    first = struct.unpack("<f", dat.read_bytes()[0x160:0x164])[0]
    state = dr.state_dict_from_dat(net)
    assert first == pytest.approx(-0.0293299, abs=1e-7) and state["conv.weight"][0, 0, 0, 0].item() == first


def test_a_file_that_is_not_the_network_is_refused_with_its_name(tmp_path, dat) -> None:
    cut = tmp_path / "cut.dat"
    cut.write_bytes(dat.read_bytes()[: 1 << 20])
    with pytest.raises(dr.DlibFormatError, match=r"cut\.dat' at byte \d+"):
        dr.read_dat(cut)
    other = tmp_path / "other.dat"
    other.write_bytes(b"\x01\x01\x01\x05hello")
    with pytest.raises(dr.DlibFormatError, match=r"other\.dat' is not a dlib loss_metric network"):
        dr.read_dat(other)
    with pytest.raises(FileNotFoundError, match="not found"):
        dr.read_dat(tmp_path / "absent.dat")


def dlib_chips(count: int) -> list[np.ndarray]:
    """``count`` 150×150 chips cut by dlib itself (HOG detector, 5-point shape predictor,
    ``get_face_chip`` with padding 0.25) from the first LFW photos with one detected face."""
    dlib = pytest.importorskip("dlib", reason="dlib-bin (the reference) is not installed")
    if not LFW.is_file():
        pytest.skip(f"no LFW archive at {LFW}")
    from PIL import Image

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dr.dat_path().with_name("shape_predictor_5_face_landmarks.dat")))
    chips = []
    with tarfile.open(LFW, "r:gz") as tar:
        for member in tar:
            if not member.name.endswith(".jpg"):
                continue
            fh = tar.extractfile(member)
            image = np.asarray(Image.open(fh).convert("RGB"))
            faces = detector(image, 1)
            if len(faces) != 1:
                continue
            chips.append(dlib.get_face_chip(image, predictor(image, faces[0]), size=150, padding=dr.CHIP_PADDING))
            if len(chips) == count:
                break
    return chips


@pytest.fixture(scope="module")
def chips(dat) -> list[np.ndarray]:
    return dlib_chips(24)


def test_the_port_gives_dlibs_descriptors_on_real_face_chips(chips, dat, capsys) -> None:
    import dlib

    reference = dlib.face_recognition_model_v1(str(dat))
    model = dr.load_dlib_resnet(dat)
    x = model.normalise(torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float())
    with torch.no_grad():
        ours = model(x).numpy()
    theirs = np.stack([np.asarray(reference.compute_face_descriptor(c)) for c in chips])
    worst = float(np.abs(ours - theirs).max())
    with capsys.disabled():
        print(f"\ndlib_resnet parity: max |port - dlib| = {worst:.3g} over {len(chips)} real LFW chips x 128 dims")
    assert len(chips) >= 20 and worst < 1e-4
    same = np.linalg.norm(theirs[0] - theirs[1:], axis=1)  # different people mostly: above dlib's 0.6
    assert np.median(same) > 0.6


def test_the_chip_template_is_where_mtcnn_finds_the_points_on_dlibs_chips(chips) -> None:
    """dlib aligns on its own 5 points (eye corners, nose base); faceattr aligns MTCNN's 5 points
    onto ``CHIP_TEMPLATE`` (the median over 299 LFW chips). On the first 24 of those chips the
    median of MTCNN's points already lies within 3 % of the chip side of it."""
    pytest.importorskip("facenet_pytorch")
    from PIL import Image

    from faceattr.data.align import MTCNNDetector

    found = [d for d in MTCNNDetector("cpu").detect([Image.fromarray(c) for c in chips]) if d is not None]
    assert len(found) >= 20
    median = np.median([d.landmarks for d in found], 0) / 150
    assert np.abs(median - np.array(dr.CHIP_TEMPLATE)).max() < 0.03, median.round(4).tolist()


def test_pooled_features_and_unknown_choices() -> None:
    model = dr.DlibResNet(features="pooled").eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 150, 150)).shape == (2, 256) and model.output_size == 256
    with pytest.raises(ValueError, match=r"unknown dlib_resnet features 'x'; choose from"):
        dr.DlibResNet(features="x")


def test_the_pipelines_dlib_normalisation_is_the_networks_own(dat) -> None:
    """``to_input`` with NORMALISATION['dlib'] gives (pixel - mean) / 256 with the file's means."""
    from faceattr.train.data import NORMALISATION, to_input

    mean, std = NORMALISATION["dlib"]
    assert np.allclose(np.array(mean) * 255, dr.read_dat(dat).means, atol=1e-9)
    pixels = torch.randint(0, 256, (2, 3, 150, 150), dtype=torch.uint8)
    ours = to_input(pixels, torch.device("cpu"), mean, std)
    assert torch.allclose(ours, dr.DlibResNet().normalise(pixels.float()), atol=1e-6)


@pytest.mark.parametrize(("features", "width"), [("embedding", 128), ("pooled", 256)])
def test_a_dlib_variant_starts_from_dlibs_weights_with_heads_on_the_chosen_features(dat, features, width) -> None:
    from dataclasses import replace

    from faceattr.config import FinetuneConfig
    from faceattr.models.checkpoint import build_trunk
    from faceattr.train.finetune import build_model, normalisation
    from faceattr.variants import parse_variant

    cfg = replace(FinetuneConfig(), embedding_size=128, dlib_features=features)
    variant = parse_variant("dlib_resnet-dlib-gender+age")
    model, meta = build_model(variant, cfg, 150, None)
    reference = dr.load_dlib_resnet(dat).state_dict()
    assert all(torch.equal(model.trunk.state_dict()[k], v) for k, v in reference.items())
    assert meta["features"] == features and meta["head_input"] == width
    out = model.eval()(torch.zeros(2, 3, 150, 150))
    assert out["gender"].shape == (2, 2)
    meta = {**meta, "input_size": 150}
    assert build_trunk(meta).output_size == width  # a checkpoint rebuilds the same trunk
    scratch, _ = build_model(parse_variant("dlib_resnet-none-gender+age"), cfg, 150, None)
    assert not torch.equal(scratch.trunk.state_dict()["conv.weight"], reference["conv.weight"])
    assert (
        normalisation(variant)
        == normalisation(parse_variant("dlib_resnet-none-gender"))
        != normalisation(parse_variant("face_resnet18-none-gender"))
    )


def test_dlibs_weights_refuse_crops_of_another_geometry() -> None:
    """dlib's weights learned dlib's 150-px chips: ArcFace-template crops stop the run, naming the fix."""
    from faceattr.train.data import FaceTensors
    from faceattr.train.finetune import check_geometry
    from faceattr.variants import parse_variant

    def tensors(size: int, template: str) -> FaceTensors:
        n = 2
        return FaceTensors(
            images=torch.zeros(n, 3, size, size, dtype=torch.uint8),
            gender=torch.zeros(n, dtype=torch.long),
            age=torch.zeros(n),
            landmarks=torch.zeros(n, 5, 2),
            identity=torch.zeros(n, dtype=torch.long),
            identity_names=("a",),
            template_name=template,
        )

    variant = parse_variant("dlib_resnet-dlib-gender")
    check_geometry(variant, tensors(150, "dlib"))
    with pytest.raises(ValueError, match=r"112 px on the arcface template: set align.template: dlib"):
        check_geometry(variant, tensors(112, "arcface"))
    check_geometry(parse_variant("dlib_resnet-none-gender"), tensors(112, "arcface"))  # from scratch: any crop


def test_the_align_stage_cuts_dlibs_chip_and_records_it(tmp_path) -> None:
    """``align.template: dlib``: the five points land on dlib's chip template at 150 px, and the
    store's geometry (what training and predict read) names the template and its points."""
    import json

    from PIL import Image

    from faceattr.config import AlignConfig
    from faceattr.data import manifest
    from faceattr.data.align import DLIB_CHIP_TEMPLATE
    from faceattr.data.aligning import align_dataset
    from faceattr.train.data import load_split

    raw = tmp_path / "raw"
    raw.mkdir()
    Image.new("RGB", (250, 250), (120, 90, 60)).save(raw / "a.jpg")
    row = manifest.empty_record("a.jpg")
    points = np.array([[90, 110], [160, 108], [125, 145], [98, 180], [155, 182]], dtype=float)
    row.update(dict(zip(manifest.LANDMARK_COLUMNS, points.ravel(), strict=True)))
    manifest.write(pd.DataFrame([row]), raw / "manifest.csv")
    cfg = AlignConfig(size=150, template="dlib", landmarks="provided")
    align_dataset(raw, tmp_path / "store", tmp_path / "dropped.csv", cfg)
    geometry = json.loads((tmp_path / "store" / "geometry.json").read_text())
    assert geometry["template"] == "dlib" and geometry["size"] == 150
    assert np.allclose(geometry["template_points"], DLIB_CHIP_TEMPLATE)
    labels = manifest.read(tmp_path / "store" / "labels.csv")
    aligned = labels[list(manifest.LANDMARK_COLUMNS)].to_numpy(float).reshape(5, 2)
    assert np.abs(aligned - np.array(DLIB_CHIP_TEMPLATE) * 150).max() < 8  # a similarity fit of 5 points
    pd.DataFrame({"index": [0], "split": ["train"]}).to_csv(tmp_path / "split.csv", index=False)
    data = load_split(tmp_path / "store", tmp_path / "split.csv", ("train",))
    assert data.geometry()["template"] == "dlib"  # what the checkpoint meta records, and predict cuts
    assert np.allclose(data.template(), np.array(DLIB_CHIP_TEMPLATE) * 150)


def test_dlib_geometry_params_are_checked() -> None:
    from faceattr.config import AlignConfig

    AlignConfig(size=150, template="dlib")
    with pytest.raises(ValueError, match=r"only align\.template: dlib"):
        AlignConfig(size=150)
    with pytest.raises(ValueError, match=r"align\.crop: template and align\.scale: 1"):
        AlignConfig(size=150, template="dlib", scale=1.2)


def test_a_pretrained_trunk_trains_at_its_scaled_lr_and_scratch_has_batch_norm() -> None:
    """``optim.trunk_lr_scale`` slows only the trunk of a variant that starts from weights (dlib's
    network has no batch norm: at lr 1e-3 its features were lost within dozens of steps); dlib's
    network from scratch has batch norm, as dlib trains it."""
    from dataclasses import replace

    from faceattr.config import FinetuneConfig, OptimConfig
    from faceattr.models.backbones import create_backbone
    from faceattr.train.loop import make_optimizer, set_lr

    scratch = create_backbone("dlib_resnet", input_size=150, embedding_size=128)
    assert scratch.norm == "batch" and isinstance(scratch.bn, torch.nn.BatchNorm2d)
    model = torch.nn.ModuleDict({"trunk": scratch, "head": torch.nn.Linear(128, 2)})
    cfg = replace(OptimConfig(), lr=1e-3, trunk_lr_scale=0.01)
    optimizer = make_optimizer(model, cfg, model["trunk"])
    set_lr(optimizer, 1e-3)
    lrs = {len(g["params"]): g["lr"] for g in optimizer.param_groups}
    assert lrs == {len(list(scratch.parameters())): pytest.approx(1e-5), 2: pytest.approx(1e-3)}
    plain = make_optimizer(model, cfg)  # no trunk named: one group at the full lr
    set_lr(plain, 1e-3)
    assert [g["lr"] for g in plain.param_groups] == [1e-3]
    with pytest.raises(ValueError, match="trunk_lr_scale"):
        replace(FinetuneConfig().optim, trunk_lr_scale=0.0)
