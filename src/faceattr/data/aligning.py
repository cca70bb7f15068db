"""The align stage's work: every manifest record ends aligned or in the dropped list with a reason."""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from faceattr.config import AlignConfig
from faceattr.data import manifest
from faceattr.data.align import DlibShapePredictor, MTCNNDetector, align_face, resize_face, template_points
from faceattr.data.packed import StoreWriter
from faceattr.io import atomic_path

log = logging.getLogger(__name__)


class TooManyDropped(ValueError):
    """More records were dropped than ``align.max_drop_fraction`` allows."""


def load_image(path: Path) -> Image.Image:
    """Open an image as RGB with EXIF orientation applied; greyscale, CMYK, alpha and 16-bit too."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            im = Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(background, rgba)
        return im.convert("RGB")


def align_dataset(
    raw_dir: Path, out_dir: Path, dropped_csv: Path, cfg: AlignConfig, device: str = "cpu"
) -> dict[str, object]:
    """Align every record of ``raw_dir/manifest.csv`` into the packed store at ``out_dir``.

    Returns the counts for the metrics file: found, aligned, dropped by reason, drop fraction.

    Raises:
        TooManyDropped: when the dropped fraction exceeds ``cfg.max_drop_fraction``.
    """
    records = manifest.read(raw_dir / "manifest.csv")
    writer = StoreWriter(out_dir, len(records), cfg.size, cfg.scale, cfg.fill, cfg.crop)
    template = template_points(cfg.template)  # None: ArcFace's template at align.scale
    if template is not None:  # every later reader (training, predict) aligns to what the store records
        writer.geometry["template"] = cfg.template
        writer.geometry["template_points"] = [list(p) for p in template]
    shape5 = DlibShapePredictor() if cfg.fit == "dlib" else None
    kept, dropped, fills = [], [], []
    sources: Counter[str] = Counter()
    fitted: Counter[str] = Counter()  # whose points each crop's warp fitted (align.fit)
    detector = (
        MTCNNDetector(device, cfg.min_face_size, cfg.min_probability, cfg.detect_max_side, cfg.retry_rotated)
        if cfg.landmarks in ("mtcnn", "auto")
        else None
    )

    lm_cols = list(manifest.LANDMARK_COLUMNS)
    batch: list[tuple[int, Image.Image]] = []

    def flush() -> None:
        provided = [_provided_points(records.iloc[i], lm_cols) for i, _ in batch]
        wanted = [cfg.landmarks == "mtcnn" or (cfg.landmarks == "auto" and p is None) for p in provided]
        found = iter(_detect(detector, [im for (_, im), w in zip(batch, wanted, strict=True) if w]) if detector else [])
        for (i, image), points, want in zip(batch, provided, wanted, strict=True):
            row = records.iloc[i]
            if want:
                det = next(found)
                if det is None:
                    dropped.append((row["path"], "no_face"))
                    continue
                if det.probability < cfg.min_probability:
                    dropped.append((row["path"], "low_confidence"))
                    continue
                points, box = det.landmarks, det.box
            elif points is None:
                dropped.append((row["path"], "no_landmarks"))
                continue
            if cfg.crop == "resize":
                face = resize_face(image, points, cfg.size)
            else:
                # dlib's points are found in MTCNN's box: provided landmarks (no box) are fitted as they are
                fit = shape5.fit(image, box, cfg.size) if shape5 is not None and want else None
                face = align_face(image, points, cfg.size, cfg.scale, cfg.fill, template, fit)
                fitted["dlib" if fit is not None else "landmarks"] += 1
            writer.add(face.crop)
            out = row.copy()
            out[lm_cols] = face.landmarks.ravel()
            kept.append(out)
            fills.append(face.fill_fraction)
            sources["mtcnn" if want else "provided"] += 1
        batch.clear()

    paths = list(records["path"])
    chunk = max(cfg.batch_size, 1) * 4  # decoded ahead of the detector, bounded in memory
    with (
        ThreadPoolExecutor(max_workers=max(cfg.workers, 1)) as pool,
        tqdm(total=len(paths), desc="aligning", unit="img") as bar,
    ):
        for start in range(0, len(paths), chunk):
            decoded = pool.map(_load_or_reason, [raw_dir / rel for rel in paths[start : start + chunk]])
            for i, result in enumerate(decoded, start):
                if isinstance(result, str):
                    dropped.append((paths[i], result))
                else:
                    batch.append((i, result))
                if len(batch) >= cfg.batch_size:
                    flush()
                bar.update(1)
    flush()
    labels = pd.DataFrame(kept, columns=records.columns).reset_index(drop=True)
    if fitted["dlib"]:  # predict fits dlib's points on a new photo too
        writer.geometry["fit"] = "dlib"
    if cfg.crop == "resize" and len(labels):  # what a new photo is aligned to: where this set puts landmarks
        mean = labels[lm_cols].astype("float64").to_numpy().reshape(-1, 5, 2).mean(0) / cfg.size
        writer.geometry["template_points"] = [[round(float(x), 6), round(float(y), 6)] for x, y in mean]
    writer.close(labels)
    with atomic_path(dropped_csv) as tmp:
        pd.DataFrame(dropped, columns=["path", "reason"]).to_csv(tmp, index=False)
    found = len(records)
    fraction = len(dropped) / found if found else 0.0
    counts = {
        "found": found,
        "aligned": len(kept),
        "dropped": len(dropped),
        "dropped_by_reason": dict(sorted(Counter(r for _, r in dropped).items())),
        "drop_fraction": fraction,
        "landmarks_from": dict(sorted(sources.items())),  # NME against MTCNN's points measures agreement
        "fill_fraction": fill_summary(fills),
    }
    if cfg.fit == "dlib":  # crops cut from dlib's points, and from provided landmarks (no box to search)
        counts["fitted"] = dict(sorted(fitted.items()))
    if fraction > cfg.max_drop_fraction:
        raise TooManyDropped(
            f"{len(dropped)} of {found} images dropped ({fraction:.1%} > align.max_drop_fraction="
            f"{cfg.max_drop_fraction}); reasons {counts['dropped_by_reason']}, list in {dropped_csv}"
        )
    return counts


def fill_summary(fills: list[float]) -> dict[str, float]:
    """Share of each crop that lay outside its photo: median, mean, 90th percentile, max."""
    if not fills:
        return {}
    arr = np.asarray(fills)
    return {
        "median": float(np.median(arr)),
        "mean": float(arr.mean()),
        "p90": float(np.quantile(arr, 0.9)),
        "max": float(arr.max()),
    }


def _load_or_reason(path: Path) -> Image.Image | str:
    """The decoded image, or why it cannot be used (runs in decode threads: PIL frees the GIL)."""
    try:
        return load_image(path)
    except FileNotFoundError:
        return "missing_file"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return "unreadable"


def _provided_points(row: pd.Series, columns: list[str]) -> np.ndarray | None:
    """The manifest's five landmarks, or ``None`` when any coordinate is missing."""
    points = row[columns].to_numpy(dtype=np.float64, na_value=np.nan).reshape(5, 2)
    return points if np.isfinite(points).all() else None


def _detect(detector: MTCNNDetector, images: list[Image.Image]) -> list:
    """The chosen face of each image (the detector groups images by size for its batches)."""
    return detector.detect(images)
