"""Splits are identity-disjoint, seed-deterministic and independent of row order."""

from __future__ import annotations

import pandas as pd

from faceattr.config import SplitConfig
from faceattr.data.manifest import group_keys
from faceattr.data.split import assign_pools

from .conftest import ROOT

FRACTIONS = {"pretrain": 0.4, "verify": 0.1, "train": 0.3, "val": 0.1, "test": 0.1}  # any pools
FINETUNE = dict(SplitConfig().finetune)


def _identities() -> pd.Series:
    return pd.Series([f"id{i // 5:03d}" for i in range(500)], dtype="string")


def test_no_identity_crosses_pools() -> None:
    ids = _identities()
    pools = assign_pools(ids, FRACTIONS, seed=0)
    assert pools.notna().all()
    assert (pd.DataFrame({"id": ids, "pool": pools}).groupby("id")["pool"].nunique() == 1).all()


def test_pool_sizes_follow_fractions() -> None:
    counts = assign_pools(_identities(), FRACTIONS, seed=0).value_counts()
    for pool, fraction in FRACTIONS.items():
        assert counts[pool] == round(fraction * 100) * 5  # 100 identities of 5 images


def test_deterministic_and_seed_dependent() -> None:
    ids = _identities()
    assert assign_pools(ids, FRACTIONS, 3).equals(assign_pools(ids, FRACTIONS, 3))
    assert not assign_pools(ids, FRACTIONS, 3).equals(assign_pools(ids, FRACTIONS, 4))


def test_independent_of_row_order() -> None:
    ids = _identities()
    shuffled = ids.sample(frac=1, random_state=1)
    a = assign_pools(ids, FRACTIONS, 0)
    b = assign_pools(shuffled, FRACTIONS, 0).reindex(ids.index)
    assert a.equals(b)


def test_group_keys_fall_back_to_content_then_row() -> None:
    labels = pd.DataFrame(
        {"path": ["a", "b", "c", "d"], "identity": ["p1", None, None, None], "sha256": ["h0", "h1", "h1", None]},
        dtype="string",
    )
    assert list(group_keys(labels)) == ["id:p1", "sha256:h1", "sha256:h1", "row:d"]


def test_byte_identical_images_stay_together() -> None:
    labels = pd.DataFrame(
        {
            "path": [f"{i}.jpg" for i in range(300)],
            "identity": [None] * 300,
            "sha256": [f"h{i // 3}" for i in range(300)],
        },
        dtype="string",
    )
    pools = assign_pools(group_keys(labels), FRACTIONS, 0)
    assert (pools.groupby(labels["sha256"]).nunique() == 1).all()
    assert pools.value_counts()["train"] == 90


def test_stratified_pools_balance_gender_and_age() -> None:
    """Women are 20 % of identities and the old are rare: each pool gets its share of both."""
    ids = [f"p{i:03d}" for i in range(200)]
    labels = pd.DataFrame(
        {
            "path": [f"{i}.jpg" for i in range(200)],
            "identity": ids,
            "sha256": [None] * 200,
            "gender": [1 if i % 5 == 0 else 0 for i in range(200)],
            "age": [75.0 if i % 10 == 3 else 25.0 for i in range(200)],
        }
    )
    from faceattr.data.split import split_pools

    pools = split_pools(labels, FINETUNE, seed=0, protocol="identity", stratify=True)
    for pool, fraction in FINETUNE.items():
        rows = labels[pools == pool]
        assert len(rows) == round(200 * fraction)
        assert abs(rows["gender"].mean() - 0.2) <= 0.06, pool
        assert abs((rows["age"] > 60).mean() - 0.1) <= 0.06, pool


def test_official_protocol_keeps_val_and_test_partitions() -> None:
    from faceattr.data.split import split_pools

    partition = ["train"] * 80 + ["val"] * 10 + ["test"] * 10
    labels = pd.DataFrame(
        {
            "path": [f"{i}.jpg" for i in range(100)],
            "identity": [f"p{i // 2}" for i in range(100)],
            "sha256": [None] * 100,
            "gender": [0] * 100,
            "age": [None] * 100,
            "partition": partition,
        }
    )
    pools = split_pools(labels, FINETUNE, seed=0, protocol="official", stratify=True)
    assert (pools[80:90] == "val").all() and (pools[90:] == "test").all()
    assert set(pools[:80]) == {"train"}
    labels.loc[0, "partition"] = "val"  # identity p0 now spans train and val
    import pytest

    with pytest.raises(ValueError, match="spans several official partitions"):
        split_pools(labels, FINETUNE, seed=0, protocol="official", stratify=True)


