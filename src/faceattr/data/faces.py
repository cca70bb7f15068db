"""Which detections in a photo are faces to answer for (``faceattr predict``, serving).

Light on purpose (no torch): the command line takes its defaults from here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from faceattr.data.align import Detection

# Detections that are not a face to answer for, left out by default (a person's photos in the wild
# gave 13x17-px boxes on water, a box on a mouth corner inside the face it belongs to, a hand):
MIN_FACE = 32  # px: the box's shorter side (the models see 64-px crops; MTCNN itself stops at 20)
MIN_FACE_SHARE = 0.02  # of the photo's shorter side
NESTED = 0.8  # a box with this share of its area inside a larger kept face's box is part of that face


def keep_faces(
    found: Sequence[Detection], size: tuple[int, int], min_face: int, min_face_share: float, keep_nested: bool
) -> tuple[list[Detection], Counter[str]]:
    """The detections (largest first) to answer for, and how many were left out by reason:
    ``too_small`` (the box's shorter side under ``min_face`` px or under ``min_face_share`` of the
    photo's shorter side) and ``inside_another_face`` (most of its box inside a larger kept face's
    box, unless ``keep_nested``)."""
    least = max(min_face, min_face_share * min(size))
    kept: list[Detection] = []
    dropped: Counter[str] = Counter()
    for d in found:
        w, h = d.box[2] - d.box[0], d.box[3] - d.box[1]
        if min(w, h) < least:
            dropped["too_small"] += 1
        elif not keep_nested and any(_inside(d.box, k.box) >= NESTED for k in kept):
            dropped["inside_another_face"] += 1
        else:
            kept.append(d)
    return kept, dropped


def _inside(box: np.ndarray, outer: np.ndarray) -> float:
    """The share of ``box``'s area that lies inside ``outer``."""
    w = max(0.0, min(box[2], outer[2]) - max(box[0], outer[0]))
    h = max(0.0, min(box[3], outer[3]) - max(box[1], outer[1]))
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
    return float(w * h / area)
