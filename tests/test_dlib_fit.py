"""align.fit: dlib: the warp fits dlib's own five points (its 5-point shape predictor's eye
corners and nose base, found in MTCNN's box) onto dlib's chip, so faceattr cuts the chips dlib's
network was trained on; the store records it and predict does the same to a new photo."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from faceattr.config import AlignConfig
from faceattr.data.align import (
    DLIB_CHIP_PADDING,
    DLIB_CHIP_TEMPLATE,
    DlibShapePredictor,
    MTCNNDetector,
    align_face,
    apply_transform,
    dlib_fit_template,
    shape_points,
    similarity_transform,
)


def test_fit_dlib_needs_dlibs_chip_and_mtcnns_box() -> None:
    with pytest.raises(ValueError, match=r"align\.template: dlib"):
        AlignConfig(size=64, fit="dlib")
    with pytest.raises(ValueError, match="not provided"):
        AlignConfig(size=150, template="dlib", fit="dlib", landmarks="provided")
    assert AlignConfig(size=150, template="dlib", fit="dlib").fit == "dlib"


def test_dlib_fit_template_is_dlibs_padded_chip() -> None:
    """get_face_chip_details' points at padding 0.25: (p + 0.25) / 1.5 of the side; the nose base
    sits on the chip's vertical centre line within 1 % and the eyes level within 2 %."""
    points = dlib_fit_template(150)
    np.testing.assert_allclose(points[0], (np.array([0.8595674595992, 0.2134981538014]) + 0.25) / 1.5 * 150)
    assert DLIB_CHIP_PADDING == 0.25
    assert abs(points[4, 0] - 75) < 1.5
    assert abs(points[0, 1] - points[2, 1]) < 3


def test_align_face_fits_the_given_points_and_carries_the_landmarks() -> None:
    """With ``fit``, the fit points land on their targets and the landmarks ride the same warp."""
    angle, scale, shift = math.radians(15), 1.3, np.array([40.0, 25.0])
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    target = dlib_fit_template(150)
    fit_points = target @ rot.T + shift  # where those points lie in a turned, scaled photo
    landmarks = np.array([[60.0, 70.0], [110.0, 72.0], [85.0, 100.0], [65.0, 125.0], [105.0, 126.0]]) @ rot.T + shift
    image = Image.fromarray(np.zeros((300, 300, 3), np.uint8))
    face = align_face(image, landmarks, 150, fit=(fit_points, target))
    want = (landmarks - shift) @ np.linalg.inv(rot).T  # undo the photo's turn, scale and shift
    np.testing.assert_allclose(face.landmarks, want, atol=1e-6)
    plain = align_face(image, landmarks, 150, points=DLIB_CHIP_TEMPLATE)
    assert np.abs(plain.landmarks - want).max() > 5, "without fit the landmarks themselves are fitted"


@pytest.fixture(scope="module")
def hopper() -> Image.Image:
    pytest.importorskip("facenet_pytorch")
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        return Image.open(fh).convert("RGB")


@pytest.fixture(scope="module")
def dlib_chip(hopper):
    """dlib's own pipeline on Grace Hopper: HOG detector, 5-point predictor in HOG's box,
    get_face_chip(150, 0.25); with the points it fitted."""
    dlib = pytest.importorskip("dlib", reason="dlib-bin (the reference) is not installed")
    from faceattr.models.dlib_resnet import dat_path

    predictor = dlib.shape_predictor(str(dat_path().with_name("shape_predictor_5_face_landmarks.dat")))
    image = np.asarray(hopper)
    (box,) = dlib.get_frontal_face_detector()(image, 1)
    shape = predictor(image, box)
    points = shape_points(shape)
    return np.asarray(dlib.get_face_chip(image, shape, size=150, padding=DLIB_CHIP_PADDING)), points


def test_dlib_fit_cuts_dlibs_own_chip_from_mtcnns_box(hopper, dlib_chip) -> None:
    """From MTCNN's box, the predictor finds dlib's points within 3 % of the eye distance (mean over
    the five) of those it finds in HOG's box; the warp puts dlib's points nearer dlib's chip
    positions than the warp fitted to MTCNN's points does, and the chip is nearer dlib's own."""
    reference, dlib_points = dlib_chip
    (det,) = MTCNNDetector("cpu").detect([hopper])
    points = DlibShapePredictor().points(hopper, det.box)
    eyes = np.linalg.norm(dlib_points[0] - dlib_points[2])
    assert np.linalg.norm(points - dlib_points, axis=1).mean() < 0.03 * eyes
    target = dlib_fit_template(150)
    fitted = similarity_transform(points, target)
    mtcnn = similarity_transform(det.landmarks, np.asarray(DLIB_CHIP_TEMPLATE) * 150)

    def off(matrix: np.ndarray) -> float:  # px between where a warp puts dlib's points and dlib's chip
        return float(np.linalg.norm(apply_transform(matrix, dlib_points) - target, axis=1).mean())

    chip_eyes = np.linalg.norm(target[0] - target[2])
    assert off(fitted) < 0.03 * chip_eyes and off(fitted) < off(mtcnn) / 2, (off(fitted), off(mtcnn))
    chip = align_face(hopper, det.landmarks, 150, fit=(points, target))
    plain = align_face(hopper, det.landmarks, 150, points=DLIB_CHIP_TEMPLATE)

    def gap(crop: np.ndarray) -> float:
        return float(np.abs(crop.astype(np.float64) - reference).mean())

    assert gap(chip.crop) < gap(plain.crop)
    # the landmarks still are MTCNN's, carried into the chip near where the MTCNN fit puts them
    assert np.abs(chip.landmarks / 150 - np.asarray(DLIB_CHIP_TEMPLATE)).max() < 0.1


