"""UTKFace and CelebA adapters on hand-made folders in the official layouts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from faceattr.data import manifest
from faceattr.data.sources import celeba, read_celeba_landmarks, utkface


def _jpeg(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def utk(tmp_path):
    root = tmp_path / "UTKFace"
    _jpeg(root / "25_0_2_20170116174525125.jpg.chip.jpg", 1)
    _jpeg(root / "39_1_20170116174525126.jpg.chip.jpg", 2)  # malformed: no race field
    _jpeg(root / "notaface.jpg", 3)  # unparseable
    _jpeg(root / "24_0_1_20170116220224657 .jpg.chip.jpg", 7)  # garbled, as published
    _jpeg(root / "30_0_0_20170116174525127.jpg.chip.jpg", 4)
    (root / "31_0_0_20170116174525128.jpg.chip.jpg").write_bytes(
        (root / "30_0_0_20170116174525127.jpg.chip.jpg").read_bytes()
    )
    _jpeg(root / "50_1_3_20170116174525129.jpg.chip.jpg", 5)
    (root / "50_1_3_20170116174525130.jpg.chip.jpg").write_bytes(
        (root / "50_1_3_20170116174525129.jpg.chip.jpg").read_bytes()
    )
    _jpeg(root / "116_1_0_20170116174525131.jpg.chip.jpg", 6)
    return tmp_path


def test_utkface_labels_and_malformed_names(utk) -> None:
    frame, dropped = utkface(utk, "keep_all", (0, 120))
    frame = manifest.validate(frame)
    row = frame.set_index("path").loc["UTKFace/25_0_2_20170116174525125.jpg.chip.jpg"]
    assert (row["age"], row["gender"], row["race"]) == (25.0, 0, 2)
    malformed = frame.set_index("path").loc["UTKFace/39_1_20170116174525126.jpg.chip.jpg"]
    assert malformed["gender"] == 1 and pd.isna(malformed["race"])
    assert dropped.values.tolist() == [["UTKFace/notaface.jpg", "unparseable_name"]]
    assert len(frame) + len(dropped) == 9
    garbled = frame.set_index("path").loc["UTKFace/24_0_1_20170116220224657 .jpg.chip.jpg"]
    assert (garbled["age"], garbled["gender"], garbled["race"]) == (24.0, 0, 1)


@pytest.mark.parametrize(
    ("mode", "kept", "reasons"),
    [
        ("keep_all", 8, {}),
        ("keep_one", 6, {"duplicate": 1, "duplicate_conflicting_labels": 1}),
        ("drop", 5, {"duplicate": 1, "duplicate_conflicting_labels": 2}),
    ],
)
def test_utkface_duplicate_modes(utk, mode, kept, reasons) -> None:
    frame, dropped = utkface(utk, mode, (0, 120))
    assert len(frame) == kept
    counts = dropped[dropped["reason"] != "unparseable_name"]["reason"].value_counts().to_dict()
    assert counts == reasons
    assert len(frame) + len(dropped) == 9, "every record is kept or listed with a reason"


def test_utkface_ages_out_of_range_are_reported(utk) -> None:
    frame, dropped = utkface(utk, "keep_all", (1, 100))
    assert (
        dropped.set_index("path").loc["UTKFace/116_1_0_20170116174525131.jpg.chip.jpg", "reason"] == "age_out_of_range"
    )
    assert frame["age"].max() <= 100


def test_utkface_unknown_duplicates_mode(utk) -> None:
    with pytest.raises(ValueError, match="unknown duplicates mode 'merge'"):
        utkface(utk, "merge", (0, 120))


def _celeba(root, with_landmarks: bool) -> None:
    for i in (1, 2, 3):
        _jpeg(root / "img_align_celeba" / f"00000{i}.jpg", i)
    (root / "identity_CelebA.txt").write_text("000001.jpg 7\n000002.jpg 7\n000003.jpg 9\n")
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 1\n000003.jpg 2\n")
    (root / "list_attr_celeba.txt").write_text(
        "3\nMale Smiling\n000001.jpg  1 -1\n000002.jpg  1  1\n000003.jpg -1  1\n"
    )
    if with_landmarks:
        (root / "list_landmarks_align_celeba.txt").write_text(
            "3\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
            "leftmouth_x leftmouth_y rightmouth_x rightmouth_y\n"
            "000001.jpg 69 109 106 113 77 142 73 152 108 154\n"
            "000002.jpg 69 110 107 112 81 135 70 151 108 153\n"
            "000003.jpg 76 112 104 106 108 128 74 156 98 158\n"
        )


def test_celeba_identities_attributes_partition(tmp_path) -> None:
    _celeba(tmp_path, with_landmarks=False)
    frame, dropped = celeba(tmp_path)
    frame = manifest.validate(frame).set_index("path")
    assert dropped.empty
    assert frame["identity"].tolist() == ["7", "7", "9"]
    assert frame["gender"].tolist() == [0, 0, 1]  # Male = 1 -> gender 0
    assert frame["partition"].tolist() == ["train", "val", "test"]
    assert frame["attr_Smiling"].tolist() == [0, 1, 1]
    assert frame["lm0_x"].isna().all(), "no landmark file: landmarks are null, to be detected by MTCNN"


def test_celeba_landmark_file_parser(tmp_path) -> None:
    _celeba(tmp_path, with_landmarks=True)
    lm = read_celeba_landmarks(tmp_path / "list_landmarks_align_celeba.txt")
    assert lm.loc["000003.jpg"].tolist() == [76, 112, 104, 106, 108, 128, 74, 156, 98, 158]
    frame, _ = celeba(tmp_path)
    assert frame.set_index("path").loc["img_align_celeba/000002.jpg", "lm2_x"] == 81
