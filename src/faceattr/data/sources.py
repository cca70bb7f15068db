"""Adapters from official data set layouts to the manifest: UTKFace, CelebA, AgeDB, LFW, CASIA.

Each adapter reads an extracted folder and returns ``(manifest, dropped)``: one manifest row per
usable image and one ``(path, reason)`` row per record it could not use, so nothing is lost
silently. Labels are mapped onto the manifest's conventions (gender 0 male / 1 female).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from faceattr.data import manifest
from faceattr.data.fetch import sha256_file

log = logging.getLogger(__name__)

# Two published names are garbled after the date ("...657 .jpg.chip.jpg", "...357jpg.chip.jpg"):
# their labels are intact, so a stray space or a missing dot before "jpg" is accepted.
UTKFACE_NAME = re.compile(r"^(?P<age>\d+)_(?P<gender>\d+)_(?:(?P<race>\d+)_)?(?P<date>\d+) ?\.?jpg\.chip\.jpg$")

UTKFACE_RACES = ("white", "black", "asian", "indian", "others")
CELEBA_PARTITIONS = {0: "train", 1: "val", 2: "test"}


def utkface(root: Path, duplicates: str, age_range: tuple[float, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """UTKFace "Aligned & Cropped": labels from ``[age]_[gender]_[race]_[datetime].jpg.chip.jpg``.

    Names without the race field get a null race. Byte-identical files (same sha256) are handled by
    ``duplicates``: ``keep_one`` keeps the first name of each group, ``drop`` drops every member of
    a group whose labels conflict and keeps one of the others, ``keep_all`` keeps them all (the
    split keeps a group together either way, since its key is the content hash).
    """
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(".jpg"))
    if not files:
        raise FileNotFoundError(f"no UTKFace images (*.jpg.chip.jpg) under '{root}'")
    rows, dropped = [], []
    for f in files:
        rel = f.relative_to(root).as_posix()
        m = UTKFACE_NAME.match(f.name)
        if m is None or int(m["gender"]) not in (0, 1):
            dropped.append((rel, "unparseable_name"))
            continue
        row = manifest.empty_record(rel)
        row.update(
            age=float(m["age"]),
            gender=int(m["gender"]),
            race=int(m["race"]) if m["race"] is not None else None,
            sha256=sha256_file(f),
        )
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame, more = _dedupe(frame, duplicates)
    dropped += more
    outside = (frame["age"] < age_range[0]) | (frame["age"] > age_range[1])
    dropped += [(p, "age_out_of_range") for p in frame.loc[outside, "path"]]
    frame = frame[~outside].reset_index(drop=True)
    return frame, pd.DataFrame(dropped, columns=["path", "reason"])


def _dedupe(frame: pd.DataFrame, mode: str) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    if mode not in ("keep_one", "drop", "keep_all"):
        raise ValueError(f"unknown duplicates mode '{mode}'; choose from ['drop', 'keep_all', 'keep_one']")
    if mode == "keep_all":
        return frame, []
    groups = frame.groupby("sha256")
    labels = groups[["age", "gender", "race"]].nunique(dropna=False).max(axis=1)
    conflicting = set(labels.index[labels > 1])
    first = ~frame.duplicated("sha256", keep="first")
    keep = first if mode == "keep_one" else first & ~frame["sha256"].isin(conflicting)
    reasons = np.where(frame["sha256"].isin(conflicting), "duplicate_conflicting_labels", "duplicate")
    dropped = [(p, str(r)) for p, r, k in zip(frame["path"], reasons, keep, strict=True) if not k]
    return frame[keep].reset_index(drop=True), dropped


def read_celeba_column(path: Path) -> pd.Series:
    """Read a two-column CelebA file (``identity_CelebA.txt``, ``list_eval_partition.txt``)."""
    if not path.is_file():
        raise FileNotFoundError(f"CelebA label file '{path}' not found")
    table = pd.read_csv(path, sep=r"\s+", header=None, names=["file", "value"], dtype={"file": str})
    return table.set_index("file")["value"]


def read_celeba_attributes(path: Path) -> pd.DataFrame:
    """``list_attr_celeba.txt``: a count line, a header of 40 names, then ±1 per image."""
    lines = path.read_text().splitlines()
    names = lines[1].split()
    rows = [line.split() for line in lines[2:] if line.strip()]
    frame = pd.DataFrame([r[1:] for r in rows], index=[r[0] for r in rows], columns=names).astype(int)
    bad = ~frame.isin([-1, 1]).all(axis=1)
    if bad.any():
        raise ValueError(f"'{path}': attribute values must be -1 or 1 (first bad row {frame.index[bad][0]})")
    return frame


def read_celeba_landmarks(path: Path) -> pd.DataFrame:
    """``list_landmarks_align_celeba.txt``: count line, header, then 10 coordinates per image."""
    lines = path.read_text().splitlines()
    rows = [line.split() for line in lines[2:] if line.strip()]
    return pd.DataFrame(
        [[float(v) for v in r[1:11]] for r in rows], index=[r[0] for r in rows], columns=list(manifest.LANDMARK_COLUMNS)
    )


def celeba(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """CelebA aligned images with identities, 40 attributes, the official partition and landmarks.

    ``root`` holds ``img_align_celeba/`` and the label files; the landmark file is optional.
    """
    images = root / "img_align_celeba"
    if not images.is_dir():
        raise FileNotFoundError(f"'{images}' not found: extract img_align_celeba.zip there")
    identity = read_celeba_column(root / "identity_CelebA.txt")
    partition = read_celeba_column(root / "list_eval_partition.txt")
    attributes = read_celeba_attributes(root / "list_attr_celeba.txt")
    lm_file = root / "list_landmarks_align_celeba.txt"
    landmarks = read_celeba_landmarks(lm_file) if lm_file.is_file() else None
    rows, dropped = [], []
    for f in sorted(images.glob("*.jpg")):
        rel = f.relative_to(root).as_posix()
        if f.name not in identity.index or f.name not in attributes.index:
            dropped.append((rel, "no_labels"))
            continue
        row = manifest.empty_record(rel)
        attrs = attributes.loc[f.name]
        row.update(
            identity=str(identity[f.name]),
            gender=0 if attrs["Male"] == 1 else 1,
            partition=CELEBA_PARTITIONS.get(int(partition.get(f.name, -1))),
        )
        row.update({f"attr_{k}": int(v == 1) for k, v in attrs.items()})
        if landmarks is not None and f.name in landmarks.index:
            row.update(landmarks.loc[f.name].to_dict())
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no labelled CelebA images under '{images}'")
    return pd.DataFrame(rows), pd.DataFrame(dropped, columns=["path", "reason"])


AGEDB_NAME = re.compile(r"^(?P<index>\d+)_(?P<name>.+)_(?P<age>\d+)_(?P<gender>[mMfF])\.jpg$")


def agedb(root: Path, age_range: tuple[float, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """AgeDB: ``[index]_[Name]_[age]_[gender].jpg``; the subject name is the identity (m/f -> 0/1)."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".jpg")
    if not files:
        raise FileNotFoundError(f"no AgeDB images ([index]_[Name]_[age]_[gender].jpg) under '{root}'")
    rows, dropped = [], []
    for f in files:
        rel = f.relative_to(root).as_posix()
        m = AGEDB_NAME.match(f.name)
        if m is None:
            dropped.append((rel, "unparseable_name"))
            continue
        row = manifest.empty_record(rel)
        row.update(identity=m["name"], age=float(m["age"]), gender=0 if m["gender"].lower() == "m" else 1)
        rows.append(row)
    frame = pd.DataFrame(rows)
    outside = (frame["age"] < age_range[0]) | (frame["age"] > age_range[1])
    dropped += [(p, "age_out_of_range") for p in frame.loc[outside, "path"]]
    return frame[~outside].reset_index(drop=True), pd.DataFrame(dropped, columns=["path", "reason"])


