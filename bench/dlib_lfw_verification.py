"""dlib's trunk, ported: 10-fold verification on LFW-style pairs of the shared LFW subset.

dlib reports 99.38 % on LFW's standard pairs (View 2). Those pairs are not shared here, so this
draws a list **the same way** (10 folds of 300 same-person and 300 different-person pairs,
people disjoint across folds) from the shared 1,680 people, once, seeded, into
``protocols/lfw_deepfunneled_pairs_seed0.txt``: it is **not** View 2. Faces are cut by faceattr's
own MTCNN alignment onto dlib's chip (``align.template: dlib``, 150 px); the port embeds them;
the threshold on the Euclidean distance is chosen on the 9 other folds (LFW's protocol), and
dlib's own fixed threshold 0.6 is scored too.

    python bench/dlib_lfw_verification.py [--archive ../shared/datasets/lfw/lfw-deepfunneled.tgz] [--dlib-reference]
        [--fit dlib]    # align.fit: dlib's own five points cut the chips (faceattr.data.align)

``--dlib-reference`` also cuts every listed photo's chip with dlib's own pipeline (``dlib-bin``:
HOG detector, 5-point shape predictor, ``get_face_chip(150, 0.25)``, the face nearest the photo's
centre) and scores the port on those chips, on the pairs both alignments kept: the
difference is the alignment's, the network being the same.

The extracted photos and the aligned store go to ``--work`` (a cache outside the repository:
the data's terms forbid committing anything made from it); the pair list names files only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from faceattr.config import AlignConfig, DownloadConfig  # noqa: E402
from faceattr.data import manifest  # noqa: E402
from faceattr.data.aligning import align_dataset  # noqa: E402
from faceattr.data.download import download  # noqa: E402
from faceattr.data.packed import read_store  # noqa: E402
from faceattr.data.pairs import draw_pairs, read_pairs_txt, write_pairs_txt  # noqa: E402
from faceattr.metrics import verification_accuracy  # noqa: E402
from faceattr.models.dlib_resnet import load_dlib_resnet  # noqa: E402

PAIRS = ROOT / "protocols" / "lfw_deepfunneled_pairs_seed0.txt"


def embed(model: torch.nn.Module, faces: np.ndarray, rows: np.ndarray, flip: bool, batch: int) -> np.ndarray:
    """dlib descriptors of store rows (optionally the sum with the mirrored chip's, renormalised)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            x = torch.from_numpy(np.asarray(faces[rows[start : start + batch]])).permute(0, 3, 1, 2).float()
            x = model.normalise(x)
            z = model(x)
            if flip:
                z = torch.nn.functional.normalize(z) + torch.nn.functional.normalize(model(torch.flip(x, dims=[3])))
            out.append(z.numpy())
            print(f"\r  embedded {min(start + batch, len(rows))}/{len(rows)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return np.concatenate(out)


def dlib_chips(raw: Path, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """dlib's own 150-px chips of ``files`` (under ``raw``), and which photos had a face."""
    import dlib
    from PIL import Image

    from faceattr.models.dlib_resnet import CHIP_PADDING, dat_path

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dat_path().with_name("shape_predictor_5_face_landmarks.dat")))
    chips, found = np.zeros((len(files), 150, 150, 3), np.uint8), np.zeros(len(files), bool)
    for i, rel in enumerate(files):
        image = np.asarray(Image.open(raw / rel).convert("RGB"))
        faces = detector(image, 0) or detector(image, 1)
        if faces:
            cy, cx = image.shape[0] / 2, image.shape[1] / 2
            face = min(faces, key=lambda r: (r.center().x - cx) ** 2 + (r.center().y - cy) ** 2)
            chips[i] = dlib.get_face_chip(image, predictor(image, face), size=150, padding=CHIP_PADDING)
            found[i] = True
        if i % 200 == 0:
            print(f"\r  dlib chips {i}/{len(files)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return chips, found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archive", default=str(ROOT.parent / "shared/datasets/lfw/lfw-deepfunneled.tgz"))
    p.add_argument("--work", default="/tmp/faceattr_dlib_lfw", help="cache for the photos and the aligned store")
    p.add_argument("--pairs", default=str(PAIRS), help="the list (drawn here, seeded, when absent)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dlib-reference", action="store_true", help="also score dlib's own chips (needs dlib-bin)")
    p.add_argument("--fit", choices=("mtcnn", "dlib"), default="mtcnn", help="align.fit: whose points cut chips")
    args = p.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    work = Path(args.work)
    raw, store = work / "raw", work / ("store_dlib150" if args.fit == "mtcnn" else f"store_dlib150_fit_{args.fit}")
    t0 = time.perf_counter()
    if not (raw / "manifest.csv").is_file():
        download(DownloadConfig(dataset="lfw", source="lfw", uri=args.archive), raw, seed=args.seed)
    pairs_path = Path(args.pairs)
    if not pairs_path.is_file():
        files = manifest.read(raw / "manifest.csv")
        pairs_path.parent.mkdir(parents=True, exist_ok=True)
        write_pairs_txt(draw_pairs(files, folds=10, per_half=300, seed=args.seed), pairs_path)
        print(f"wrote {pairs_path} (seed {args.seed}; not LFW's View 2)")
    pairs = read_pairs_txt(pairs_path)
    if not (store / "faces.npy").is_file():
        cfg = AlignConfig(size=150, template="dlib", fit=args.fit, max_drop_fraction=0.05)
        counts = align_dataset(raw, store, work / "dropped.csv", cfg)
        print(f"aligned: {counts['aligned']} of {counts['found']}, dropped {counts['dropped_by_reason']}")
    t_align = time.perf_counter() - t0
    faces, labels = read_store(store)
    row_of = {Path(s).name: i for i, s in enumerate(labels["path"])}
    a = pairs["file_a"].map(lambda f: row_of.get(Path(f).name))
    b = pairs["file_b"].map(lambda f: row_of.get(Path(f).name))
    found = (a.notna() & b.notna()).to_numpy()
    a, b = a[found].to_numpy(int), b[found].to_numpy(int)
    same, fold = pairs.loc[found, "same"].to_numpy(bool), pairs.loc[found, "fold"].to_numpy(int)
    rows = np.unique(np.concatenate([a, b]))
    local = {r: k for k, r in enumerate(rows)}
    ia, ib = np.array([local[r] for r in a]), np.array([local[r] for r in b])
    model = load_dlib_resnet()
    print(
        f"{len(pairs)} pairs in {pairs['fold'].nunique()} folds, {int(found.sum())} scored "
        f"({int((~found).sum())} left out: an image MTCNN did not align), {len(rows)} images"
    )
    print("| descriptor | 10-fold accuracy (threshold from the other 9 folds) | at dlib's threshold 0.6 |")
    print("|---|---|---|")
    for flip in (False, True):
        t1 = time.perf_counter()
        z = embed(model, faces, rows, flip, args.batch)
        if flip:
            z = z / np.linalg.norm(z, axis=1, keepdims=True)
        dist = np.linalg.norm(z[ia] - z[ib], axis=1)
        mean, std = verification_accuracy(dist**2, same, fold, np.arange(0, 4, 0.0005))
        fixed = "n/a (renormalised)" if flip else f"{100 * np.mean((dist < 0.6) == same):.2f} %"
        name = "dlib's (one chip)" if not flip else "chip + mirrored chip, summed"
        print(f"| {name} | {100 * mean:.2f} % ± {100 * std:.2f} | {fixed} |  ({time.perf_counter() - t1:.0f} s)")
    if args.dlib_reference:
        t1 = time.perf_counter()
        chips, ok = dlib_chips(raw, [labels["path"][r] for r in rows])
        both = ok[ia] & ok[ib]
        print(f"dlib's pipeline found a face in {int(ok.sum())} of {len(ok)} photos; {int(both.sum())} pairs have both")
        print("| alignment (same network, one chip) | 10-fold accuracy on the pairs both kept |\n|---|---|")
        ours = "faceattr's MTCNN onto dlib's chip template" if args.fit == "mtcnn" else "faceattr, align.fit: dlib"
        for name, source in ((ours, faces[rows]), ("dlib's own", chips)):
            z = embed(model, source, np.arange(len(rows)), False, args.batch)
            dist = np.linalg.norm(z[ia[both]] - z[ib[both]], axis=1)
            acc, sd = verification_accuracy(dist**2, same[both], fold[both], np.arange(0, 4, 0.0005))
            print(f"| {name} | {100 * acc:.2f} % ± {100 * sd:.2f} |")
        print(f"  ({time.perf_counter() - t1:.0f} s)")
    print(f"download + align {t_align:.0f} s (0 when cached), total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
