"""What ``faceattr predict`` says on in-the-wild photos: LFW's, and Grace Hopper's.

    python bench/predict_in_the_wild.py --model models/export/model.onnx \
        [--lfw ../shared/datasets/lfw/lfw-deepfunneled.tgz] [--people 40] [--per-person 8] [--seed 0]

LFW's photos are news photographs (not UTKFace, not CelebA's aligned crops) and carry no gender
or age, but they name their person: a person's photos should agree in gender, and a model whose
calls flip within a person, or flip with high probability, is not believable. From the people
with at least ``--per-person`` photos, ``--people`` are drawn (``random.Random(seed)``, people in
name order) and ``--per-person`` photos of each (the same generator); only those members are
extracted (``safe_extract``: no links, nothing outside the folder) into a temporary folder and go
through ``faceattr.predict.Predictor`` with ``faceattr predict``'s defaults (the one inference
path). Printed: rows, photos with more than one
face, detections left out and why, the first face's gender agreement with its person's majority,
the disagreements with probability >= 0.8, the median ``age_std``, and the median spread (std) of
the predicted age over a person's photos; then matplotlib's ``grace_hopper.jpg`` row. Aggregates
only: the rows name LFW's photos (its terms), so they are not printed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tarfile
import tempfile
from collections import Counter, defaultdict
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LFW = ROOT.parent / "shared" / "datasets" / "lfw" / "lfw-deepfunneled.tgz"
CONFIDENT = 0.8


def draw_photos(names: list[str], people: int, per_person: int, seed: int) -> dict[str, list[str]]:
    """``people`` persons with at least ``per_person`` photos, ``per_person`` photos each, seeded;
    ``names``: the archive's member names, ``<top>/<Person>/<Person>_NNNN.jpg``."""
    by_person: dict[str, list[str]] = defaultdict(list)
    for name in names:
        parts = PurePosixPath(name).parts
        if len(parts) == 3 and parts[2].lower().endswith(".jpg"):
            by_person[parts[1]].append(name)
    eligible = sorted(p for p, photos in by_person.items() if len(photos) >= per_person)
    if len(eligible) < people:
        raise SystemExit(f"error: only {len(eligible)} people have >= {per_person} photos; asked for {people}")
    rng = random.Random(seed)
    chosen = rng.sample(eligible, people)
    return {p: sorted(rng.sample(sorted(by_person[p]), per_person)) for p in chosen}


def summarise(rows: list[dict], person_of: dict[str, str]) -> dict[str, float]:
    """Aggregates of the rows of photos named in ``person_of`` (photo path -> person)."""
    first = {r["path"]: r for r in rows if r["status"] == "ok" and r["face"] == 0}
    calls: dict[str, list[dict]] = defaultdict(list)
    for path, row in first.items():
        calls[person_of[path]].append(row)
    agree = confident_disagree = 0
    for person_rows in calls.values():
        majority = Counter(r["gender"] for r in person_rows).most_common(1)[0][0]
        for r in person_rows:
            agree += r["gender"] == majority
            confident_disagree += r["gender"] != majority and r["gender_prob"] >= CONFIDENT
    spreads = [statistics.pstdev([r["age"] for r in rs]) for rs in calls.values() if len(rs) > 1]
    return {
        "photos": len(person_of),
        "rows": len(rows),
        "photos_with_a_face": len(first),
        "photos_with_more_faces": sum(r["faces_in_photo"] > 1 for r in first.values()),
        "gender_agrees_with_person": agree,
        "confident_disagreements": confident_disagree,
        "median_age_std": statistics.median(r["age_std"] for r in first.values() if r.get("age_std") is not None),
        "median_age_spread_within_person": statistics.median(spreads) if spreads else float("nan"),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="what faceattr predict takes: .onnx, model.pt, run folder")
    p.add_argument("--lfw", type=Path, default=DEFAULT_LFW, help="LFW's deep-funneled archive")
    p.add_argument("--people", type=int, default=40)
    p.add_argument("--per-person", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not args.lfw.is_file():
        print(
            f"error: LFW archive '{args.lfw}' not found (../shared/datasets/lfw/lfw-deepfunneled.tgz)", file=sys.stderr
        )
        return 1

    from matplotlib import cbook

    from faceattr.data.fetch import safe_extract
    from faceattr.predict import Predictor, find_images, load_model, read_ahead

    predictor = Predictor(load_model(args.model))
    with tarfile.open(args.lfw) as tar:
        names = tar.getnames()
    photos = draw_photos(names, args.people, args.per_person, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        members = [m for ms in photos.values() for m in ms]
        safe_extract(args.lfw, Path(tmp), members=set(members))
        person_of = {str(Path(tmp) / m): person for person, ms in photos.items() for m in ms}
        rows = list(predictor.rows(read_ahead(find_images([str(Path(tmp) / m) for m in members]))))
    s = summarise(rows, person_of)
    left = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in sorted(predictor.dropped.items())) or "none"
    print(f"model: {predictor.model.id}")
    print(
        f"LFW, {args.people} people x {args.per_person} photos (seed {args.seed}): {s['rows']} rows; "
        f"{s['photos_with_a_face']} of {s['photos']} photos with a face, {s['photos_with_more_faces']} with more "
        f"than one; detections left out: {left}"
    )
    print(
        f"  first face's gender = its person's majority: {s['gender_agrees_with_person']} / "
        f"{s['photos_with_a_face']}; disagreements with probability >= {CONFIDENT}: {s['confident_disagreements']}"
    )
    print(
        f"  median age_std {s['median_age_std']:.1f} years; median spread of the age over a person's photos "
        f"{s['median_age_spread_within_person']:.1f} years"
    )
    hopper = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    for row in predictor.rows(read_ahead(find_images([str(hopper)]))):
        keep = ("faces_in_photo", "box_w", "gender", "gender_prob", "age", "age_std", "model")
        print("grace_hopper.jpg:", {k: row.get(k) for k in keep})
    return 0


if __name__ == "__main__":
    sys.exit(main())