def identity_folders(
    root: Path,
    exts: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp"}),
    named: re.Pattern[str] | None = None,
    layout: str = "<folder>/<person>/<image>",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A folder per identity (CASIA-WebFace, LFW): ``<root>/<identity>/<image>``.

    ``named``: a pattern the file name must match, its group ``name`` equal to the folder's
    (LFW's ``<Name>_<NNNN>.jpg``); a file that does not is dropped as ``unparseable_name``.
    ``layout`` says, in the error for a folder without any, what the source needs.
    """
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)
    rows, dropped = [], []
    for f in files:
        rel = f.relative_to(root)
        if len(rel.parts) < 2:
            dropped.append((rel.as_posix(), "not_in_identity_folder"))
            continue
        m = named.match(f.name) if named is not None else None
        if named is not None and (m is None or m["name"] != rel.parts[-2]):
            dropped.append((rel.as_posix(), "unparseable_name"))
            continue
        row = manifest.empty_record(rel.as_posix())
        row["identity"] = rel.parts[-2]
        rows.append(row)
    if not rows:
        top = f"; {len(dropped)} images lie at its top level, outside any identity folder" if dropped else ""
        raise FileNotFoundError(f"no images in identity folders under '{root}'{top}: this source needs {layout}")
    return pd.DataFrame(rows), pd.DataFrame(dropped, columns=["path", "reason"])


LFW_NAME = re.compile(r"^(?P<name>.+)_(?P<number>\d{4})\.jpg$")


def lfw(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Labeled Faces in the Wild in its official layout, ``<top>/<Name>/<Name>_<NNNN>.jpg`` (the
    deep-funneled release's top folder is ``lfw-deepfunneled/``; ``lfw/`` and ``lfw_funneled/``
    read the same): the folder names the person, and no other label exists.

    A file whose name does not read ``<its folder>_<four digits>.jpg`` is dropped as
    ``unparseable_name``, one outside a person's folder as ``not_in_identity_folder``.
    """
    layout = "<Name>/<Name>_<NNNN>.jpg (extract lfw-deepfunneled.tgz there)"
    return identity_folders(root, frozenset({".jpg"}), LFW_NAME, layout)


RECORDIO_MAGIC = 0xCED7230A


def unpack_recordio(rec: Path, out: Path) -> int:
    """insightface's ``train.rec`` (MXNet RecordIO) -> ``out/<label>/<index>.jpg``; returns images.

    Each record: magic, a length word (low 29 bits), then ``IRHeader`` (flag uint32, label float32,
    id uint64, id2 uint64), ``flag`` extra float32 labels when flag > 0, then the JPEG bytes; records
    are padded to 4 bytes. insightface's record 0 is a header (flag > 0) without an image.
    """
    import struct

    count = 0
    with rec.open("rb") as fh:
        index = 0
        while header := fh.read(8):
            if len(header) < 8:
                raise ValueError(f"'{rec}' is truncated at record {index}")
            magic, word = struct.unpack("<II", header)
            if magic != RECORDIO_MAGIC:
                raise ValueError(f"'{rec}' is not a RecordIO file (bad magic at record {index})")
            length = word & ((1 << 29) - 1)
            payload = fh.read(length)
            fh.read((4 - length % 4) % 4)
            if len(payload) < length or length < 24:
                raise ValueError(f"'{rec}' is truncated at record {index}")
            flag, label, _, _ = struct.unpack("<IfQQ", payload[:24])
            image = payload[24 + 4 * flag :]
            if flag == 0 and image:
                target = out / str(int(label)) / f"{index}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(image)
                count += 1
            index += 1
    return count