def test_the_store_records_the_fit_and_predict_fits_a_new_photo_the_same_way(tmp_path, hopper, dlib_chip) -> None:
    import pandas as pd

    from faceattr.data import manifest
    from faceattr.data.aligning import align_dataset
    from faceattr.data.packed import read_geometry, read_store
    from faceattr.inference.model import Model
    from faceattr.predict import Predictor

    raw = tmp_path / "raw"
    raw.mkdir()
    hopper.save(raw / "hopper.png")
    manifest.write(pd.DataFrame([manifest.empty_record("hopper.png")]), raw / "manifest.csv")
    cfg = AlignConfig(size=150, template="dlib", fit="dlib")
    counts = align_dataset(raw, tmp_path / "store", tmp_path / "dropped.csv", cfg)
    assert counts["aligned"] == 1
    geometry = read_geometry(tmp_path / "store")
    assert geometry["fit"] == "dlib"
    faces, _ = read_store(tmp_path / "store")
    meta = {"input_size": 150, "geometry": geometry, "template_points": geometry["template_points"],
            "age_mean": 30.0, "age_std": 10.0, "age_head": "regression", "max_age": 100,
            "group_edges": [10, 20, 30, 40, 50, 60, 70]}  # fmt: skip
    predictor = Predictor(Model(meta))
    (face,), reason = predictor.faces("hopper.png", hopper)
    assert reason is None
    np.testing.assert_array_equal(face.crop, np.asarray(faces[0]), "predict cuts the chip the store holds")
    mtcnn = Predictor(Model({**meta, "geometry": {**geometry, "fit": "mtcnn"}}))
    assert np.abs(mtcnn.faces("hopper.png", hopper)[0][0].crop.astype(int) - faces[0]).mean() > 1


def test_provided_landmarks_are_fitted_as_they_are_and_counted(tmp_path, hopper) -> None:
    """One crop geometry serves both roles: a record whose landmarks the data set provides (the
    synthetic identities, CelebA's) has no box for dlib's predictor, so it is fitted as it is,
    never dropped; metrics say how many crops were cut each way."""
    pytest.importorskip("dlib", reason="dlib-bin is not installed")
    import pandas as pd

    from faceattr.data import manifest
    from faceattr.data.aligning import align_dataset
    from faceattr.data.packed import read_geometry

    raw = tmp_path / "raw"
    raw.mkdir()
    hopper.save(raw / "hopper.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 100, 3), dtype=np.uint8)).save(raw / "drawn.png")
    drawn = manifest.empty_record("drawn.png")
    points = np.array([[35, 50], [65, 50], [50, 65], [38, 80], [62, 80]], dtype=float)
    drawn.update({c: v for c, v in zip(manifest.LANDMARK_COLUMNS, points.ravel(), strict=True)})
    manifest.write(pd.DataFrame([manifest.empty_record("hopper.png"), drawn]), raw / "manifest.csv")
    cfg = AlignConfig(size=150, template="dlib", fit="dlib")
    counts = align_dataset(raw, tmp_path / "store", tmp_path / "dropped.csv", cfg)
    assert counts["aligned"] == 2 and counts["fitted"] == {"dlib": 1, "landmarks": 1}
    assert read_geometry(tmp_path / "store")["fit"] == "dlib"


def test_without_dlib_the_error_says_what_to_install(monkeypatch) -> None:
    import builtins

    real = builtins.__import__

    def no_dlib(name, *args, **kwargs):
        if name == "dlib":
            raise ImportError("No module named 'dlib'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dlib)
    image = Image.fromarray(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ImportError, match=r"pip install 'faceattr\[dlib\]'"):
        DlibShapePredictor().points(image, np.array([10.0, 10.0, 50.0, 50.0]))


def test_box_map_is_applied(monkeypatch) -> None:
    """The predictor runs in HOG's box made from MTCNN's, not in MTCNN's box itself."""
    pytest.importorskip("dlib", reason="dlib-bin is not installed")
    seen = []
    shape5 = DlibShapePredictor()
    shape5._model()

    class Part:
        x = y = 0

    def fake(image, rect):
        seen.append((rect.left(), rect.top(), rect.right(), rect.bottom()))
        return type("S", (), {"part": staticmethod(lambda i: Part)})()

    shape5._predictor = fake
    shape5.points(Image.fromarray(np.zeros((300, 300, 3), np.uint8)), np.array([100.0, 100.0, 200.0, 200.0]))
    assert seen == [(90, 112, 204, 196)]
