"""Face-verification pair lists: LFW ``pairs.txt`` and insightface's ``lfw.bin``/``agedb_30.bin``.

insightface's ``.bin`` files are Python pickles of ``(list of JPEG bytes, list of bools)``.
Unpickling can run arbitrary code, so they are read with an unpickler that resolves no global
at all: plain bytes, lists, tuples and booleans load, anything else is refused.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pandas as pd


class UnsafePickleError(ValueError):
    """A pickle that asks for a class or function, which a pair file never needs."""


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        raise UnsafePickleError(f"refusing to load '{module}.{name}': pair files hold only bytes, lists and booleans")


def read_bin_pairs(path: Path) -> tuple[list[bytes], list[bool]]:
    """Read an insightface verification ``.bin``: images in pairs (2i, 2i+1) and their labels."""
    with path.open("rb") as fh:
        data = _DataOnlyUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise ValueError(f"'{path}' is not an insightface pair file (expected (images, labels))")
    images, same = data
    if not all(isinstance(b, bytes | bytearray) for b in images) or not all(isinstance(s, bool) for s in same):
        raise ValueError(f"'{path}': images must be bytes and labels booleans")
    if len(images) != 2 * len(same):
        raise ValueError(f"'{path}': {len(images)} images for {len(same)} pairs")
    return [bytes(b) for b in images], list(same)


def read_pairs_txt(path: Path) -> pd.DataFrame:
    """LFW-style ``pairs.txt``: a ``folds<TAB>n`` line, then per fold n same and n different lines.

    Same: ``name a b``; different: ``nameA a nameB b``. ``a``/``b`` are LFW image numbers
    (``name/name_0001.jpg``) or file names (CelebA-derived lists). Returns one row per pair with
    ``fold``, ``same``, ``identity_a``, ``file_a``, ``identity_b``, ``file_b``.
    """
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not lines or len(lines[0]) != 2:
        raise ValueError(f"'{path}': the first line must be '<folds> <pairs per half-fold>'")
    folds, per_half = int(lines[0][0]), int(lines[0][1])
    body = lines[1:]
    if len(body) != folds * 2 * per_half:
        raise ValueError(f"'{path}': expected {folds * 2 * per_half} pair lines, found {len(body)}")

    def file_of(identity: str, ref: str) -> str:
        return f"{identity}/{identity}_{int(ref):04d}.jpg" if ref.isdigit() else ref

    rows = []
    for k, parts in enumerate(body):
        fold, same = k // (2 * per_half), (k % (2 * per_half)) < per_half
        if same and len(parts) == 3:
            a, b = (parts[0], parts[1]), (parts[0], parts[2])
        elif not same and len(parts) == 4:
            a, b = (parts[0], parts[1]), (parts[2], parts[3])
        else:
            raise ValueError(f"'{path}' line {k + 2}: expected {'3' if same else '4'} fields, got {len(parts)}")
        rows.append(
            {
                "fold": fold,
                "same": same,
                "identity_a": a[0],
                "file_a": file_of(*a),
                "identity_b": b[0],
                "file_b": file_of(*b),
            }
        )
    return pd.DataFrame(rows)


def pair_list_path(raw_dir: Path, name: str) -> Path | None:
    """Where ``datasets.pretrain.pairs`` points: a file inside the data set folder, or absolute."""
    if not name:
        return None
    path = Path(name).expanduser()
    path = path if path.is_absolute() else raw_dir / path
    if not path.is_file():
        raise FileNotFoundError(
            f"verification list '{name}' (datasets.pretrain.pairs) not found at '{path}': name a file of the "
            "pretraining data set's folder, or an absolute path"
        )
    return path


def read_pair_list(path: Path, folds: int = 0) -> pd.DataFrame:
    """A ``pairs.txt`` restricted to its first ``folds`` folds (0: all)."""
    pairs = read_pairs_txt(path)
    return pairs[pairs["fold"] < folds] if folds else pairs


def pair_list_identities(path: Path | None, folds: int = 0) -> frozenset[str]:
    """The people a ``pairs.txt`` list names (its first ``folds`` folds). An insightface ``.bin``
    names nobody, so nothing can be held out for it."""
    if path is None or path.suffix == ".bin":
        return frozenset()
    pairs = read_pair_list(path, folds)
    return frozenset(pairs["identity_a"]) | frozenset(pairs["identity_b"])


def draw_pairs(files: pd.DataFrame, folds: int = 10, per_half: int = 300, seed: int = 0) -> pd.DataFrame:
    """A verification list drawn as LFW's View 2 was: the people split into ``folds`` disjoint
    sets, and in each fold ``per_half`` same-person pairs (two photos of one person with two or
    more) and ``per_half`` different-person pairs (one photo each of two people of the fold),
    no pair twice. ``files`` has ``identity`` and ``path`` (``<Name>/<Name>_<NNNN>.jpg``).

    Returns the rows ``read_pairs_txt`` gives (``fold``, ``same``, ``identity_a``, ``file_a``,
    ``identity_b``, ``file_b``); ``write_pairs_txt`` writes them in LFW's ``pairs.txt`` layout.

    Raises:
        ValueError: a fold whose people cannot make that many distinct pairs.
    """
    rng = np.random.default_rng(seed)
    by_person = {p: sorted(g["path"].map(lambda s: Path(s).name)) for p, g in files.groupby("identity")}
    people = rng.permutation(np.array(sorted(by_person)))
    rows = []
    for fold, group in enumerate(np.array_split(people, folds)):
        multi = [p for p in group if len(by_person[p]) >= 2]
        same_possible = sum(len(by_person[p]) * (len(by_person[p]) - 1) // 2 for p in multi)
        if same_possible < per_half or len(group) < 2:
            raise ValueError(
                f"fold {fold}: its {len(group)} people allow {same_possible} same-person pairs, {per_half} wanted"
            )
        seen: set[tuple[str, str]] = set()
        while len(seen) < per_half:
            person = multi[rng.integers(len(multi))]
            a, b = sorted(rng.choice(by_person[person], 2, replace=False))
            if (a, b) not in seen:
                seen.add((a, b))
                rows.append((fold, True, person, a, person, b))
        seen.clear()
        while len(seen) < per_half:
            p, q = rng.choice(group, 2, replace=False)
            a, b = rng.choice(by_person[p]), rng.choice(by_person[q])
            if (a, b) not in seen and (b, a) not in seen:
                seen.add((a, b))
                rows.append((fold, False, str(p), str(a), str(q), str(b)))
    return pd.DataFrame(rows, columns=["fold", "same", "identity_a", "file_a", "identity_b", "file_b"])


def write_pairs_txt(pairs: pd.DataFrame, path: Path) -> None:
    """Write pairs in LFW's ``pairs.txt`` layout: ``<folds> <per half>``, then per fold the same
    pairs (``name a b``) and the different pairs (``nameA a nameB b``), images by their LFW
    number (LFW's format has no comments: say what the list is beside it)."""
    folds = int(pairs["fold"].max()) + 1
    per_half = int((pairs["fold"] == 0).sum() // 2)

    def number(file: str) -> str:
        return str(int(Path(file).stem.rsplit("_", 1)[1]))

    lines = [f"{folds}\t{per_half}"]
    for _, fold in pairs.groupby("fold", sort=True):
        for r in fold[fold["same"]].itertuples():
            lines.append(f"{r.identity_a}\t{number(r.file_a)}\t{number(r.file_b)}")
        for r in fold[~fold["same"]].itertuples():
            lines.append(f"{r.identity_a}\t{number(r.file_a)}\t{r.identity_b}\t{number(r.file_b)}")
    path.write_text("\n".join(lines) + "\n")
