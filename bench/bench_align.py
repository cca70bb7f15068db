"""Face detection for alignment: facenet-pytorch's per-image loop against faceattr's batches.

    python bench/bench_align.py [--n 256] [--device cpu]

Real photos: the first N UTKFace images from ../shared/datasets (200×200), or, where that is
absent, matplotlib's Grace Hopper portrait at several crops. Baseline: ``MTCNN.detect`` called
once per image. faceattr: ``MTCNNDetector.detect`` over same-sized batches, with the default
``min_face_size`` (20 px) and with 60 px (fewer pyramid levels; right for tightly cropped sets
such as UTKFace and CelebA-aligned, whose faces fill the frame).
"""

from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, table

from faceattr.data.align import MTCNNDetector

UTK = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "utkface" / "UTKFace.tar.gz"


def load_images(n: int) -> tuple[list[Image.Image], str]:
    if UTK.is_file():
        images = []
        with tarfile.open(UTK) as tf:
            for member in tf:
                if member.isfile() and member.name.endswith(".jpg"):
                    images.append(Image.open(tf.extractfile(member)).convert("RGB"))
                    if len(images) == n:
                        break
        return images, f"{n} UTKFace photos (200×200)"
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        face = Image.open(fh).convert("RGB")
    crops = [face.crop((k % 8, k % 5, 500 + k % 8, 580 + k % 5)).resize((200, 232)) for k in range(n)]
    return crops, f"{n} crops of the Grace Hopper portrait (200×232)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    images, what = load_images(args.n)
    from facenet_pytorch import MTCNN

    plain = MTCNN(keep_all=True, device=args.device)

    def per_image() -> int:
        for im in images:
            plain.detect(im, landmarks=True)
        return len(images)

    def batched(detector: MTCNNDetector) -> int:
        for start in range(0, len(images), args.batch):
            detector.detect(images[start : start + args.batch])
        return len(images)

    default, coarse = MTCNNDetector(args.device), MTCNNDetector(args.device, min_face_size=60)
    batched(default), batched(coarse), per_image()  # warm-up, weights loaded
    t_plain, n = best_of(per_image, 2)
    t_default, _ = best_of(lambda: batched(default), 2)
    t_coarse, _ = best_of(lambda: batched(coarse), 2)
    found = sum(d is not None for d in coarse.detect(images[: args.batch]))
    table(
        f"MTCNN detection, {what}, {args.device}",
        [
            ("facenet-pytorch per-image loop", n / t_plain, "min_face_size 20"),
            (f"faceattr batches of {args.batch}", n / t_default, "min_face_size 20"),
            (
                f"faceattr batches of {args.batch}, min_face_size 60",
                n / t_coarse,
                f"faces found in first batch: {found}/{args.batch}",
            ),
        ],
        baseline="facenet-pytorch per-image loop",
    )


if __name__ == "__main__":
    main()
