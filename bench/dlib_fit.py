"""``align.fit: dlib`` against ``mtcnn``: whose five points should cut dlib's chips?

    python bench/dlib_fit.py [--lfw 150] [--utkface 1500]     # needs dlib-bin and ../shared/datasets

dlib's network was trained on chips dlib cuts from its 5-point shape predictor's points (eye
corners, base of the nose) found in its HOG detector's box. faceattr finds faces with MTCNN, whose
five points (eye centres, nose tip, mouth corners) the default warp fits onto median positions
(``DLIB_CHIP_TEMPLATE``); ``align.fit: dlib`` instead runs dlib's predictor in the box HOG would
draw, made from MTCNN's (``HOG_BOX_IN_MTCNN_BOX``), and fits dlib's points onto dlib's own chip.

1. On the first ``--lfw`` LFW photos where HOG finds one face: where HOG's box lies in units of
   MTCNN's (median, scaled MAD; the constant in code beside it), and how far the predictor's
   points move from those it finds in HOG's own box when run in MTCNN's box as it is, and in the
   box made from it (mean over the five points, in units of the eye distance).
2. On a seeded ``--utkface`` sample of UTKFace's photos (the faces MTCNN finds at p >= 0.9): dlib's
   frozen descriptor of each face cut both ways; a logistic-regression gender probe and a ridge age
   probe, 5-fold cross-validated over the images (UTKFace names nobody; the unit is the image).
   Prints each fit's accuracy and MAE, the difference (dlib - mtcnn) with a 95 % paired bootstrap
   CI over the images, and the ratio against the mtcnn fit, the baseline run in this process.

Nothing is written: the photos stay in memory (the data's terms).
"""

from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dlib_lfw_verification import embed  # noqa: E402  (bench/ is the script's folder)

from faceattr.data.align import (  # noqa: E402
    DLIB_CHIP_TEMPLATE,
    HOG_BOX_IN_MTCNN_BOX,
    DlibShapePredictor,
    MTCNNDetector,
    align_face,
    shape_points,
)

SHARED = ROOT.parent / "shared" / "datasets"


def box_map(count: int) -> None:
    import dlib
    from PIL import Image

    archive = SHARED / "lfw" / "lfw-deepfunneled.tgz"
    shape5 = DlibShapePredictor()
    predictor = shape5._model()
    hog = dlib.get_frontal_face_detector()
    photos, boxes = [], []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if not member.name.endswith(".jpg"):
                continue
            image = np.asarray(Image.open(tar.extractfile(member)).convert("RGB"))
            found = hog(image, 1)
            if len(found) == 1:
                photos.append(image)
                boxes.append(found[0])
            if len(photos) == count:
                break
    found = MTCNNDetector("cpu").detect([Image.fromarray(p) for p in photos])
    rel, raw, mapped = [], [], []
    for image, box, det in zip(photos, boxes, found, strict=True):
        if det is None:
            continue
        x1, y1, x2, y2 = det.box
        w, h = x2 - x1, y2 - y1
        rel.append([(box.left() - x1) / w, (box.top() - y1) / h, (box.right() - x1) / w, (box.bottom() - y1) / h])
        own = shape_points(predictor(image, box))
        eyes = np.linalg.norm(own[0] - own[2])
        as_is = shape_points(predictor(image, dlib.rectangle(*(round(v) for v in det.box))))
        raw.append(np.linalg.norm(as_is - own, axis=1).mean() / eyes)
        made = shape5.points(Image.fromarray(image), det.box)
        mapped.append(np.linalg.norm(made - own, axis=1).mean() / eyes)
    rel = np.asarray(rel)
    median = np.median(rel, 0)
    mad = np.median(np.abs(rel - median), 0) * 1.4826
    print(f"{len(rel)} of {len(photos)} LFW photos with one HOG face and an MTCNN face")
    print("HOG's box in units of MTCNN's (left, top, right, bottom):")
    print(f"  median {np.round(median, 3).tolist()}, scaled MAD {np.round(mad, 3).tolist()}")
    print(f"  in code (HOG_BOX_IN_MTCNN_BOX): {list(HOG_BOX_IN_MTCNN_BOX)}")
    print("predictor's points against those in HOG's own box, mean over the five / eye distance:")
    for name, err in (("in MTCNN's box as it is", raw), ("in the box made from MTCNN's", mapped)):
        err = np.asarray(err)
        print(f"  {name:30s} mean {err.mean():.4f}, median {np.median(err):.4f}, p90 {np.quantile(err, 0.9):.4f}")


