"""Synthetic faces: the embedded default data set, rendered deterministically from a seed.

These are drawings, not photographs. They exist so that ``dvc repro`` runs end to end on a fresh
machine with nothing downloaded, and so that every stage has learnable signal to show: each
identity has a fixed face (outline, eye spacing, nose, mouth, skin tone, hair), age changes
proportions, wrinkles and hair colour, gender changes the jaw, brows, hair length, beard and lips,
and each image gets a random pose, scale, lighting and noise. The exact five landmarks (eye
centres, nose tip, mouth corners; "left" is the image's left) are returned with every image.
Numbers measured on this set say that the pipeline learns, never how well a method works on faces.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ATTRIBUTES = ("eyeglasses", "smiling", "beard", "bangs")


@dataclass(frozen=True)
class Identity:
    """Fixed appearance of one synthetic person."""

    name: str
    gender: int  # 0 male, 1 female (UTKFace's convention)
    base_age: float
    half_width: float
    half_height: float
    jaw_power: float  # superellipse exponent of the lower face: higher is squarer
    eye_spacing: float  # fraction of half_width
    eye_size: float
    nose_length: float  # fraction of half_height
    mouth_width: float  # fraction of half_width
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    iris: tuple[int, int, int]
    long_hair: bool
    bangs: bool
    beard: bool
    bald_age: float  # age from which a man has no top hair
    lipstick: bool
    glasses_rate: float


@dataclass(frozen=True)
class SyntheticFace:
    """One rendered image with its labels; landmarks are (5, 2) pixel coordinates."""

    image: Image.Image
    identity: str
    age: int
    gender: int
    landmarks: np.ndarray
    attributes: dict[str, int]


_SKINS = np.array([[241, 205, 180], [224, 172, 138], [198, 134, 96], [141, 85, 56], [92, 58, 40]])
_HAIRS = np.array([[30, 25, 20], [80, 50, 30], [150, 110, 60], [200, 170, 110], [110, 40, 20]])


def make_identity(rng: np.random.Generator, name: str) -> Identity:
    """Draw a random identity; every field is fixed for all of this person's images."""
    gender = int(rng.random() < 0.5)
    male = gender == 0
    skin = _SKINS[rng.integers(len(_SKINS))] + rng.normal(0, 8, 3)
    hair = _HAIRS[rng.integers(len(_HAIRS))] + rng.normal(0, 10, 3)
    return Identity(
        name=name,
        gender=gender,
        base_age=float(np.clip(rng.normal(36, 18), 5, 82)),
        half_width=float(rng.uniform(27, 33) * (1.07 if male else 1.0)),
        half_height=float(rng.uniform(36, 42)),
        jaw_power=float(rng.uniform(2.8, 3.6) if male else rng.uniform(1.8, 2.3)),
        eye_spacing=float(rng.uniform(0.36, 0.46)),
        eye_size=float(rng.uniform(4.0, 5.5)),
        nose_length=float(rng.uniform(0.28, 0.40)),
        mouth_width=float(rng.uniform(0.30, 0.42)),
        skin=tuple(int(v) for v in np.clip(skin, 0, 255)),
        hair=tuple(int(v) for v in np.clip(hair, 0, 255)),
        iris=tuple(int(v) for v in rng.integers(20, 160, 3)),
        long_hair=bool(rng.random() < (0.1 if male else 0.85)),
        bangs=bool(rng.random() < (0.15 if male else 0.4)),
        beard=bool(male and rng.random() < 0.45),
        bald_age=float(rng.uniform(40, 120) if male else 999.0),
        lipstick=bool(not male and rng.random() < 0.5),
        glasses_rate=float(rng.choice([0.05, 0.5])),
    )


def _blend(a: tuple[int, ...], b: tuple[int, ...], t: float) -> tuple[int, ...]:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))


def _outline(cx: float, cy: float, a: float, b: float, jaw: float, n: int = 48) -> list[tuple]:
    """Face outline: an ellipse on top, a superellipse (squarer for higher ``jaw``) below."""
    points = []
    for k in range(n):
        t = 2 * math.pi * k / n
        c, s = math.cos(t), math.sin(t)
        power = jaw if s > 0 else 2.0
        x = cx + a * math.copysign(abs(c) ** (2 / power), c)
        y = cy + b * math.copysign(abs(s) ** (2 / power), s)
        points.append((x, y))
    return points


