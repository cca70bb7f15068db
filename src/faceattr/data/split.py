"""Identity-disjoint splits: every identity's images go to exactly one pool.

Pools: ``pretrain`` (identity pretraining), ``verify`` (held-out identities for verification
pairs), and ``train``/``val``/``test`` for the attribute tasks. Records without an identity are
their own identity. The assignment depends only on the seed and the set of identities.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd


def group_keys(labels: pd.DataFrame) -> pd.Series:
    """What must stay together: the identity, else the file's content hash, else the row itself.

    Byte-identical images (same sha256) therefore never straddle two pools.
    """
    rows = pd.Series([f"row:{p}" for p in labels["path"]], index=labels.index, dtype="string")
    content = ("sha256:" + labels["sha256"].astype("string")).fillna(rows)
    return ("id:" + labels["identity"].astype("string")).fillna(content)


def assign_pools(keys: pd.Series, fractions: Mapping[str, float], seed: int) -> pd.Series:
    """Pool name per record, disjoint by ``keys``, with pool sizes proportional to ``fractions``.

    Keys are shuffled by a seeded generator over their sorted names, then cut in order of the
    pools, so the result does not depend on row order.
    """
    keys = keys.astype("string")
    if keys.isna().any():
        raise ValueError("every record needs a group key (see group_keys)")

    names = np.array(sorted(keys.unique()))
    order = np.random.default_rng(seed).permutation(len(names))
    cuts = np.round(np.cumsum([fractions[p] for p in fractions]) * len(names)).astype(int)
    pool_of = {}
    start = 0
    for pool, end in zip(fractions, cuts, strict=True):
        for name in names[order[start:end]]:
            pool_of[name] = pool
        start = end
    return keys.map(pool_of).astype("string")


def split_summary(labels: pd.DataFrame, pools: pd.Series) -> dict[str, dict[str, float]]:
    """Counts per pool: images, identities, gender balance, mean age."""
    out = {}
    for pool in pools.dropna().unique():
        rows = labels[pools == pool]
        out[str(pool)] = {
            "images": len(rows),
            "identities": int(rows["identity"].nunique()),
            "female_fraction": float(rows["gender"].mean()) if rows["gender"].notna().any() else float("nan"),
            "mean_age": float(rows["age"].mean()) if rows["age"].notna().any() else float("nan"),
        }
    return out
