"""Sources for the download stage: each materialises a data set folder with ``manifest.csv``.

A source function gets the config and an empty folder and returns ``(manifest, dropped)``. The
embedded default, ``synthetic``, renders faces; the real sources read the official layout from
``datasets.<role>.uri``: a URL (downloaded with resume and sha256 check), a local archive (checked and
extracted safely) or a local folder (its archives extracted, its other files copied, and any
``SHA256SUMS`` file in it checked).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from faceattr.config import DownloadConfig
from faceattr.data import manifest, sources
from faceattr.data.fetch import download_url, is_url, safe_extract, verify_sha256
from faceattr.data.manifest import group_keys
from faceattr.data.synthetic import ATTRIBUTES, generate
from faceattr.io import atomic_path

log = logging.getLogger(__name__)
MANIFEST = "manifest.csv"
DROPPED = "dropped.csv"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
Result = tuple[pd.DataFrame, pd.DataFrame]


def _synthetic(cfg: DownloadConfig, out: Path, seed: int) -> Result:
    """Render the synthetic face set as JPEGs under ``out/images``."""
    syn = cfg.synthetic
    (out / "images").mkdir(parents=True)
    rows = []
    total = syn.identities * syn.images_per_identity
    faces = generate(
        syn.identities,
        syn.images_per_identity,
        seed,
        syn.image_size,
        syn.age_spread,
        name=cfg.dataset,
        max_rotation=syn.max_rotation,
        lighting=syn.lighting,
    )
    for k, face in enumerate(tqdm(faces, total=total, desc="rendering synthetic faces", unit="img")):
        rel = f"images/{face.identity}_{k:06d}.jpg"
        face.image.save(out / rel, quality=92)
        row = manifest.empty_record(rel)
        row.update(identity=face.identity, age=float(face.age), gender=face.gender)
        row.update({c: float(v) for c, v in zip(manifest.LANDMARK_COLUMNS, face.landmarks.ravel(), strict=True)})
        row.update({f"attr_{a}": face.attributes[a] for a in ATTRIBUTES})
        rows.append(row)
    return pd.DataFrame(rows), pd.DataFrame(columns=["path", "reason"])


def _password(cfg: DownloadConfig) -> str | None:
    """An archive password from the environment variable ``download.password_env`` names."""
    return os.environ.get(cfg.password_env) or None


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def materialise(cfg: DownloadConfig, out: Path, downloads: Path) -> None:
    """Bring ``cfg.uri`` into ``out``: download, verify and extract as its kind requires."""
    if not cfg.uri:
        raise ValueError(f"source '{cfg.source}' needs datasets.<role>.uri: a URL, a local archive or a folder")
    if is_url(cfg.uri):
        name = cfg.uri.rstrip("/").rsplit("/", 1)[-1] or "download"
        safe_extract(download_url(cfg.uri, downloads / name, cfg.sha256), out, _password(cfg))
        return
    path = Path(cfg.uri).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"uri '{path}' not found: point datasets.<role>.uri at the official archive or folder")
    if path.is_file():
        verify_sha256(path, cfg.sha256)
        safe_extract(path, out, _password(cfg))
        return
    sums = path / "SHA256SUMS"
    if sums.is_file():
        for line in sums.read_text().splitlines():
            digest, _, name = line.partition("  ")
            if name and (path / name).is_file():
                verify_sha256(path / name, digest)
    for item in sorted(path.iterdir()):
        if _is_archive(item):
            safe_extract(item, out, _password(cfg))
        elif item.is_dir():
            shutil.copytree(item, out / item.name)
        elif item.name != "SHA256SUMS":
            shutil.copy2(item, out / item.name)


def _utkface(cfg: DownloadConfig, out: Path, seed: int) -> Result:
    del seed
    materialise(cfg, out, out.parent / "downloads")
    return sources.utkface(out, cfg.duplicates, (cfg.age_range[0], cfg.age_range[1]))


def _celeba(cfg: DownloadConfig, out: Path, seed: int) -> Result:
    del seed
    materialise(cfg, out, out.parent / "downloads")
    return sources.celeba(out)


def _agedb(cfg: DownloadConfig, out: Path, seed: int) -> Result:
    del seed
    materialise(cfg, out, out.parent / "downloads")
    return sources.agedb(out, (cfg.age_range[0], cfg.age_range[1]))


def _lfw(cfg: DownloadConfig, out: Path, seed: int) -> Result:
    del seed
    materialise(cfg, out, out.parent / "downloads")
    return sources.lfw(out)


def _casia(cfg: DownloadConfig, out: Path, seed: int) -> Result:
    """CASIA-WebFace as a folder per identity, or insightface's ``faces_webface_112x112`` records."""
    del seed
    materialise(cfg, out, out.parent / "downloads")
    records = sorted(out.rglob("train.rec"))
    if records:
        count = sources.unpack_recordio(records[0], out / "images")
        log.info("unpacked %d images from %s", count, records[0])
        frame, dropped = sources.identity_folders(out / "images")
        frame["path"] = "images/" + frame["path"]
        return frame, dropped
    return sources.identity_folders(out)