def render_face(
    identity: Identity,
    age: int,
    rng: np.random.Generator,
    size: int = 128,
    max_rotation: float = 15.0,
    lighting: float = 0.35,
) -> SyntheticFace:
    """Render one image of ``identity`` at ``age`` with random pose, lighting and accessories.

    ``max_rotation`` (degrees) and ``lighting`` (largest light-gradient strength) set the style of
    a set: a studio-like identity set and a wilder attribute set leave transfer a gap to cross.
    """
    s = size / 128.0
    canvas = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(40, 220, 3)))
    draw = ImageDraw.Draw(canvas)
    for _ in range(4):  # background clutter
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(8, size // 2, 2)
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))

    child = min(age, 18) / 18.0  # 0 for a newborn, 1 for an adult
    a = identity.half_width * s * (0.82 + 0.18 * child)
    b = identity.half_height * s * (0.78 + 0.22 * child)
    cx, cy = size / 2, size / 2 + 2 * s
    grey = float(np.clip((age - 35) / 35, 0, 1))
    hair = _blend(identity.hair, (205, 205, 205), grey)
    skin = identity.skin
    smiling = int(rng.random() < 0.5)
    glasses = int(rng.random() < identity.glasses_rate)
    beard = int(identity.beard and age >= 17)
    bald = age >= identity.bald_age

    draw.rectangle([cx - a * 0.45, cy + b * 0.8, cx + a * 0.45, size], fill=_blend(skin, (0, 0, 0), 0.15))
    if identity.long_hair:
        draw.rectangle([cx - a * 1.2, cy - b * 0.6, cx + a * 1.2, cy + b * 1.3], fill=hair)
    draw.polygon(_outline(cx, cy, a, b, identity.jaw_power), fill=skin)

    eye_y = cy - b * (0.02 + 0.16 * child)
    eye_dx = a * identity.eye_spacing
    eye_r = identity.eye_size * s * (1.25 - 0.25 * child)
    nose_y = eye_y + b * identity.nose_length * (0.8 + 0.2 * child)
    mouth_y = nose_y + b * 0.24
    mouth_dx = a * identity.mouth_width
    lift = 3 * s if smiling else 0.0
    landmarks = np.array(
        [
            [cx - eye_dx, eye_y],
            [cx + eye_dx, eye_y],
            [cx, nose_y],
            [cx - mouth_dx, mouth_y - lift],
            [cx + mouth_dx, mouth_y - lift],
        ],
        dtype=np.float64,
    )

    if not bald:  # top hair, with bangs down to the brows
        low = eye_y - eye_r * 2.2 if identity.bangs else cy - b * 0.62
        draw.chord([cx - a * 1.05, cy - b * 1.12, cx + a * 1.05, cy - b * 0.1], 180, 360, fill=hair)
        draw.rectangle([cx - a * 0.9, cy - b * 0.75, cx + a * 0.9, low], fill=hair)
    wrinkle = _blend(skin, (60, 40, 30), 0.35 + 0.3 * grey)
    for k in range(int(np.clip((age - 28) / 10, 0, 5))):  # forehead lines
        y = eye_y - eye_r * 2.6 - k * 2.2 * s
        draw.line([cx - a * 0.45, y, cx + a * 0.45, y], fill=wrinkle, width=1)
    if age >= 45:  # crow's feet and nasolabial folds
        for side in (-1, 1):
            ex = cx + side * (eye_dx + eye_r * 1.6)
            for dy in (-2, 0, 2):
                draw.line([ex, eye_y, ex + side * 4 * s, eye_y + dy * s], fill=wrinkle, width=1)
            draw.line(
                [cx + side * a * 0.22, nose_y, cx + side * (mouth_dx + 3 * s), mouth_y + 4 * s], fill=wrinkle, width=1
            )

    brow_w = max(1, round((3.2 if identity.gender == 0 else 1.6) * s))
    brow = _blend(identity.hair, (40, 30, 20), 0.5)
    for ex, ey in landmarks[:2]:
        draw.ellipse([ex - eye_r * 1.5, ey - eye_r, ex + eye_r * 1.5, ey + eye_r], fill=(250, 250, 250))
        draw.ellipse([ex - eye_r * 0.7, ey - eye_r * 0.7, ex + eye_r * 0.7, ey + eye_r * 0.7], fill=identity.iris)
        draw.ellipse([ex - eye_r * 0.3, ey - eye_r * 0.3, ex + eye_r * 0.3, ey + eye_r * 0.3], fill=(10, 10, 10))
        draw.line([ex - eye_r * 1.7, ey - eye_r * 1.9, ex + eye_r * 1.7, ey - eye_r * 2.0], fill=brow, width=brow_w)
    nose_dark = _blend(skin, (0, 0, 0), 0.35)
    draw.line([cx, eye_y + eye_r, cx - 2 * s, nose_y], fill=nose_dark, width=1)
    draw.ellipse([cx - 5 * s, nose_y - 2 * s, cx - 2 * s, nose_y + 1 * s], fill=nose_dark)
    draw.ellipse([cx + 2 * s, nose_y - 2 * s, cx + 5 * s, nose_y + 1 * s], fill=nose_dark)

    lips = (170, 30, 50) if identity.lipstick else _blend(skin, (120, 40, 40), 0.5)
    if beard:
        draw.chord(
            [cx - a * 0.85, mouth_y - b * 0.45, cx + a * 0.85, cy + b * 1.0], 0, 180, fill=_blend(hair, (0, 0, 0), 0.2)
        )
        draw.rectangle(
            [cx - mouth_dx * 1.1, mouth_y - 5 * s, cx + mouth_dx * 1.1, mouth_y - 2 * s],
            fill=_blend(hair, (0, 0, 0), 0.2),
        )
    (lx, ly), (rx, ry) = landmarks[3], landmarks[4]
    if smiling:
        draw.chord([lx, ly - 2 * s, rx, mouth_y + 5 * s], 0, 180, fill=lips)
        draw.chord([lx + 2 * s, ly - 1 * s, rx - 2 * s, mouth_y + 2 * s], 0, 180, fill=(245, 245, 245))
    else:
        draw.line([lx, ly, cx, mouth_y + 1 * s, rx, ry], fill=lips, width=max(1, int(3 * s)))
    if glasses:
        frame = (20, 20, 20)
        for ex, ey in landmarks[:2]:
            draw.ellipse(
                [ex - eye_r * 2.1, ey - eye_r * 1.7, ex + eye_r * 2.1, ey + eye_r * 1.7],
                outline=frame,
                width=max(1, int(1.5 * s)),
            )
        draw.line([landmarks[0][0] + eye_r * 2.1, eye_y, landmarks[1][0] - eye_r * 2.1, eye_y], fill=frame)

    image, landmarks = _random_pose(canvas, landmarks, rng, max_rotation)
    image = _lighting_and_noise(image, rng, lighting)
    attributes = {"eyeglasses": glasses, "smiling": smiling, "beard": beard, "bangs": int(identity.bangs and not bald)}
    return SyntheticFace(image, identity.name, age, identity.gender, landmarks, attributes)


