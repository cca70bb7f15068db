"""Synthetic faces, the packed store, device augmentation and the label codec."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from faceattr.config import AugmentConfig
from faceattr.data import manifest
from faceattr.data.packed import StoreWriter, read_store
from faceattr.data.synthetic import ATTRIBUTES, generate
from faceattr.train.data import FLIP_ORDER, LabelCodec, augment

NO_AUG = AugmentConfig(flip=False, max_rotation=0.0, max_shift=0.0, max_scale=0.0)


def test_synthetic_is_deterministic_with_valid_labels() -> None:
    a, b = list(generate(3, 2, seed=5, size=96)), list(generate(3, 2, seed=5, size=96))
    for fa, fb in zip(a, b, strict=True):
        assert np.array_equal(np.asarray(fa.image), np.asarray(fb.image))
        assert fa.age == fb.age and fa.gender == fb.gender and fa.identity == fb.identity
        assert fa.image.size == (96, 96)
        assert ((fa.landmarks > 0) & (fa.landmarks < 96)).all()
        assert fa.landmarks[0, 0] < fa.landmarks[1, 0] and fa.landmarks[3, 0] < fa.landmarks[4, 0]
        assert set(fa.attributes) == set(ATTRIBUTES) and 1 <= fa.age <= 90
    assert not np.array_equal(np.asarray(a[0].image), np.asarray(next(generate(1, 1, seed=6, size=96)).image))


def test_identity_appearance_is_stable_across_images() -> None:
    faces = list(generate(2, 3, seed=0))
    assert len({f.identity for f in faces}) == 2
    assert len({(f.identity, f.gender) for f in faces}) == 2  # gender fixed per identity


def _labels(n: int) -> pd.DataFrame:
    rows = [
        {
            "path": f"{i}.jpg",
            "identity": f"p{i % 2}",
            "age": float(20 + i),
            "gender": i % 2,
            "race": None,
            "partition": None,
            "sha256": None,
            **{c: float(i + k) for k, c in enumerate(manifest.LANDMARK_COLUMNS)},
            "attr_smiling": i % 2,
        }
        for i in range(n)
    ]
    return pd.DataFrame(rows)


def test_packed_store_round_trips_images_and_labels(tmp_path) -> None:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    writer = StoreWriter(tmp_path / "store", capacity=8, size=16)  # fewer crops than capacity
    for crop in crops:
        writer.add(crop)
    writer.close(_labels(5))
    faces, labels = read_store(tmp_path / "store")
    assert np.array_equal(faces, crops)
    pd.testing.assert_frame_equal(labels, manifest.validate(_labels(5)))
    assert not list((tmp_path / "store").glob(".*")), "no temporary files may remain"


def test_manifest_schema_errors_name_the_problem() -> None:
    with pytest.raises(manifest.ManifestError, match="missing column"):
        manifest.validate(_labels(2).drop(columns=["age"]))
    bad = _labels(2)
    bad.loc[0, "gender"] = 3
    with pytest.raises(manifest.ManifestError, match="gender must be 0, 1 or null"):
        manifest.validate(bad)


def test_augment_identity_when_disabled() -> None:
    x = torch.rand(4, 3, 32, 32)
    lm = torch.rand(4, 5, 2) * 32
    out, moved = augment(x, lm, NO_AUG, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(moved, lm)


def test_augment_moves_landmarks_with_the_image() -> None:
    """Bright dots at the landmarks must land on the transformed landmarks."""
    size = 64
    lm = torch.tensor([[[20.5, 24.5], [43.5, 24.5], [32.5, 36.5], [23.5, 47.5], [40.5, 47.5]]]).repeat(8, 1, 1)
    x = torch.zeros(8, 1, size, size)
    for k, (px, py) in enumerate(lm[0]):
        x[:, 0, int(py) - 1 : int(py) + 2, int(px) - 1 : int(px) + 2] = k + 1.0  # label each dot by index
    cfg = AugmentConfig(flip=True, max_rotation=15.0, max_shift=0.08, max_scale=0.1)
    out, moved = augment(x, lm, cfg, torch.Generator().manual_seed(3))
    for n in range(8):
        for k in range(5):
            px, py = moved[n, k]
            value = out[n, 0, int(py), int(px)]
            assert value > 0.3, f"sample {n} point {k}: no dot under the moved landmark"
    assert all(moved[n, 0, 0] < moved[n, 1, 0] for n in range(8)), "left eye must stay on the image's left"


def test_flip_order_swaps_left_and_right() -> None:
    assert FLIP_ORDER == (1, 0, 2, 4, 3)


def test_label_codec_round_trip() -> None:
    codec = LabelCodec(size=64, age_mean=35.0, age_std=12.0)
    age = torch.tensor([20.0, 50.0])
    lm = torch.rand(2, 5, 2) * 64
    enc = codec.encode(torch.tensor([0, 1]), age, lm)
    dec = codec.decode({"age": enc["age"], "landmarks": enc["landmarks"]})
    torch.testing.assert_close(dec["age"], age)
    torch.testing.assert_close(dec["landmarks"], lm)
