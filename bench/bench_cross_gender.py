"""Gender on another data set's photos: `faceattr predict` with a model trained on one data set,
scored against the labels of the other (the photos' own files, detected and aligned by predict).

    python bench/bench_cross_gender.py --model RUN --on celeba|utkface [--n 300]

CelebA: the first N images of ``img_align_celeba.zip`` with the ``Male`` attribute; UTKFace: the
seeded random N ``*.chip.jpg`` of the archive with the gender in the file name (0 male, 1 female). A model
with a gender head is scored on it; an attribute model (CelebA's 40) on ``attr_Male``. Prints the
agreement, its 95 % Wilson interval, the majority share (what a constant answer scores) and how
many photos had no face.
"""

from __future__ import annotations

import argparse
import math
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from faceattr.predict import Predictor, find_images, load_model, read_ahead

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def celeba(folder: Path, n: int) -> dict[str, int]:
    """File -> 1 if female, from list_attr_celeba.txt's Male column."""
    lines = (SHARED / "celeba" / "list_attr_celeba.txt").read_text().splitlines()
    header = lines[1].split()
    male = header.index("Male")
    labels = {parts[0]: int(parts[1 + male] == "-1") for parts in (ln.split() for ln in lines[2:])}
    out = {}
    with zipfile.ZipFile(SHARED / "celeba" / "img_align_celeba.zip") as zf:
        for name in sorted(zf.namelist()):
            base = name.rsplit("/", 1)[-1]
            if base in labels:
                (folder / base).write_bytes(zf.read(name))
                out[str(folder / base)] = labels[base]
                if len(out) == n:
                    break
    return out


def utkface(folder: Path, n: int) -> dict[str, int]:
    """A seeded random sample of N labelled chips (the archive's order runs by age: its first files
    are mostly children and centenarians)."""
    with tarfile.open(SHARED / "utkface" / "UTKFace.tar.gz") as tf:
        members = [m for m in tf.getmembers() if m.isfile() and _utk_gender(m.name) is not None]
        chosen = sorted(np.random.default_rng(0).choice(len(members), size=min(n, len(members)), replace=False))
        out = {}
        for i in chosen:
            base = members[i].name.rsplit("/", 1)[-1]
            (folder / base).write_bytes(tf.extractfile(members[i]).read())
            out[str(folder / base)] = _utk_gender(base)
    return out


def _utk_gender(name: str) -> int | None:
    """UTKFace's gender from ``[age]_[gender]_[race]_[date].jpg.chip.jpg`` (0 male, 1 female)."""
    base = name.rsplit("/", 1)[-1]
    parts = base.split("_")
    if base.endswith(".chip.jpg") and len(parts) >= 4 and parts[1] in ("0", "1"):
        return int(parts[1])
    return None


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="run folder, model.pt, models:/ URI or .onnx")
    p.add_argument("--on", required=True, choices=["celeba", "utkface"], help="the other data set")
    p.add_argument("--n", type=int, default=300)
    p.add_argument(
        "--fill", default="black", choices=["black", "edge", "reflect"], help="crop pixels outside the photo"
    )
    args = p.parse_args()
    model = load_model(args.model)
    key = "p_female" if "gender" in model.meta["tasks"] else "attr_Male"
    if key == "attr_Male" and "Male" not in model.meta.get("attribute_names", []):
        sys.exit(f"error: model '{args.model}' has neither a gender head nor CelebA's Male attribute")
    with tempfile.TemporaryDirectory() as tmp:
        labels = (celeba if args.on == "celeba" else utkface)(Path(tmp), args.n)
        paths = find_images(sorted(labels))
        right = scored = no_face = 0
        for row in Predictor(model, fill=args.fill).rows(read_ahead(paths)):
            if row["status"] != "ok":
                no_face += 1
                continue
            if row["face"] != 0:  # the largest confident face is the labelled person
                continue
            female = row[key] >= 0.5 if key == "p_female" else row[key] < 0.5
            right += int(female) == labels[row["path"]]
            scored += 1
    lo, hi = wilson(right, scored)
    share = sum(labels.values()) / len(labels)
    print(
        f"model {args.model} ({model.meta['variant']}) on {len(labels)} {args.on} photos, fill {args.fill}: "
        "gender agrees on "
        f"{right}/{scored} = {100 * right / scored:.2f} % [{100 * lo:.2f}, {100 * hi:.2f}] (Wilson 95 %, photos "
        f"independent); majority answer scores {100 * max(share, 1 - share):.2f} %; {no_face} photos without a face"
    )


if __name__ == "__main__":
    main()
