"""Sources for the download stage: each materialises a data set folder with ``manifest.csv``.

The registry maps a source name to a function ``(config, out_dir, seed) -> counts``. Real data sets
(UTKFace, CelebA, ...) are added as further sources; the embedded default is ``synthetic``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from faceattr.config import DownloadConfig
from faceattr.data import manifest
from faceattr.data.synthetic import ATTRIBUTES, generate

log = logging.getLogger(__name__)
MANIFEST = "manifest.csv"


def _synthetic(cfg: DownloadConfig, out: Path, seed: int) -> dict[str, int]:
    """Render the synthetic face set as JPEGs under ``out/images`` with its manifest."""
    syn = cfg.synthetic
    images = out / "images"
    images.mkdir(parents=True)
    rows = []
    total = syn.identities * syn.images_per_identity
    faces = generate(syn.identities, syn.images_per_identity, seed, syn.image_size, syn.age_spread)
    for k, face in enumerate(tqdm(faces, total=total, desc="rendering synthetic faces", unit="img")):
        rel = f"images/{face.identity}_{k:06d}.jpg"
        face.image.save(out / rel, quality=92)
        row = {
            "path": rel,
            "identity": face.identity,
            "age": float(face.age),
            "gender": face.gender,
            "race": None,
            "partition": None,
            "sha256": None,
        }
        row.update({c: float(v) for c, v in zip(manifest.LANDMARK_COLUMNS, face.landmarks.ravel(), strict=True)})
        row.update({f"attr_{a}": face.attributes[a] for a in ATTRIBUTES})
        rows.append(row)
    manifest.write(pd.DataFrame(rows), out / MANIFEST)
    return {"images": len(rows), "identities": syn.identities}


SOURCES: dict[str, Callable[[DownloadConfig, Path, int], dict[str, int]]] = {"synthetic": _synthetic}


def download(cfg: DownloadConfig, out: Path, seed: int) -> dict[str, int]:
    """Materialise ``cfg.source`` into ``out`` (replaced as a whole: a rerun never mixes versions)."""
    if cfg.source not in SOURCES:
        raise ValueError(f"unknown source '{cfg.source}'; choose from {sorted(SOURCES)}")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts = SOURCES[cfg.source](cfg, tmp, seed)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return counts
