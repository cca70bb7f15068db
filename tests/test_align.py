"""Alignment: the template maps onto itself, known transforms are recovered, MTCNN finds a real face."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from faceattr.data.align import (
    ARCFACE_TEMPLATE_112,
    MTCNNDetector,
    align_face,
    apply_transform,
    similarity_transform,
    template,
)


def test_template_maps_onto_itself() -> None:
    m = similarity_transform(ARCFACE_TEMPLATE_112, ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-9)


def test_template_scales_with_size() -> None:
    np.testing.assert_allclose(template(56), ARCFACE_TEMPLATE_112 / 2)
    np.testing.assert_allclose(template(112)[0], [38.2946, 51.6963])


def test_recovers_a_known_similarity() -> None:
    angle, scale, shift = math.radians(20), 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    src = ARCFACE_TEMPLATE_112
    dst = src @ rot.T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(apply_transform(m, src), dst, atol=1e-9)


def test_align_face_puts_marked_points_on_the_template() -> None:
    """Draw dots at landmarks in a rotated, scaled frame; after alignment they sit on the template."""
    size = 112
    angle, scale, shift = math.radians(-12), 1.4, np.array([30.0, 20.0])
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    points = ARCFACE_TEMPLATE_112 @ rot.T + shift
    image = np.zeros((240, 240, 3), np.uint8)
    for x, y in points:
        image[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3] = 255
    face = align_face(Image.fromarray(image), points + 0.5, size)  # dot centres
    crop, aligned = face.crop, face.landmarks
    np.testing.assert_allclose(aligned, template(size), atol=1e-6)
    for x, y in template(size):
        patch = crop[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2]
        assert patch.mean() > 120, f"no dot near template point ({x:.1f}, {y:.1f})"


def test_mtcnn_aligns_a_real_face() -> None:
    """Grace Hopper's portrait ships with matplotlib, so a real face exists on every machine."""
    pytest.importorskip("facenet_pytorch")
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        image = Image.open(fh).convert("RGB")
    (det,) = MTCNNDetector("cpu").detect([image])
    assert det is not None and det.probability > 0.99
    left_eye, right_eye = det.landmarks[0], det.landmarks[1]
    assert left_eye[0] < right_eye[0], "points must come left eye (image left) first"
    face = align_face(image, det.landmarks, 112)
    crop, aligned = face.crop, face.landmarks
    assert crop.shape == (112, 112, 3)
    assert np.abs(aligned - template(112)).max() < 8  # a real face fits the template within a few px
    (again,) = MTCNNDetector("cpu").detect([Image.fromarray(crop)])
    assert again is not None, "MTCNN must find the face in its own aligned crop"


def test_batched_crops_equal_area_interpolation_box_by_box() -> None:
    """The summed-area crops are facenet-pytorch's ``interpolate(mode="area")`` of each box,
    shrinking and enlarging, at the image edge and one pixel wide."""
    import torch

    from faceattr.data.mtcnn import crop_area_resize, summed_area

    gen = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (3, 3, 70, 90), generator=gen).float()
    boxes = np.array([[0, 70, 0, 90], [5, 17, 8, 60], [40, 41, 3, 4], [10, 58, 80, 90], [0, 30, 0, 11]])
    inds = torch.tensor([0, 1, 2, 1, 0])
    for size in (24, 48):
        got = crop_area_resize(summed_area(imgs), (70, 90), inds, *boxes.T, size)
        for k, (y0, y1, x0, x1) in enumerate(boxes):
            crop = imgs[inds[k], :, y0:y1, x0:x1].unsqueeze(0)
            want = torch.nn.functional.interpolate(crop, size=(size, size), mode="area")[0]
            torch.testing.assert_close(got[k], want, rtol=0, atol=1e-3)


