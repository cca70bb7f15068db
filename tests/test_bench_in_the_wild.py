"""bench/predict_in_the_wild.py: the seeded draw of LFW photos (their extraction: tests/test_fetch.py) and
the aggregates it prints (agreement with a person's majority, confident disagreements)."""

from __future__ import annotations

import pytest

from .conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("predict_in_the_wild")


NAMES = [f"lfw/P{i}/P{i}_{j:04d}.jpg" for i in range(5) for j in range(i + 1)] + ["lfw/README.txt"]


def test_draw_takes_people_with_enough_photos_seeded(bench) -> None:
    drawn = bench.draw_photos(NAMES, people=2, per_person=3, seed=0)
    assert set(drawn) <= {"P2", "P3", "P4"} and len(drawn) == 2  # P0, P1 have fewer than 3 photos
    assert all(len(v) == 3 and all(m.startswith(f"lfw/{p}/") for m in v) for p, v in drawn.items())
    assert drawn == bench.draw_photos(list(reversed(NAMES)), people=2, per_person=3, seed=0)  # order-free
    with pytest.raises(SystemExit, match="only 3 people"):
        bench.draw_photos(NAMES, people=4, per_person=3, seed=0)


def _row(path: str, gender: str, prob: float, age: float, face: int = 0, faces: int = 1) -> dict:
    return {"path": path, "status": "ok", "face": face, "faces_in_photo": faces, "gender": gender,
            "gender_prob": prob, "age": age, "age_std": 5.0}  # fmt: skip


def test_summary_counts_agreement_with_each_persons_majority(bench) -> None:
    person_of = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "b2": "B", "b3": "B"}
    rows = [
        _row("a1", "male", 0.9, 40, faces=2),
        _row("a1", "female", 0.7, 30, face=1, faces=2),  # a second face: not the photo's call
        _row("a2", "male", 0.95, 42),
        _row("a3", "female", 0.85, 44),  # disagrees with A's majority, confidently
        _row("b1", "female", 0.9, 20),
        _row("b2", "female", 0.9, 22),
        _row("b3", "male", 0.6, 24),  # disagrees, not confidently
    ]
    s = bench.summarise(rows, person_of)
    assert s["rows"] == 7 and s["photos_with_a_face"] == 6 and s["photos_with_more_faces"] == 1
    assert s["gender_agrees_with_person"] == 4 and s["confident_disagreements"] == 1
    assert s["median_age_spread_within_person"] == pytest.approx(
        1.63299, abs=1e-4
    )  # pstdev of 40, 42, 44 and 20, 22, 24