def test_published_split_file_protocol(tmp_path) -> None:
    from faceattr.data.split import split_pools

    labels = pd.DataFrame(
        {
            "path": [f"UTKFace/{i}.jpg" for i in range(40)],
            "identity": [None] * 40,
            "sha256": [f"h{i}" for i in range(40)],
            "gender": [i % 2 for i in range(40)],
            "age": [30.0] * 40,
            "partition": [None] * 40,
        }
    )
    rows = [(f"{i}.jpg", "test" if i < 10 else "train") for i in range(38)]  # 38, 39 not named
    (tmp_path / "split.csv").write_text("path,split\n" + "\n".join(f"{p},{s}" for p, s in rows) + "\n")
    pools = split_pools(labels, FINETUNE, 0, "file", True, str(tmp_path / "split.csv"))
    assert (pools[:10] == "test").all() and list(pools[38:]) == ["excluded", "excluded"]
    assert set(pools[10:38]) == {"train"}
    (tmp_path / "bad.csv").write_text("path,split\n0.jpg,holdout\n")
    import pytest

    with pytest.raises(ValueError, match="path,split"):
        split_pools(labels, FINETUNE, 0, "file", True, str(tmp_path / "bad.csv"))


PROTOCOLS = ROOT.parent / "shared" / "protocols" / "agedb"


def _agedb_fixture(tmp_path) -> tuple[str, pd.DataFrame]:
    """A fold protocol in the published layout, over AgeDB's own file names (4 people, 10 folds)."""
    import yaml

    names = [
        (f"{i}_Person{p}_{30 + i % 7}_{'m' if p % 2 else 'f'}.jpg", f"Person{p}", p)
        for p in range(10)
        for i in range(p * 3, p * 3 + 3)
    ]
    (tmp_path / "folds.csv").write_text(
        "file,subject,age,gender,fold\n" + "".join(f"{f},{s},30,F,{fold}\n" for f, s, fold in names)
    )
    spec = {
        "folds_file": "folds.csv",
        "splits": [
            {"split": 0, "train": [0, 1, 2, 3, 4, 5], "val": [6, 7], "test": [8, 9]},
            {"split": 1, "train": [2, 3, 4, 5, 6, 7], "val": [8, 9], "test": [0, 1]},
        ],
    }
    (tmp_path / "splits.yaml").write_text(yaml.safe_dump(spec))
    labels = pd.DataFrame(
        {
            "path": [f"AgeDB/{f}" for f, _, _ in names] + ["AgeDB/999_Unlisted_40_m.jpg"],
            "identity": [s for _, s, _ in names] + ["Unlisted"],
            "sha256": [None] * (len(names) + 1),
            "gender": [0] * (len(names) + 1),
            "age": [30.0] * (len(names) + 1),
            "partition": [None] * (len(names) + 1),
        }
    )
    return str(tmp_path / "splits.yaml"), labels


def test_fold_protocol_assigns_pools_by_each_files_fold(tmp_path) -> None:
    import pytest

    from faceattr.data.split import split_pools

    path, labels = _agedb_fixture(tmp_path)
    pools = split_pools(labels, FINETUNE, 0, "folds", True, path, index=0)
    fold = labels["identity"][:-1].str.removeprefix("Person").astype(int)
    expected = fold.map(lambda f: "train" if f < 6 else "val" if f < 8 else "test")
    assert list(pools[:-1]) == list(expected) and pools.iloc[-1] == "excluded"
    second = split_pools(labels, FINETUNE, 0, "folds", True, path, index=1)
    assert set(second[labels["identity"].isin(["Person0", "Person1"])]) == {"test"}
    with pytest.raises(ValueError, match=r"has no split 7 \(split.index\); it has \[0, 1\]"):
        split_pools(labels, FINETUNE, 0, "folds", True, path, index=7)


def test_published_agedb_folds_are_subject_exclusive() -> None:
    import pytest

    if not PROTOCOLS.is_dir():
        pytest.skip("../shared/protocols/agedb absent")
    folds = pd.read_csv(PROTOCOLS / "agedb_folds.csv")
    assert (folds.groupby("subject")["fold"].nunique() == 1).all() and set(folds["fold"]) == set(range(10))
    from faceattr.data.split import read_fold_split

    labels = pd.DataFrame({"path": folds["file"].map(lambda f: f"AgeDB/{f}")})
    counts = {k: read_fold_split(PROTOCOLS / "agedb_splits.yaml", k, labels).value_counts() for k in range(5)}
    for k, c in counts.items():
        assert c.sum() == len(folds) and "excluded" not in c, k
        pools = read_fold_split(PROTOCOLS / "agedb_splits.yaml", k, labels)
        assert (pools.groupby(folds["subject"]).nunique() == 1).all(), f"split {k}: a person in two pools"
