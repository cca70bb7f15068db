"""Real UTKFace and CelebA from ../shared/datasets: official layouts, quirks, MTCNN on real photos.

These data are non-commercial research data and live outside the repository; on a machine
without them every test here is skipped with the reason.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from faceattr.config import AlignConfig
from faceattr.data import manifest
from faceattr.data.align import template
from faceattr.data.aligning import align_dataset
from faceattr.data.fetch import safe_extract
from faceattr.data.sources import celeba, utkface

from .conftest import SHARED, run_pipeline, tiny_params

UTK = SHARED / "utkface" / "UTKFace.tar.gz"
CELEBA = SHARED / "celeba"
pytestmark = pytest.mark.skipif(
    not UTK.is_file() or not CELEBA.is_dir(), reason=f"real data sets not found at {SHARED}"
)


@pytest.fixture(scope="module")
def utk_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("utk")
    safe_extract(UTK, root)
    return root


def test_utkface_every_record_accounted_for(utk_root) -> None:
    frame, dropped = utkface(utk_root, "keep_all", (0, 120))
    assert len(frame) == 23_708 and dropped.empty
    frame = manifest.validate(frame)
    malformed = set((SHARED / "utkface" / "malformed_names.txt").read_text().split())
    no_race = set(frame.loc[frame["race"].isna(), "path"].str.removeprefix("UTKFace/"))
    assert no_race == malformed and len(malformed) == 3
    parseable = frame[frame["race"].notna()]
    assert parseable["gender"].value_counts().to_dict() == {0: 12_391, 1: 11_314}


def test_utkface_duplicate_groups_match_the_published_list(utk_root) -> None:
    frame, _ = utkface(utk_root, "keep_all", (0, 120))
    groups = frame[frame.duplicated("sha256", keep=False)].groupby("sha256")
    assert groups.ngroups == 375 and sum(len(g) for _, g in groups) == 765
    conflicting = sum(g[["age", "gender", "race"]].nunique(dropna=False).max() > 1 for _, g in groups)
    assert conflicting == 259
    kept, dropped = utkface(utk_root, "keep_one", (0, 120))
    assert len(kept) == 23_708 - (765 - 375) and len(kept) + len(dropped) == 23_708
    assert kept["sha256"].is_unique


def test_mtcnn_aligns_real_utkface_photos(utk_root, tmp_path) -> None:
    frame, _ = utkface(utk_root, "keep_all", (0, 120))
    raw = tmp_path / "raw"
    raw.mkdir()
    subset = frame.iloc[::500].reset_index(drop=True)  # 48 faces across ages
    for rel in subset["path"]:
        (raw / rel).parent.mkdir(parents=True, exist_ok=True)
        (raw / rel).write_bytes((utk_root / rel).read_bytes())
    manifest.write(subset, raw / "manifest.csv")
    cfg = AlignConfig(size=112, landmarks="mtcnn", max_drop_fraction=0.2)
    counts = align_dataset(raw, tmp_path / "store", tmp_path / "dropped.csv", cfg)
    assert counts["aligned"] + counts["dropped"] == len(subset) and counts["aligned"] >= 44
    labels = manifest.read(tmp_path / "store" / "labels.csv")
    points = labels[list(manifest.LANDMARK_COLUMNS)].to_numpy(float).reshape(-1, 5, 2)
    assert np.abs(points - template(112)).mean() < 4.0, "MTCNN's points must land near the template"


def test_celeba_labels_and_official_partition(tmp_path) -> None:
    for name in ("img_align_celeba.zip",):
        safe_extract(CELEBA / name, tmp_path)
    for name in ("identity_CelebA.txt", "list_attr_celeba.txt", "list_eval_partition.txt"):
        (tmp_path / name).write_bytes((CELEBA / name).read_bytes())
    frame, dropped = celeba(tmp_path)
    frame = manifest.validate(frame)
    assert len(frame) == 6_000 and dropped.empty
    assert frame["identity"].nunique() == 200
    assert frame["partition"].value_counts().to_dict() == {"train": 4_560, "val": 780, "test": 660}
    assert len(manifest.attribute_names(frame)) == 40
    assert frame["gender"].mean() == pytest.approx(0.71, abs=0.01)
    assert frame["age"].isna().all() and frame["lm0_x"].isna().all()


def test_full_pipeline_on_real_celeba_faces(tmp_path) -> None:
    """Every stage on ~600 real faces, CelebA in both roles (the third paper's design): MTCNN
    alignment, identity pretraining on some people, fine-tuning and test on the others, report."""
    params_path = tiny_params(tmp_path)
    params = yaml.safe_load(params_path.read_text())
    for role in ("pretrain", "finetune"):
        params["datasets"][role].update(dataset="celeba", source="celeba", uri=str(CELEBA), max_images=600)
    params["align"].update(landmarks="auto", max_drop_fraction=0.1)
    params["split"]["pretrain"] = {"pretrain": 0.6, "verify": 0.4}  # 2 verification folds of 2+ people
    params["finetune_multitask"]["variants"] = ["face_resnet18-identity-gender+landmarks", "face_resnet18-none-gender"]
    params_path.write_text(yaml.safe_dump(params))
    paths = run_pipeline(tmp_path, params_path)
    download = json.loads((paths["metrics"] / "download_finetune.json").read_text())
    align = json.loads((paths["metrics"] / "align_finetune.json").read_text())
    assert download["records"] == 6_000 and download["dropped_by_reason"] == {"subsampled": download["dropped"]}
    assert align["found"] == download["images"] == align["aligned"] + align["dropped"]
    assert align["aligned"] >= 0.9 * align["found"] and align["landmarks_from"] == {"mtcnn": align["aligned"]}
    dropped = pd.read_csv(paths["metrics"] / "dropped_finetune.csv")
    assert len(dropped) == align["dropped"] and set(dropped["reason"]) <= {"no_face", "low_confidence"}
    # the same 20 people in both stores: each went to one role only
    people = {}
    for role in ("pretrain", "finetune"):
        split = pd.read_csv(paths["splits"] / f"{role}.csv", dtype=str)
        labels = pd.read_csv(paths["aligned"] / role / "labels.csv", dtype=str)
        used = split["split"] != "excluded"
        people[role] = set(labels.loc[used.to_numpy(), "identity"])
    assert people["pretrain"] and people["finetune"] and not people["pretrain"] & people["finetune"]
    split_metrics = json.loads((paths["metrics"] / "split.json").read_text())
    assert split_metrics["shared_identities"] == len(people["pretrain"] | people["finetune"])
    ev = json.loads((paths["metrics"] / "evaluate.json").read_text())
    assert set(ev["runs"]["face_resnet18-none-gender-s0"]["test"]) == {"gender_acc"}
    assert ev["variants"]["face_resnet18-none-gender"]["status"] == "ok"
    assert "Table 1" in (paths["reports"] / "report.md").read_text()
