"""Splits that keep what belongs together in one pool.

Two data roles, each its own pools: the identity source gives ``pretrain`` (identity
pretraining), ``verify`` (held-out identities for verification pairs) and ``pairs`` (identities
of an external verification list, never trained on); the attribute source gives
``train``/``val``/``test``. The unit of assignment is the identity; records without one are
grouped by file content (byte-identical images together), else stand alone. No person is in both
roles. The assignment depends only on the seed and the set of groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from faceattr.config import IDENTITY_SOURCES, SplitConfig
from faceattr.data.manifest import group_keys

OFFICIAL_POOLS = ("train", "val", "test")
EXCLUDED = "excluded"  # a record no pool uses; the split CSV's ``reason`` column says why


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
    return _pool_by_file_name(labels, dict(zip(table["path"].map(lambda p: Path(p).name), table["split"], strict=True)))


def _pool_by_file_name(labels: pd.DataFrame, pool_of_name: Mapping[str, str]) -> pd.Series:
    """Each record's pool looked up by its file name; ``excluded`` where the published file has none."""
    return labels["path"].map(lambda p: pool_of_name.get(Path(p).name, EXCLUDED)).fillna(EXCLUDED).astype("string")


def read_fold_split(path: str | Path, index: int, labels: pd.DataFrame) -> pd.Series:
    """A fold protocol (AgeDB's subject-exclusive benchmark): ``path`` is a YAML file with
    ``folds_file`` (a CSV of ``file,fold``, relative to the YAML) and ``splits`` (each with the
    ``train``/``val``/``test`` fold lists); split ``index`` gives each record its pool by its
    file name's fold. Records the fold file does not name get ``excluded``.

    Raises:
        FileNotFoundError, ValueError: a missing file, an unknown split index, or a bad layout.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fold protocol '{path}' not found (split.file)")
    spec = yaml.safe_load(path.read_text())
    splits = {int(s["split"]): s for s in spec.get("splits", [])}
    if index not in splits:
        raise ValueError(f"'{path}' has no split {index} (split.index); it has {sorted(splits)}")
    folds = pd.read_csv(path.parent / spec["folds_file"], dtype={"file": str, "fold": int})
    pool_of_fold = {f: pool for pool in OFFICIAL_POOLS for f in splits[index][pool]}
    if len(pool_of_fold) != sum(len(splits[index][p]) for p in OFFICIAL_POOLS):
        raise ValueError(f"'{path}' split {index}: a fold is in more than one pool")
    return _pool_by_file_name(labels, dict(zip(folds["file"], folds["fold"].map(pool_of_fold), strict=True)))


def split_pools(
    labels: pd.DataFrame,
    fractions: Mapping[str, float],
    seed: int,
    protocol: str,
    stratify: bool,
    split_file: str = "",
    index: int = 0,
) -> pd.Series:
    """The fine-tuning role's pools: drawn over groups by ``fractions`` (``identity``), or the data
    set's own partition (``official``), a published split file (``file``) or a published fold
    protocol (``folds``, split ``index``) taken as it is.

    Raises:
        ValueError: when records lack a partition, or a group spans partitions.
    """
    keys = group_keys(labels)
    if protocol == "identity":
        return assign_pools(keys, fractions, seed, strata(labels, keys) if stratify else None)
    if protocol == "official":
        partition = labels["partition"].astype("string")
        if partition.isna().any() or not partition.isin(list(OFFICIAL_POOLS)).all():
            raise ValueError("split.protocol 'official' needs a train/val/test partition on every record")
    elif protocol == "file":
        partition = read_published_split(split_file, labels)
    elif protocol == "folds":
        partition = read_fold_split(split_file, index, labels)
    else:
        raise ValueError(f"unknown split protocol '{protocol}'; choose from ['file', 'folds', 'identity', 'official']")
    given = partition != EXCLUDED
    if (pd.DataFrame({"k": keys[given], "p": partition[given]}).groupby("k")["p"].nunique() > 1).any():
        raise ValueError(f"an identity or duplicate group spans several {protocol} partitions")
    return partition


@dataclass(frozen=True)
class RoleSplit:
    """Pools of both data roles; ``reason`` says why an ``excluded`` row is not used."""

    pretrain: pd.DataFrame  # columns index, path, split, reason
    finetune: pd.DataFrame
    metrics: dict[str, object]


def _identities(labels: pd.DataFrame, namespace: str) -> pd.Series:
    """Each record's person as ``<namespace>:<name>`` (NA without one): a name means a person only
    within its data set (CASIA's "1" is not CelebA's "1")."""
    names = labels["identity"].astype("string")
    return (namespace + ":" + names).astype("string")


def read_identity_map(path: str | Path, pretrain_source: str, finetune_source: str) -> dict[str, str]:
    """A declared mapping of people across two data sets: CSV with columns ``pretrain`` and
    ``finetune``, each row one person's name in the pretraining and the fine-tuning set. Returns
    the fine-tuning role's namespaced identities mapped onto the pretraining role's."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split.identity_map '{path}' not found")
    table = pd.read_csv(path, dtype="string")
    missing = {"pretrain", "finetune"} - set(table.columns)
    if missing:
        raise ValueError(
            f"split.identity_map '{path}' lacks the column(s) {sorted(missing)}: it needs pretrain,finetune"
        )
    table = table.dropna(subset=["pretrain", "finetune"])
    if table["finetune"].duplicated().any():
        dup = table.loc[table["finetune"].duplicated(), "finetune"].iloc[0]
        raise ValueError(f"split.identity_map '{path}': fine-tuning identity '{dup}' is mapped twice")
    return {
        f"{finetune_source}:{f}": f"{pretrain_source}:{p}"
        for p, f in zip(table["pretrain"], table["finetune"], strict=True)
    }


