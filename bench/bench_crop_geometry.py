"""Crop geometry: how much of each aligned crop lies outside the photo, per data set and setting.

    python bench/bench_crop_geometry.py [--n 500] [--size 64]

Real photos from ../shared/datasets: the first N UTKFace chips (200×200, tightly cropped) and the
first N CelebA aligned images (178×218). MTCNN finds the five landmarks once per image; each
geometry (template scale × border fill) then aligns the same faces, and the table gives the
median, mean and 90th percentile share of crop pixels that fell outside the photo, with the
baseline (scale 1.0: the plain ArcFace template) in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from faceattr.data.align import MTCNNDetector, align_face

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SCALES = (1.0, 1.1, 1.2, 1.3)


def utkface(n: int) -> list[Image.Image]:
    images = []
    with tarfile.open(SHARED / "utkface" / "UTKFace.tar.gz") as tf:
        for member in tf:
            if member.isfile() and member.name.endswith(".jpg"):
                images.append(Image.open(tf.extractfile(member)).convert("RGB"))
                if len(images) == n:
                    break
    return images


def celeba(n: int) -> list[Image.Image]:
    with zipfile.ZipFile(SHARED / "celeba" / "img_align_celeba.zip") as zf:
        names = sorted(x for x in zf.namelist() if x.endswith(".jpg"))[:n]
        return [Image.open(zf.open(x)).convert("RGB") for x in names]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--size", type=int, default=64)
    args = p.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"needs the real data sets in {SHARED}")
    detector = MTCNNDetector("cpu")
    print(f"share of each {args.size}-px crop outside the photo (fill); {args.n} images per data set")
    print(f"  {'data set':10} {'scale':>5} {'faces':>6} {'median':>7} {'mean':>6} {'p90':>6}  {'x median at 1.0':>15}")
    for name, load in (("utkface", utkface), ("celeba", celeba)):
        images = load(args.n)
        found = [(im, d) for im, d in zip(images, detector.detect(images), strict=True) if d is not None]
        base = None
        for scale in SCALES:
            fills = np.array([align_face(im, d.landmarks, args.size, scale).fill_fraction for im, d in found])
            median = float(np.median(fills))
            base = median if base is None else base
            ratio = median / base if base else float("nan")
            print(
                f"  {name:10} {scale:5.2f} {len(found):6d} {median:7.3f} {fills.mean():6.3f} "
                f"{np.quantile(fills, 0.9):6.3f}  {ratio:15.2f}"
            )


if __name__ == "__main__":
    main()
