"""Face alignment to the ArcFace five-point template.

Alignment is a pure function: (image, five landmarks) -> square crop where the landmarks land as
close as possible (least squares, similarity transform) to the template of insightface's
``face_align``. For sizes other than 112 the template is scaled by ``size / 112``.
Real photographs get their landmarks from MTCNN (facenet-pytorch), built lazily on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def template(size: int) -> np.ndarray:
    """The ArcFace template scaled from 112×112 to ``size``×``size`` (uniform scale, no shift)."""
    return ARCFACE_TEMPLATE_112 * (size / 112.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama 1991) mapping ``src`` points onto ``dst``.

    Returns:
        A 2×3 matrix ``M`` with ``dst ≈ src @ M[:, :2].T + M[:, 2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var_s = (s_c**2).sum() / len(src)
    scale = np.trace(np.diag(sig) @ sign) / var_s if var_s > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_d - matrix[:, :2] @ mu_s
    return matrix


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine matrix to (N, 2) points."""
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def align_face(image: Image.Image, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` so that ``landmarks`` fit the template; returns (crop uint8 HWC, landmarks)."""
    matrix = similarity_transform(landmarks, template(size))
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]  # output pixel -> input pixel
    crop = image.convert("RGB").transform(
        (size, size), Image.Transform.AFFINE, tuple(inverse.ravel()), Image.Resampling.BILINEAR
    )
    return np.asarray(crop, dtype=np.uint8), apply_transform(matrix, landmarks)


@dataclass(frozen=True)
class Detection:
    """The chosen face of one image: five landmarks (5, 2) and the detector's probability."""

    landmarks: np.ndarray
    probability: float


class MTCNNDetector:
    """facenet-pytorch's MTCNN, run on batches of images; picks the largest face in each.

    The network weights ship inside the facenet-pytorch wheel, so this works offline. It is built
    on first use, never at import.
    """

    def __init__(self, device: str = "cpu", min_face_size: int = 20) -> None:
        self.device = device
        self.min_face_size = min_face_size
        self._mtcnn = None

    def _model(self):
        if self._mtcnn is None:
            from facenet_pytorch import MTCNN

            self._mtcnn = MTCNN(keep_all=True, device=self.device, min_face_size=self.min_face_size)
        return self._mtcnn

    def detect(self, images: Sequence[Image.Image]) -> list[Detection | None]:
        """Detect faces in same-sized RGB images; ``None`` where no face was found."""
        if not images:
            return []
        boxes, probs, points = self._model().detect(list(images), landmarks=True)
        out: list[Detection | None] = []
        for box, prob, pts in zip(boxes, probs, points, strict=True):
            if box is None:
                out.append(None)
                continue
            areas = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
            best = int(np.argmax(areas))
            out.append(Detection(np.asarray(pts[best], dtype=np.float64), float(prob[best])))
        return out
