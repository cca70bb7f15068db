"""Splits are identity-disjoint, seed-deterministic and independent of row order."""

from __future__ import annotations

import pandas as pd

from faceattr.config import SplitConfig
from faceattr.data.split import assign_pools, group_keys

FRACTIONS = dict(SplitConfig().fractions)


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