def split_roles(
    pretrain: pd.DataFrame,
    finetune: pd.DataFrame,
    cfg: SplitConfig,
    seed: int,
    pair_identities: frozenset[str] = frozenset(),
    *,
    sources: tuple[str, str],
    identity_map: Mapping[str, str] | None = None,
) -> RoleSplit:
    """Pools for both roles, with no person in both.

    People are named within a data set: ``sources`` (the pretraining and fine-tuning roles'
    sources) namespace the names, so two sets share people only when they are the same source
    (e.g. CelebA for both), or through a declared ``identity_map`` (namespaced fine-tuning
    identity -> namespaced pretraining identity, ``read_identity_map``). Each shared identity goes
    to one role: those the fine-tuning partition keeps for val/test stay there, the others go to
    pretraining with probability ``cfg.shared_to_pretrain`` (seeded). The pretraining role's
    identities named in the verification list (``pair_identities``, names of the pretraining
    set) are held out of training too (pool ``pairs``).

    Raises:
        ValueError: when the pretraining role's records carry no identities.
    """
    pre_ids = _identities(pretrain, sources[0])
    fin_ids = _identities(finetune, sources[1])
    if identity_map:
        fin_ids = fin_ids.map(lambda i: identity_map.get(i, i) if isinstance(i, str) else i).astype("string")
    pair_identities = frozenset(f"{sources[0]}:{i}" for i in pair_identities)
    if pre_ids.isna().all():
        raise ValueError(
            "the pretraining data (datasets.pretrain) has no identities, so identity pretraining cannot "
            f"run; choose a source that names its people: {list(IDENTITY_SOURCES)}"
        )
    # a given partition (official, file, folds) is read once; identity pools are drawn below
    given = (
        None
        if cfg.protocol == "identity"
        else split_pools(finetune, cfg.finetune, seed, cfg.protocol, cfg.stratify, cfg.file, cfg.index)
    )
    shared = sorted(set(pre_ids.dropna()) & set(fin_ids.dropna()))
    kept_by_partition = set() if given is None else set(fin_ids[given.isin(["val", "test"])].dropna())
    candidates = pd.Series([i for i in shared if i not in kept_by_partition], dtype="string")
    if len(candidates):
        f = cfg.shared_to_pretrain
        # drawn over the names without their namespace: the same draw as before names were namespaced
        plain = candidates.str.removeprefix(f"{sources[0]}:")
        roles = pd.Series(assign_pools(plain, {"pretrain": f, "finetune": 1.0 - f}, seed).to_numpy())
        to_pretrain = set(candidates[roles == "pretrain"])
    else:
        to_pretrain = set()
    to_finetune = set(shared) - to_pretrain

    fin_reason = pd.Series("", index=finetune.index, dtype="string")
    if given is not None:
        fin_reason[given == EXCLUDED] = "not_in_split_file"
    fin_reason[fin_ids.isin(to_pretrain).fillna(False)] = "identity_given_to_pretraining"
    usable = fin_reason == ""
    if given is None:  # draw the pools over the people left to this role
        fin_pools = pd.Series(EXCLUDED, index=finetune.index, dtype="string")
        fin_pools[usable] = split_pools(finetune[usable], cfg.finetune, seed, "identity", cfg.stratify)
    else:
        fin_pools = given.where(usable, EXCLUDED)

    pre_reason = pd.Series("", index=pretrain.index, dtype="string")
    pre_reason[pre_ids.isna()] = "no_identity"
    pre_reason[pre_ids.isin(to_finetune).fillna(False)] = "identity_given_to_finetuning"
    listed = pre_ids.isin(pair_identities).fillna(False) & (pre_reason == "")
    usable = (pre_reason == "") & ~listed
    pre_pools = pd.Series(EXCLUDED, index=pretrain.index, dtype="string")
    pre_pools[listed] = "pairs"
    if usable.any():
        keys = group_keys(pretrain[usable])
        stratum = strata(pretrain[usable], keys) if cfg.stratify else None
        pre_pools[usable] = assign_pools(keys, cfg.pretrain, seed, stratum)

    frames = {}
    for role, labels, pools, reason in (
        ("pretrain", pretrain, pre_pools, pre_reason),
        ("finetune", finetune, fin_pools, fin_reason),
    ):
        frames[role] = pd.DataFrame(
            {
                "index": range(len(labels)),
                "path": labels["path"].to_numpy(),
                "split": pools.to_numpy(),
                "reason": reason.to_numpy(),
            }
        )
    metrics = {
        "pretrain": split_summary(pretrain, pre_pools),
        "finetune": split_summary(finetune, fin_pools),
        "excluded_by_reason": {
            role: {str(k): int(v) for k, v in sorted(f.loc[f["reason"] != "", "reason"].value_counts().items())}
            for role, f in frames.items()
        },
        "identity_namespaces": {"pretrain": sources[0], "finetune": sources[1]},
        "identity_mapping": _mapping_text(sources, identity_map, cfg.identity_map, len(shared)),
        "shared_identities": len(shared),
        "shared_given_to_pretraining": len(to_pretrain),
        "pair_list_identities": len(pair_identities),
        "finetune_unit": grouping_unit(finetune),
        "finetune_protocol": cfg.protocol,
        "finetune_protocol_file": Path(cfg.file).name if cfg.file else "",
        "finetune_protocol_index": cfg.index if cfg.protocol == "folds" else None,
    }
    return RoleSplit(frames["pretrain"], frames["finetune"], metrics)


