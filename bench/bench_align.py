"""Face detection for alignment: facenet-pytorch's per-image loop against faceattr's batches.

    python bench/bench_align.py [--n 512] [--batch 32] [--device cpu]

Real photos: the first N UTKFace images from ../shared/datasets (200×200), or, where that is
absent, matplotlib's Grace Hopper portrait at several crops. Baseline: facenet-pytorch's
``MTCNN.detect`` called once per image. faceattr: ``MTCNNDetector.detect_all`` over batches
(facenet-pytorch's networks and thresholds, every candidate of a batch cropped at once from a
summed-area table, ``faceattr.data.mtcnn``), with the default ``min_face_size`` (20 px) and with
60 px (fewer pyramid levels; right for tightly cropped sets such as UTKFace and CelebA-aligned,
whose faces fill the frame).

Every method detects on every image of the set; beside each speed it prints the images where a
face of probability ≥ 0.9 was found (what ``align`` keeps), the faces found, and how far the
chosen face's landmarks lie from the per-image loop's (px).
"""

from __future__ import annotations

import argparse
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, table

from faceattr.data.align import Detection, MTCNNDetector, choose_face

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


def faces(found: list[list]) -> tuple[int, int]:
    """(images with a face of probability ≥ 0.9, faces found) of a method's detections."""
    return sum(any(f.probability >= 0.9 for f in fs) for fs in found), sum(len(fs) for fs in found)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=512, help="photos in the benchmark set")
    p.add_argument("--batch", type=int, default=32, help="images per faceattr call (align.batch_size)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    images, what = load_images(args.n)
    from facenet_pytorch import MTCNN

    plain = MTCNN(keep_all=True, device=args.device)
    results: dict[str, list[list[Detection]]] = {}

    def per_image() -> int:
        out = []
        for im in images:
            boxes, probs, points = plain.detect(im, landmarks=True)
            if boxes is None:
                out.append([])
                continue
            out.append([Detection(pt, float(pr), bx) for bx, pr, pt in zip(boxes, probs, points, strict=True)])
        results["plain"] = out
        return len(images)

    def batched(name: str, detector: MTCNNDetector) -> Callable[[], int]:
        def go() -> int:
            out = []
            for start in range(0, len(images), args.batch):
                out.extend(detector.detect_all(images[start : start + args.batch]))
            results[name] = out
            return len(images)

        return go

    default, coarse = MTCNNDetector(args.device), MTCNNDetector(args.device, min_face_size=60)
    plain.detect(images[: args.batch]), default.detect(images[: args.batch]), coarse.detect(images[: args.batch])
    t_plain, n = best_of(per_image, 2)
    t_default, _ = best_of(batched("default", default), 2)
    t_coarse, _ = best_of(batched("coarse", coarse), 2)

    def note(name: str, min_face: int) -> str:
        kept, total = faces(results[name])
        if name == "plain":
            return f"min_face_size {min_face}; kept {kept}/{n} images, {total} faces"
        pairs = zip(results["plain"], results[name], strict=True)
        chosen = [(choose_face(a, 0.9), choose_face(b, 0.9)) for a, b in pairs]
        gaps = [float(np.abs(a.landmarks - b.landmarks).max()) for a, b in chosen if a is not None and b is not None]
        gap = max(gaps, default=0.0)
        return f"min_face_size {min_face}; kept {kept}/{n} images, {total} faces; landmarks vs loop ≤ {gap:.2f} px"

    table(
        f"MTCNN detection, {what}, {args.device}, {torch.get_num_threads()} threads",
        [
            ("facenet-pytorch per-image loop", n / t_plain, note("plain", 20)),
            (f"faceattr batches of {args.batch}", n / t_default, note("default", 20)),
            (f"faceattr batches of {args.batch}, min_face_size 60", n / t_coarse, note("coarse", 60)),
        ],
        baseline="facenet-pytorch per-image loop",
    )


if __name__ == "__main__":
    main()