SOURCES: dict[str, Callable[[DownloadConfig, Path, int], Result]] = {
    "synthetic": _synthetic,
    "utkface": _utkface,
    "celeba": _celeba,
    "agedb": _agedb,
    "casia": _casia,
    "lfw": _lfw,
}


def subsample(frame: pd.DataFrame, max_images: int, seed: int) -> Result:
    """A seeded subset of whole groups (identities) with about ``max_images`` images.

    The rest are returned as dropped with the reason ``subsampled``, so they are still counted.
    """
    keys = group_keys(frame)
    order = np.random.default_rng(seed).permutation(np.array(sorted(keys.unique())))
    sizes = keys.value_counts()
    chosen = order[: int(np.searchsorted(np.cumsum(sizes[order].to_numpy()), max_images) + 1)]
    keep = keys.isin(chosen)
    skipped = pd.DataFrame({"path": frame.loc[~keep, "path"], "reason": "subsampled"})
    return frame[keep].reset_index(drop=True), skipped


def people_subset(frame: pd.DataFrame, count: int, seed: int) -> Result:
    """A seeded subset of ``count`` whole people; the others' images are dropped as
    ``subsampled_people``, so they are still counted.

    The people are the first ``count`` of one seeded order of all the source's people, so the
    subsets are nested: for the same seed, the people of 100 are among those of 400.

    Raises:
        ValueError: the source names nobody, or fewer people than ``count``.
    """
    named = frame["identity"].dropna()
    people = np.array(sorted(named.unique()))
    if not len(people):
        raise ValueError(f"max_identities={count} needs a source that names its people; this one names none")
    if count > len(people):
        raise ValueError(f"max_identities={count}, but the source has only {len(people)} people: lower it (0: all)")
    order = np.random.default_rng(seed).permutation(people)
    keep = frame["identity"].isin(set(order[:count]))
    skipped = pd.DataFrame({"path": frame.loc[~keep, "path"], "reason": "subsampled_people"})
    return frame[keep].reset_index(drop=True), skipped


def download(cfg: DownloadConfig, out: Path, seed: int) -> dict[str, object]:
    """Materialise ``cfg.source`` into ``out`` (replaced as a whole: a rerun never mixes versions).

    Writes ``manifest.csv`` and ``dropped.csv`` (records not usable, with the reason) into ``out``
    and returns the counts.
    """
    if cfg.source not in SOURCES:
        raise ValueError(f"unknown source '{cfg.source}'; choose from {sorted(SOURCES)}")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        frame, dropped = SOURCES[cfg.source](cfg, tmp, seed)
    except (FileNotFoundError, ValueError) as err:  # name the user's uri, never the scratch folder
        shutil.rmtree(tmp, ignore_errors=True)
        text = str(err).replace(f"'{tmp}/", f"'{cfg.uri} (extracted) ").replace(f"'{tmp}'", f"'{cfg.uri}'")
        raise type(err)(text.replace(str(tmp), cfg.uri or str(out))) from None
    if cfg.max_identities:
        frame, skipped = people_subset(frame, cfg.max_identities, seed)
        dropped = pd.concat([dropped, skipped], ignore_index=True)
    if cfg.max_images:
        frame, skipped = subsample(frame, cfg.max_images, seed)
        dropped = pd.concat([dropped, skipped], ignore_index=True)
    manifest.write(frame, tmp / MANIFEST)
    with atomic_path(tmp / DROPPED) as path:
        dropped.to_csv(path, index=False)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    counts = {
        "records": len(frame) + len(dropped),
        "images": len(frame),
        "dropped": len(dropped),
        "dropped_by_reason": {str(k): int(v) for k, v in sorted(dropped["reason"].value_counts().items())},
    }
    if frame["identity"].notna().any():
        counts["identities"] = int(frame["identity"].nunique())
    return counts
