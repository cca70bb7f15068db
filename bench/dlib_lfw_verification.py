"""dlib's trunk, ported: 10-fold verification on LFW-style pairs of the shared LFW subset.

dlib reports 99.38 % on LFW's standard pairs (View 2). Those pairs are not shared here, so this
draws a list **the same way** (10 folds of 300 same-person and 300 different-person pairs,
people disjoint across folds) from the shared 1,680 people, once, seeded, into
``protocols/lfw_deepfunneled_pairs_seed0.txt``: it is **not** View 2. Faces are cut by faceattr's
own MTCNN alignment onto dlib's chip (``align.template: dlib``, 150 px); the port embeds them;
the threshold on the Euclidean distance is chosen on the 9 other folds (LFW's protocol), and
dlib's own fixed threshold 0.6 is scored too.

    python bench/dlib_lfw_verification.py [--archive ../shared/datasets/lfw/lfw-deepfunneled.tgz]

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archive", default=str(ROOT.parent / "shared/datasets/lfw/lfw-deepfunneled.tgz"))
    p.add_argument("--work", default="/tmp/faceattr_dlib_lfw", help="cache for the photos and the aligned store")
    p.add_argument("--pairs", default=str(PAIRS), help="the list (drawn here, seeded, when absent)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    work = Path(args.work)
    raw, store = work / "raw", work / "store_dlib150"
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
        cfg = AlignConfig(size=150, template="dlib", max_drop_fraction=0.05)
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
    print(f"download + align {t_align:.0f} s (0 when cached), total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