def test_batched_detection_finds_what_facenet_pytorch_finds() -> None:
    """faceattr's batched MTCNN stages against ``MTCNN.detect``: same faces, same landmarks, on
    Grace Hopper at four crops (one batch) and with nothing to find."""
    pytest.importorskip("facenet_pytorch")
    from facenet_pytorch import MTCNN
    from matplotlib import cbook

    from faceattr.data.mtcnn import detect_faces

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        face = Image.open(fh).convert("RGB")
    crops = [face.crop((k * 9, k * 7, 400 + k * 9, 460 + k * 7)).resize((200, 230)) for k in range(4)]
    crops.append(Image.new("RGB", (200, 230), (90, 90, 90)))
    mtcnn = MTCNN(keep_all=True, min_face_size=20)
    want_boxes, want_probs, want_points = mtcnn.detect(crops, landmarks=True)
    boxes, probs, points = detect_faces(mtcnn, crops)
    assert boxes[-1] is None and want_boxes[-1] is None, "a flat grey image has no face"
    for k in range(4):
        assert len(boxes[k]) == len(want_boxes[k]) >= 1
        np.testing.assert_allclose(points[k], np.asarray(want_points[k], dtype=float), atol=1e-2)
        np.testing.assert_allclose(boxes[k], np.asarray(want_boxes[k], dtype=float), atol=1e-2)
        np.testing.assert_allclose(probs[k], np.asarray(want_probs[k], dtype=float), atol=1e-5)
    with pytest.raises(ValueError, match="one size"):
        detect_faces(mtcnn, [crops[0], crops[0].resize((100, 100))])


def test_resize_keeps_the_data_sets_crop_and_maps_the_landmarks() -> None:
    from faceattr.data.align import resize_face

    yy, xx = np.mgrid[0:218, 0:178]  # a smooth photo of img_align_celeba's shape: resampling differs by ≤ 2
    photo = Image.fromarray(np.stack([xx * 1.4, yy * 1.1, (xx + yy) * 0.6], -1).astype(np.uint8))
    points = np.array([[60.0, 110.0], [118.0, 111.0], [89.0, 140.0], [65.0, 165.0], [113.0, 166.0]])
    face = resize_face(photo, points, 64)
    want = np.asarray(photo.crop((0, 20, 178, 198)).resize((64, 64), Image.Resampling.BILINEAR))
    assert np.abs(face.crop.astype(int) - want.astype(int)).max() <= 2 and face.fill_fraction == 0.0
    np.testing.assert_allclose(face.landmarks, (points - [0, 20]) * 64 / 178)


def test_resize_store_records_its_mean_landmarks_and_predict_aligns_new_photos_to_them(tmp_path) -> None:
    """align.crop resize: the store keeps each photo's own framing and records where its landmarks
    lie on average; the landmark codec, the checkpoint meta and predict's alignment use that."""
    import pandas as pd
    import torch

    from faceattr.config import AlignConfig
    from faceattr.data import manifest
    from faceattr.data.align import crop_template
    from faceattr.data.aligning import align_dataset
    from faceattr.data.packed import read_geometry
    from faceattr.train.data import LabelCodec

    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(1)
    rows = []
    for k in range(4):
        Image.fromarray(rng.integers(0, 256, (120, 100, 3), dtype=np.uint8)).save(raw / f"{k}.png")
        row = manifest.empty_record(f"{k}.png")
        pts = np.array([[35, 50], [65, 50], [50, 65], [38, 80], [62, 80]], dtype=float) + k
        row.update({c: v for c, v in zip(manifest.LANDMARK_COLUMNS, pts.ravel(), strict=True)})
        rows.append(row)
    manifest.write(pd.DataFrame(rows), raw / "manifest.csv")
    cfg = AlignConfig(size=64, landmarks="provided", crop="resize")
    counts = align_dataset(raw, tmp_path / "store", tmp_path / "dropped.csv", cfg)
    assert counts["aligned"] == 4 and counts["fill_fraction"]["median"] == 0.0
    geometry = read_geometry(tmp_path / "store")
    base = np.array([[35, 50], [65, 50], [50, 65], [38, 80], [62, 80]], dtype=float) + 1.5  # mean of the shifts
    want = (base - [0, 10]) / 100  # centred 100-px square from row 10, in units of the crop side
    assert geometry["crop"] == "resize"
    np.testing.assert_allclose(geometry["template_points"], want, atol=1e-6)
    points = tuple(map(tuple, geometry["template_points"]))
    codec = LabelCodec(64, 30.0, 10.0, template_points=points)
    on_template = torch.tensor(crop_template(64, 1.0, points), dtype=torch.float32).unsqueeze(0)
    encoded = codec.encode(torch.tensor([0]), torch.tensor([30.0]), on_template)["landmarks"]
    assert encoded.abs().max() < 1e-5, "a face on the store's mean landmarks is the codec's zero"

    pytest.importorskip("facenet_pytorch")
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        image = Image.open(fh).convert("RGB")
    (det,) = MTCNNDetector("cpu").detect([image])
    aligned = align_face(image, det.landmarks, 64, points=points)
    assert np.abs(aligned.landmarks - crop_template(64, 1.0, points)).max() < 4
    assert np.abs(aligned.landmarks - template(64)).max() > 4, "not the ArcFace template"