def _random_pose(
    image: Image.Image, landmarks: np.ndarray, rng: np.random.Generator, max_rotation: float
) -> tuple[Image.Image, np.ndarray]:
    """Rotate, scale and shift the face about the image centre; move the landmarks with it."""
    size = image.width
    angle = math.radians(rng.uniform(-max_rotation, max_rotation))
    scale = rng.uniform(0.8, 1.1)
    shift = rng.uniform(-0.08, 0.08, 2) * size
    c = size / 2
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    offset = np.array([c, c]) + shift - rot @ np.array([c, c])  # forward: p' = rot @ p + offset
    inv = np.linalg.inv(rot)
    inv_offset = -inv @ offset
    coeffs = (inv[0, 0], inv[0, 1], inv_offset[0], inv[1, 0], inv[1, 1], inv_offset[1])
    fill = tuple(int(v) for v in rng.integers(40, 220, 3))
    out = image.transform(image.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=fill)
    return out, landmarks @ rot.T + offset


def _lighting_and_noise(image: Image.Image, rng: np.random.Generator, lighting: float) -> Image.Image:
    """A directional lighting gradient, a colour cast, sensor noise and sometimes blur."""
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    arr = np.asarray(image, dtype=np.float32)
    size = arr.shape[0]
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    gain = 1.0 + rng.uniform(0.1, 1.0) * lighting * (math.cos(theta) * xx + math.sin(theta) * yy) * 2
    arr = arr * gain[..., None] * rng.uniform(0.75, 1.15) * rng.uniform(0.92, 1.08, 3)
    arr = arr + rng.normal(0, rng.uniform(2, 8), arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def generate(
    identities: int,
    images_per_identity: int,
    seed: int,
    size: int = 128,
    age_spread: float = 8.0,
    *,
    name: str = "syn",
    max_rotation: float = 15.0,
    lighting: float = 0.35,
):
    """Yield ``identities × images_per_identity`` faces, deterministic for a given seed and ``name``.

    Each identity has its own random stream, so growing the set keeps the earlier faces unchanged.
    The set's ``name`` prefixes every identity and salts the streams: two sets of different names
    hold different people, as two real data sets do.
    """
    salt = zlib.crc32(name.encode())
    for i in range(identities):
        rng = np.random.default_rng([seed, salt, i])
        person = make_identity(rng, f"{name}{i:05d}")
        for _ in range(images_per_identity):
            age = int(np.clip(round(person.base_age + rng.uniform(-age_spread, age_spread)), 1, 90))
            yield render_face(person, age, rng, size, max_rotation, lighting)
