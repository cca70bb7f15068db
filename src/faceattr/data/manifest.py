"""One manifest format for every data set: one row per image, missing labels as explicit nulls.

Columns: ``path`` (relative to the data set root), ``identity`` (string or null), ``age`` (years,
float or null), ``gender`` (0 male, 1 female, or null), ``race`` (int or null), ``partition``
(official split name or null), ``sha256`` (of the image file, or null), ten landmark columns
``lm{k}_x``/``lm{k}_y`` for the five points
(left eye, right eye, nose tip, left mouth corner, right mouth corner; null when unknown) and one
``attr_<name>`` column (0/1 or null) per binary attribute.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

LANDMARK_COLUMNS = tuple(f"lm{k}_{axis}" for k in range(5) for axis in ("x", "y"))
BASE_COLUMNS = ("path", "identity", "age", "gender", "race", "partition", "sha256")
_DTYPES = {
    "path": "string",
    "identity": "string",
    "age": "Float64",
    "gender": "Int64",
    "race": "Int64",
    "partition": "string",
    "sha256": "string",
    **{c: "Float64" for c in LANDMARK_COLUMNS},
}


def empty_record(path: str) -> dict[str, object]:
    """A manifest row for ``path`` with every label null, for a source to fill in."""
    return {
        "path": path,
        "identity": None,
        "age": None,
        "gender": None,
        "race": None,
        "partition": None,
        "sha256": None,
        **dict.fromkeys(LANDMARK_COLUMNS),
    }


class ManifestError(ValueError):
    """A manifest that does not follow the schema."""


def attribute_names(frame: pd.DataFrame) -> list[str]:
    """Attribute names present in a manifest, in column order."""
    return [c.removeprefix("attr_") for c in frame.columns if c.startswith("attr_")]


def validate(frame: pd.DataFrame, where: str = "manifest") -> pd.DataFrame:
    """Check the schema and return the frame with canonical dtypes.

    Raises:
        ManifestError: naming the missing or unexpected column, or the bad values.
    """
    missing = [c for c in (*BASE_COLUMNS, *LANDMARK_COLUMNS) if c not in frame.columns]
    if missing:
        raise ManifestError(f"{where}: missing column(s) {missing}")
    extra = [c for c in frame.columns if c not in _DTYPES and not c.startswith("attr_")]
    if extra:
        raise ManifestError(f"{where}: unexpected column(s) {extra}")
    dtypes = {**_DTYPES, **{c: "Int64" for c in frame.columns if c.startswith("attr_")}}
    try:
        frame = frame.astype({c: dtypes[c] for c in frame.columns})
    except (TypeError, ValueError) as err:
        raise ManifestError(f"{where}: {err}") from None
    if frame["path"].isna().any():
        raise ManifestError(f"{where}: {int(frame['path'].isna().sum())} row(s) without a path")
    if frame["path"].duplicated().any():
        raise ManifestError(f"{where}: duplicate path {frame['path'][frame['path'].duplicated()].iloc[0]!r}")
    bad_gender = frame["gender"].notna() & ~frame["gender"].isin([0, 1])
    if bad_gender.any():
        raise ManifestError(f"{where}: gender must be 0, 1 or null ({int(bad_gender.sum())} rows)")
    return frame


def read(path: str | Path) -> pd.DataFrame:
    """Read and validate a manifest CSV."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest '{path}' not found; run the download stage first")
    return validate(
        pd.read_csv(path, dtype={"path": "string", "identity": "string", "partition": "string", "sha256": "string"}),
        str(path),
    )


def write(frame: pd.DataFrame, path: str | Path) -> None:
    """Validate and write a manifest CSV atomically."""
    from faceattr.io import atomic_path

    frame = validate(frame)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def group_keys(labels: pd.DataFrame) -> pd.Series:
    """What must stay together: the identity, else the file's content hash, else the row itself.

    Byte-identical images (same sha256) therefore never straddle two pools.
    """
    rows = pd.Series([f"row:{p}" for p in labels["path"]], index=labels.index, dtype="string")
    content = ("sha256:" + labels["sha256"].astype("string")).fillna(rows)
    return ("id:" + labels["identity"].astype("string")).fillna(content)