def probes(count: int, boot: int = 4000) -> None:
    from PIL import Image
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import cross_val_predict

    from faceattr.models.dlib_resnet import load_dlib_resnet

    archive = SHARED / "utkface" / "UTKFace.tar.gz"
    rng = np.random.default_rng(0)
    photos, labels = [], []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            name = Path(member.name).name
            if not name.endswith(".jpg") or rng.random() > count / 23708 * 1.1:
                continue
            try:
                age, gender = int(name.split("_")[0]), int(name.split("_")[1])
            except (ValueError, IndexError):
                continue
            photos.append(Image.open(tar.extractfile(member)).convert("RGB"))
            labels.append((age, gender))
            if len(photos) == count:
                break
    shape5 = DlibShapePredictor()
    chips: dict[str, list[np.ndarray]] = {"mtcnn": [], "dlib": []}
    kept = []
    for k, (photo, det) in enumerate(zip(photos, MTCNNDetector("cpu").detect(photos), strict=True)):
        if det is None or det.probability < 0.9:
            continue
        chips["mtcnn"].append(align_face(photo, det.landmarks, 150, points=DLIB_CHIP_TEMPLATE).crop)
        chips["dlib"].append(align_face(photo, det.landmarks, 150, fit=shape5.fit(photo, det.box, 150)).crop)
        kept.append(k)
    y = np.asarray(labels)[kept]
    model = load_dlib_resnet().eval()
    scores = {}
    for fit, faces in chips.items():
        emb = embed(model, np.stack(faces), np.arange(len(faces)), flip=False, batch=32)
        gender = cross_val_predict(LogisticRegression(max_iter=2000), emb, y[:, 1], cv=5)
        age = cross_val_predict(Ridge(alpha=1.0), emb, y[:, 0], cv=5)
        scores[fit] = {"gender acc %": 100.0 * (gender == y[:, 1]), "age MAE years": np.abs(age - y[:, 0])}
    n = len(y)
    draws = np.random.default_rng(1).integers(0, n, (boot, n))
    print(f"{n} of {len(photos)} UTKFace photos with an MTCNN face at p >= 0.9; frozen dlib descriptor, 5-fold CV")
    header = f"{'probe':15s} {'fit mtcnn':>10s} {'fit dlib':>10s} {'dlib - mtcnn [95 % CI, images]':>34s}"
    print(f"{header} {'dlib/mtcnn':>10s}")
    for metric in ("gender acc %", "age MAE years"):
        a, b = scores["mtcnn"][metric], scores["dlib"][metric]
        diff = b - a
        low, high = np.quantile(diff[draws].mean(1), [0.025, 0.975])
        print(f"{metric:15s} {a.mean():10.2f} {b.mean():10.2f} {diff.mean():+14.2f} [{low:+.2f}, {high:+.2f}]"
              f"{b.mean() / a.mean():16.3f}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lfw", type=int, default=150, help="LFW photos for the box map (0: skip)")
    p.add_argument("--utkface", type=int, default=1500, help="UTKFace photos for the probes (0: skip)")
    args = p.parse_args()
    if args.lfw:
        box_map(args.lfw)
    if args.utkface:
        probes(args.utkface)


if __name__ == "__main__":
    main()
