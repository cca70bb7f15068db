"""Splits that keep what belongs together in one pool.

Pools: ``pretrain`` (identity pretraining), ``verify`` (held-out identities for verification
pairs), and ``train``/``val``/``test`` for the attribute tasks. The unit of assignment is the
identity; records without one are grouped by file content (byte-identical images together),
else stand alone. The assignment depends only on the seed and the set of groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

OFFICIAL_POOLS = {"train": ("pretrain", "verify", "train"), "val": ("val",), "test": ("test",)}


def group_keys(labels: pd.DataFrame) -> pd.Series:
    """What must stay together: the identity, else the file's content hash, else the row itself.

    Byte-identical images (same sha256) therefore never straddle two pools.
    """
    rows = pd.Series([f"row:{p}" for p in labels["path"]], index=labels.index, dtype="string")
    content = ("sha256:" + labels["sha256"].astype("string")).fillna(rows)
    return ("id:" + labels["identity"].astype("string")).fillna(content)


def strata(labels: pd.DataFrame, keys: pd.Series) -> pd.Series:
    """Stratum of each group: its majority gender and the decade of its mean age ("?" if unknown)."""
    frame = pd.DataFrame({"key": keys, "gender": labels["gender"].astype("Float64"), "age": labels["age"]})
    per_group = frame.groupby("key").agg(gender=("gender", "mean"), age=("age", "mean"))
    gender = per_group["gender"].round().astype("Int64").astype("string").fillna("?")
    decade = (per_group["age"] // 10).astype("Int64").astype("string").fillna("?")
    return keys.map(gender + "/" + decade)


def assign_pools(
    keys: pd.Series, fractions: Mapping[str, float], seed: int, stratum: pd.Series | None = None
) -> pd.Series:
    """Pool name per record, disjoint by ``keys``, with pool sizes proportional to ``fractions``.

    Groups are ordered by ``(random rank within their stratum + jitter) / stratum size``, so
    every stretch of the order mixes the strata in proportion, and the order is cut at the
    cumulative fractions: pool sizes follow ``fractions`` exactly and each pool gets its share of
    every stratum, even of small ones. Keys are sorted first, so row order does not matter.
    """
    keys = keys.astype("string")
    if keys.isna().any():
        raise ValueError("every record needs a group key (see group_keys)")
    stratum = pd.Series("all", index=keys.index) if stratum is None else stratum.astype("string")
    first = pd.DataFrame({"key": keys, "stratum": stratum}).drop_duplicates("key").sort_values("key")
    names = first["key"].to_numpy()
    rng = np.random.default_rng(seed)
    position = np.empty(len(names))
    for _, idx in sorted(first.reset_index(drop=True).groupby("stratum").indices.items()):
        rank = rng.permutation(len(idx))
        position[idx] = (rank + rng.random(len(idx))) / len(idx)
    order = np.argsort(position, kind="stable")
    total = sum(fractions.values())
    cuts = np.round(np.cumsum([fractions[p] / total for p in fractions]) * len(names)).astype(int)
    pool_of: dict[str, str] = {}
    start = 0
    for pool, end in zip(fractions, cuts, strict=True):
        pool_of.update(dict.fromkeys(names[order[start:end]], pool))
        start = end
    return keys.map(pool_of).astype("string")


def read_published_split(path: str | Path, labels: pd.DataFrame) -> pd.Series:
    """A published split (CORAL's, MiVOLO's, ...) as ``path,split`` rows -> train/val/test per record.

    ``path`` may be the file name or its relative path; records the file does not name get
    ``excluded`` (counted in the split metrics, never silently dropped).

    Raises:
        FileNotFoundError, ValueError: a missing file, or splits other than train/val/test.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file '{path}' not found (split.file)")
    table = pd.read_csv(path, dtype=str)
    if not {"path", "split"} <= set(table.columns) or not table["split"].isin(list(OFFICIAL_POOLS)).all():
        raise ValueError(f"'{path}' needs columns path,split with split in {list(OFFICIAL_POOLS)}")
    by_name = dict(zip(table["path"].map(lambda p: Path(p).name), table["split"], strict=True))
    return labels["path"].map(lambda p: by_name.get(Path(p).name, "excluded")).astype("string")


def split_pools(
    labels: pd.DataFrame,
    fractions: Mapping[str, float],
    seed: int,
    protocol: str,
    stratify: bool,
    split_file: str = "",
) -> pd.Series:
    """The split stage's rule: identity-disjoint pools, or a given partition for val/test.

    ``official`` takes the data set's own partition, ``file`` a published split file; either
    way the given train part is split into pretrain/verify/train by the relative fractions.

    Raises:
        ValueError: when records lack a partition, or a group spans partitions.
    """
    keys = group_keys(labels)
    stratum = strata(labels, keys) if stratify else None
    if protocol == "identity":
        return assign_pools(keys, fractions, seed, stratum)
    if protocol == "official":
        partition = labels["partition"].astype("string")
        if partition.isna().any() or not partition.isin(list(OFFICIAL_POOLS)).all():
            raise ValueError("split.protocol 'official' needs a train/val/test partition on every record")
    elif protocol == "file":
        partition = read_published_split(split_file, labels)
    else:
        raise ValueError(f"unknown split protocol '{protocol}'; choose from ['file', 'identity', 'official']")
    given = partition != "excluded"
    if (pd.DataFrame({"k": keys[given], "p": partition[given]}).groupby("k")["p"].nunique() > 1).any():
        raise ValueError(f"an identity or duplicate group spans several {protocol} partitions")
    pools = partition.copy()
    train = partition == "train"
    sub = {p: fractions[p] for p in OFFICIAL_POOLS["train"]}
    pools[train] = assign_pools(keys[train], sub, seed, None if stratum is None else stratum[train])
    return pools


def split_summary(labels: pd.DataFrame, pools: pd.Series) -> dict[str, dict[str, float]]:
    """Counts per pool: images, identities, gender balance, mean age."""
    out = {}
    for pool in pools.dropna().unique():
        rows = labels[pools == pool]
        out[str(pool)] = {
            "images": len(rows),
            "identities": int(rows["identity"].nunique()),
            "female_fraction": float(rows["gender"].mean()) if rows["gender"].notna().any() else None,
            "mean_age": float(rows["age"].mean()) if rows["age"].notna().any() else None,
        }
    return out
