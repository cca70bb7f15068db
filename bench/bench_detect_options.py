"""Two detection options, before and after, on real faces: speed and faces found.

    python bench/bench_detect_options.py [--large 6] [--turned 60]

1. **Bounded-copy detection** (``align.detect_max_side``): large photos (6000×4000 canvases with
   Grace Hopper's portrait pasted at 3-6x, as a phone photo's face) detected at full resolution
   (``0``) and on a copy at most 640 px.
2. **Turned heads** (``align.retry_rotated``): the first N CelebA photos of ../shared (Grace
   Hopper crops where absent), each turned by 90°, 180° or 270°, detected upright only and with
   the retry; plus the same photos upright, to show what the retry costs where nothing is turned.
"""

from __future__ import annotations

import argparse
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mib

from faceattr.data.align import MTCNNDetector

CELEBA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "celeba" / "img_align_celeba.zip"
TURNS = (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)


def hopper() -> Image.Image:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        return Image.open(fh).convert("RGB")


def large_photos(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    face, out = hopper(), []
    for _ in range(n):
        k = rng.uniform(3, 6)
        big = face.resize((int(face.width * k), int(face.height * k)))
        canvas = Image.new("RGB", (6000, 4000), tuple(int(v) for v in rng.integers(40, 200, 3)))
        canvas.paste(big, (int(rng.integers(0, 6000 - big.width)), int(rng.integers(0, 4000 - big.height))))
        out.append(canvas)
    return out


def upright_photos(n: int) -> list[Image.Image]:
    if CELEBA.is_file():
        with zipfile.ZipFile(CELEBA) as zf:
            names = sorted(x for x in zf.namelist() if x.endswith(".jpg"))[:n]
            return [Image.open(zf.open(x)).convert("RGB") for x in names]
    face = hopper()
    return [face.crop((k % 8, k % 5, 500 + k % 8, 580 + k % 5)) for k in range(n)]


def timed(detector: MTCNNDetector, images: list[Image.Image]) -> tuple[float, int]:
    start = time.perf_counter()
    found = sum(d is not None and d.probability >= 0.9 for im in images for d in detector.detect([im]))
    return time.perf_counter() - start, found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--large", type=int, default=6)
    p.add_argument("--turned", type=int, default=60)
    args = p.parse_args()
    large = large_photos(args.large)
    MTCNNDetector("cpu").detect([large[0].resize((600, 400))])  # build the networks once
    print(f"1. {len(large)} photos of 6000x4000 (one face each, 3-6x Grace Hopper)")
    base = None
    for side in (0, 640):
        seconds, found = timed(MTCNNDetector("cpu", min_probability=0.9, max_side=side), large)
        base = base or seconds
        label = "full resolution" if side == 0 else f"copy at most {side} px"
        rate = f"{seconds / len(large):6.2f} s/photo"
        print(f"   {label:24} {rate}  faces found {found}/{len(large)}  {base / seconds:5.1f}x")
    upright = upright_photos(args.turned)
    turned = [im.transpose(TURNS[i % 3]) for i, im in enumerate(upright)]
    print(f"2. {len(turned)} photos turned by 90/180/270 degrees in turn, and the same photos upright")
    for name, images in (("turned", turned), ("upright", upright)):
        for retry in (False, True):
            seconds, found = timed(MTCNNDetector("cpu", min_probability=0.9, retry_rotated=retry), images)
            label = f"{name}, {'with retry' if retry else 'upright search only'}"
            print(f"   {label:34} faces found {found:3d}/{len(images)}  {1000 * seconds / len(images):7.1f} ms/photo")
    print(f"   peak host RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
