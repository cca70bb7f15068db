"""LFW as an identity source: its official layout, a seeded nested subset of whole people, and the
shared archive itself where it is present."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from faceattr.config import DatasetsConfig, DownloadConfig
from faceattr.data import manifest
from faceattr.data.download import download, people_subset
from faceattr.data.sources import lfw

SHARED_LFW = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "lfw" / "lfw-deepfunneled.tgz"
PEOPLE = {"Aaron_Peirsol": 4, "Ann_Veneman": 2, "George_W_Bush": 5, "Zico": 2}


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _lfw_tgz(path: Path) -> Path:
    """A small archive in the deep-funneled release's layout: lfw-deepfunneled/<Name>/<Name>_<NNNN>.jpg,
    plus a file named for another person and one at the top level."""
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for k, (person, count) in enumerate(PEOPLE.items()):
            for i in range(1, count + 1):
                add(f"lfw-deepfunneled/{person}/{person}_{i:04d}.jpg", _jpeg(10 * k + i))
        add("lfw-deepfunneled/Zico/Someone_Else_0001.jpg", _jpeg(99))
        add("lfw-deepfunneled/readme.jpg", _jpeg(98))
    return path


def test_lfw_layout_names_people_by_folder(tmp_path) -> None:
    cfg = DownloadConfig(dataset="lfw", source="lfw", uri=str(_lfw_tgz(tmp_path / "lfw.tgz")))
    counts = download(cfg, tmp_path / "raw", seed=0)
    frame = manifest.read(tmp_path / "raw" / "manifest.csv")
    assert counts["identities"] == 4 and counts["images"] == sum(PEOPLE.values())
    assert frame.groupby("identity").size().to_dict() == PEOPLE
    assert "lfw-deepfunneled/George_W_Bush/George_W_Bush_0005.jpg" in set(frame["path"])
    assert counts["dropped_by_reason"] == {"unparseable_name": 2}  # Someone_Else in Zico/, readme.jpg
    assert frame["gender"].isna().all() and frame["age"].isna().all()  # LFW has no other label


def test_lfw_without_images_says_what_the_layout_is(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"<Name>/<Name>_<NNNN>\.jpg"):
        lfw(tmp_path / "empty")


def test_lfw_is_an_identity_source() -> None:
    DatasetsConfig(pretrain=DownloadConfig(source="lfw", dataset="lfw"))  # accepted for pretraining


def _people(n: int) -> pd.DataFrame:
    rows = []
    for p in range(n):
        for i in range((p % 3) + 1):
            row = manifest.empty_record(f"P{p:03d}/P{p:03d}_{i:04d}.jpg")
            row["identity"] = f"P{p:03d}"
            rows.append(row)
    return pd.DataFrame(rows)


def test_people_subset_is_whole_people_seeded_and_nested() -> None:
    frame = _people(60)
    small, dropped = people_subset(frame, 10, seed=3)
    large, _ = people_subset(frame, 40, seed=3)
    assert small["identity"].nunique() == 10 and large["identity"].nunique() == 40
    assert set(small["identity"]) <= set(large["identity"])  # nested: the 10 are among the 40
    # whole people: every image of a chosen person is kept, every other image is counted as dropped
    sizes = frame.groupby("identity").size()
    assert len(small) == sizes[sorted(set(small["identity"]))].sum()
    assert len(small) + len(dropped) == len(frame) and set(dropped["reason"]) == {"subsampled_people"}
    again, _ = people_subset(frame, 10, seed=3)
    other, _ = people_subset(frame, 10, seed=4)
    assert again.equals(small) and set(other["identity"]) != set(small["identity"])


def test_people_subset_larger_than_the_source_is_an_error() -> None:
    with pytest.raises(ValueError, match="max_identities=61, but the source has only 60 people"):
        people_subset(_people(60), 61, seed=0)


def test_max_identities_through_the_download_stage(tmp_path) -> None:
    cfg = DownloadConfig(dataset="lfw", source="lfw", uri=str(_lfw_tgz(tmp_path / "lfw.tgz")), max_identities=2)
    counts = download(cfg, tmp_path / "raw", seed=0)
    assert counts["identities"] == 2 and counts["dropped_by_reason"]["subsampled_people"] > 0


@pytest.mark.skipif(not SHARED_LFW.is_file(), reason=f"the shared LFW archive is absent ({SHARED_LFW})")
def test_shared_lfw_archive_reads_as_1680_people(tmp_path) -> None:
    """The preset's archive: 1,680 people with two or more photos, 9,164 photos (datasets README)."""
    from faceattr.data.fetch import verify_sha256

    digest = (SHARED_LFW.parent / "SHA256SUMS").read_text().split()[0]
    verify_sha256(SHARED_LFW, digest)
    with tarfile.open(SHARED_LFW) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")]
    people = {Path(n).parts[-2] for n in names}
    assert (len(people), len(names)) == (1680, 9164)


def test_drawn_pairs_follow_lfw_view2s_design(tmp_path) -> None:
    """10 folds of 300 same / 300 different pairs, people disjoint across folds, no pair twice,
    seeded, and written in pairs.txt's layout (read back by the pairs.txt reader)."""
    from faceattr.data.pairs import draw_pairs, read_pairs_txt, write_pairs_txt

    rng = np.random.default_rng(0)
    rows = [
        {"identity": f"Person_{p:03d}", "path": f"Person_{p:03d}/Person_{p:03d}_{i:04d}.jpg"}
        for p in range(400)
        for i in range(1, int(rng.integers(2, 12)) + 1)
    ]
    files = pd.DataFrame(rows)
    pairs = draw_pairs(files, folds=10, per_half=300, seed=0)
    assert len(pairs) == 6000
    assert pairs.groupby(["fold", "same"]).size().tolist() == [300] * 20
    people = [set(g["identity_a"]) | set(g["identity_b"]) for _, g in pairs.groupby("fold")]
    assert all(not (people[i] & people[j]) for i in range(10) for j in range(i + 1, 10))
    same = pairs[pairs["same"]]
    assert (same["identity_a"] == same["identity_b"]).all() and (same["file_a"] != same["file_b"]).all()
    assert (pairs.loc[~pairs["same"], "identity_a"] != pairs.loc[~pairs["same"], "identity_b"]).all()
    keys = pairs.apply(lambda r: tuple(sorted((r.file_a, r.file_b))), axis=1)
    assert not keys.duplicated().any()
    assert draw_pairs(files, seed=0).equals(pairs) and not draw_pairs(files, seed=1).equals(pairs)
    write_pairs_txt(pairs, tmp_path / "pairs.txt")
    back = read_pairs_txt(tmp_path / "pairs.txt")
    assert back["file_a"].map(lambda f: f.split("/")[-1]).tolist() == pairs["file_a"].tolist()
    assert back[["fold", "same", "identity_a", "identity_b"]].equals(
        pairs[["fold", "same", "identity_a", "identity_b"]]
    )


def test_drawing_too_many_pairs_from_too_few_people_is_an_error() -> None:
    from faceattr.data.pairs import draw_pairs

    files = pd.DataFrame(
        {"identity": ["A", "A", "B", "B"], "path": ["A/A_0001.jpg", "A/A_0002.jpg", "B/B_0001.jpg", "B/B_0002.jpg"]}
    )
    with pytest.raises(ValueError, match="fold 0: its 2 people allow 2 same-person pairs, 300 wanted"):
        draw_pairs(files, folds=1, per_half=300)