def _mapping_text(sources: tuple[str, str], identity_map: Mapping[str, str] | None, file: str, shared: int) -> str:
    """How the split knew which people the two roles share, for metrics and the report."""
    if sources[0] == sources[1]:
        return f"both roles are {sources[0]}, so a name is one person in both: {shared} shared"
    if identity_map:
        return f"declared in {Path(file).name or 'an identity map'}: {len(identity_map)} people"
    return (
        f"none declared: {sources[0]} and {sources[1]} are different data sets, so their people are taken as "
        "different (a person in both would need split.identity_map)"
    )


def grouping_unit(labels: pd.DataFrame) -> str:
    """What the fine-tuning split keeps together: people where the data set names them, else
    byte-identical images (content hash)."""
    if labels["identity"].notna().all():
        return "identity"
    if labels["identity"].notna().any():
        return "identity where known, else byte-identical images"
    return "byte-identical images (no identities in this data set)"


def split_summary(labels: pd.DataFrame, pools: pd.Series) -> dict[str, dict[str, float]]:
    """Counts per pool: images, identities, gender balance, mean age."""
    out = {}
    for pool in sorted(pools.dropna().unique()):
        rows = labels[pools == pool]
        out[str(pool)] = {
            "images": len(rows),
            "groups": int(group_keys(rows).nunique()),
            "identities": int(rows["identity"].nunique()),
            "female_fraction": float(rows["gender"].mean()) if rows["gender"].notna().any() else None,
            "mean_age": float(rows["age"].mean()) if rows["age"].notna().any() else None,
        }
    return out
