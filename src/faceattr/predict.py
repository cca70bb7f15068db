"""Run a trained model on photos: every face found, aligned as the model's training crops were,
through the network in batches, one row per face with every head's answer.

Inputs are files, folders (recursive) and globs. An input that cannot be read, or a photo without
a face, gets its own row with a status and a reason; nothing aborts the batch. The model is a run
folder (``models/finetune/<run>``), its ``model.pt``, an MLflow ``models:/`` URI (a registered
name and version, or a logged model's id), or an ONNX file written by ``faceattr export``.
"""

from __future__ import annotations

import base64
import glob
import io
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from faceattr.data.align import Detection, DlibShapePredictor, MTCNNDetector, align_face, resize_face
from faceattr.data.aligning import load_image
from faceattr.data.faces import MIN_FACE, MIN_FACE_SHARE, keep_faces
from faceattr.inference.model import Model, ModelError, load_model  # noqa: F401 (predict's API)

log = logging.getLogger(__name__)
CPU = torch.device("cpu")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def find_images(inputs: Sequence[str]) -> list[tuple[str, str | None]]:
    """Expand files, folders (recursive, image suffixes) and globs into ``(path, error)`` pairs,
    in the order given; ``error`` says why an input yields no image (not found, empty folder)."""
    out: list[tuple[str, str | None]] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            out += [(str(p), None) for p in found] or [(text, "folder holds no image files")]
        elif path.is_file():
            out.append((text, None))
        elif glob.has_magic(text):
            found = sorted(p for p in glob.glob(text, recursive=True) if Path(p).is_file())
            out += [(p, None) for p in found] or [(text, "no file matches this pattern")]
        else:
            out.append((text, "not found"))
    return out


@dataclass
class Face:
    """One face to run: where it came from and its aligned crop."""

    path: str
    index: int
    detection: Detection | None
    crop: np.ndarray


def _read(path: str) -> Image.Image | str:
    try:
        return load_image(Path(path))
    except FileNotFoundError:
        return "not found"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"cannot read image ({type(err).__name__})"


def decode_image(value: str) -> Image.Image:
    """An image given as a path or as base64 (for the MLflow server), as RGB."""
    path = Path(value) if len(value) < 4096 else None
    if path is not None and path.is_file():
        return load_image(path)
    try:
        data = base64.b64decode(value, validate=True)
    except ValueError:
        raise ValueError("image is neither an existing file path nor base64-encoded image bytes") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"base64 data is not an image ({type(err).__name__})") from None


def training_geometry(meta: Mapping[str, Any]) -> dict[str, Any]:
    """How the model's training crops were cut (its checkpoint meta's ``geometry``); checkpoints
    written before it was recorded give what they recorded: scale and points, black fill."""
    geometry = dict(meta.get("geometry") or {})
    geometry.setdefault("scale", float(meta.get("template_scale", 1.0)))
    geometry.setdefault("template_points", meta.get("template_points"))
    geometry.setdefault("fill", "black")
    geometry.setdefault("crop", "resize" if geometry["template_points"] is not None else "template")
    geometry.setdefault("fit", "mtcnn")
    return geometry


class Predictor:
    """Detect, align and predict; ``rows`` yields one dict per face (or per failed input)."""

    def __init__(
        self,
        model: Model,
        *,
        min_probability: float = 0.9,
        min_face_size: int = 20,
        detect_max_side: int = 640,
        batch_size: int = 32,
        aligned: bool = False,
        fill: str | None = None,
        retry_rotated: bool = False,
        min_face: int = MIN_FACE,
        min_face_share: float = MIN_FACE_SHARE,
        keep_nested: bool = False,
    ) -> None:
        geometry = training_geometry(model.meta)
        self.model, self.batch_size, self.aligned = model, batch_size, aligned
        self.fill = fill or str(geometry["fill"])  # the training crops' fill unless the user chose one
        self.size = int(model.meta["input_size"])
        self.scale = float(geometry["scale"])
        self.points = geometry["template_points"]  # align.crop resize: the training crops' mean landmarks
        # align.fit: dlib: the training crops fitted dlib's own five points, so a new face does too
        self.shape5 = DlibShapePredictor() if geometry["fit"] == "dlib" else None
        self.detector = MTCNNDetector("cpu", min_face_size, min_probability, detect_max_side, retry_rotated)
        self.min_probability = min_probability
        if min_face < 0 or not 0 <= min_face_share < 1:
            raise ValueError(f"min_face must be >= 0 px and min_face_share in [0, 1), got {min_face}, {min_face_share}")
        self.min_face, self.min_face_share, self.keep_nested = min_face, min_face_share, keep_nested
        self.dropped: Counter[str] = Counter()  # detections left out, by reason, over every photo so far

    def faces(self, path: str, image: Image.Image) -> tuple[list[Face], str | None]:
        """The aligned faces of one image, or why there are none."""
        if self.aligned:  # as the align stage keeps a chip: its largest centred square, resized
            crop = resize_face(image, np.zeros((5, 2)), self.size).crop
            return [Face(path, 0, None, crop)], None
        found = [d for d in self.detector.detect_all([image])[0] if d.probability >= self.min_probability]
        if not found:
            return [], "no face found"
        found.sort(key=lambda d: -d.area)  # face 0 is the largest confident face
        found, dropped = keep_faces(found, image.size, self.min_face, self.min_face_share, self.keep_nested)
        self.dropped.update(dropped)
        if not found:
            return [], "no face found (" + ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in dropped.items()) + ")"
        return [Face(path, i, d, self._align(image, d)) for i, d in enumerate(found)], None

    def _align(self, image: Image.Image, face: Detection) -> np.ndarray:
        fit = self.shape5.fit(image, face.box, self.size) if self.shape5 is not None else None
        return align_face(image, face.landmarks, self.size, self.scale, self.fill, self.points, fit).crop

    def rows(self, images: Iterable[tuple[str, Image.Image | str]]) -> Iterator[dict[str, Any]]:
        """Rows for decoded images (or their read errors), in input order."""
        pending: list[Face] = []
        queue: list[tuple[str, list[Face] | str]] = []
        for path, image in images:
            if isinstance(image, str):
                queue.append((path, image))
            else:
                faces, reason = self.faces(path, image)
                queue.append((path, faces if faces else reason or "no face found"))
                pending += faces
            if len(pending) >= self.batch_size:
                yield from self._flush(queue, pending)
                queue, pending = [], []
        yield from self._flush(queue, pending)

    def _flush(self, queue: list[tuple[str, list[Face] | str]], faces: list[Face]) -> Iterator[dict[str, Any]]:
        preds: list[dict[str, Any]] = []
        for start in range(0, len(faces), self.batch_size):
            chunk = faces[start : start + self.batch_size]
            out = self.model.decode(np.stack([f.crop for f in chunk]))
            preds += [{k: v[i] for k, v in out.items()} for i in range(len(chunk))]
        by_face = iter(preds)
        for path, item in queue:
            if isinstance(item, str):
                yield {"path": path, "face": None, "status": _status(item), "reason": item, "faces_in_photo": 0,
                       "model": self.model.id}  # fmt: skip
                continue
            for face in item:
                yield self._row(face, next(by_face), len(item))

    def _row(self, face: Face, pred: dict[str, Any], faces: int) -> dict[str, Any]:
        row: dict[str, Any] = {"path": face.path, "face": face.index, "status": "ok", "reason": ""}
        row["faces_in_photo"] = faces
        row["model"] = self.model.id
        d = face.detection
        if d is not None:
            row["box"] = [round(float(v), 1) for v in d.box]
            row["box_w"], row["box_h"] = round(float(d.box[2] - d.box[0]), 1), round(float(d.box[3] - d.box[1]), 1)
            row["det_prob"] = round(d.probability, 4)
            row["landmarks"] = [[round(float(x), 1), round(float(y), 1)] for x, y in d.landmarks]
        meta = self.model.meta
        if "gender" in pred:
            p_female = float(torch.from_numpy(pred["gender"]).softmax(0)[1])
            row["gender"] = "female" if p_female >= 0.5 else "male"
            row["gender_prob"] = round(max(p_female, 1 - p_female), 4)
            row["p_female"] = round(p_female, 4)
        if "age" in pred:
            row["age"] = round(float(pred["age"]), 2)
            row["age_std"] = round(float(pred["age_std"]), 2) if "age_std" in pred else None
        if "age_group" in pred:
            edges = meta["group_edges"]
            bands = [f"<{edges[0]:g}", *(f"{a:g}-{b - 1:g}" for a, b in pairwise(edges)), f"{edges[-1]:g}+"]
            k = int(np.argmax(pred["age_group"]))
            row["age_group"], row["age_group_prob"] = bands[k], round(float(pred["age_group"][k]), 4)
        if "attributes" in pred:
            for name, p in zip(meta["attribute_names"], pred["attributes"], strict=True):
                row[f"attr_{name}"] = round(float(p), 4)
        return row


def _status(reason: str) -> str:
    return "no_face" if reason.startswith("no face found") else "error"


def read_ahead(paths: Sequence[tuple[str, str | None]], workers: int = 2) -> Iterator[tuple[str, Image.Image | str]]:
    """Decode images in threads ahead of detection (PIL frees the GIL), in input order."""
    with ThreadPoolExecutor(max(workers, 1)) as pool:
        window: list[tuple[str, Any]] = []
        for path, error in paths:
            window.append((path, error if error else pool.submit(_read, path)))
            if len(window) >= 16:
                path0, fut = window.pop(0)
                yield path0, fut if isinstance(fut, str) else fut.result()
        for path0, fut in window:
            yield path0, fut if isinstance(fut, str) else fut.result()


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row for CSV: box and landmarks as columns."""
    out = {k: v for k, v in row.items() if k not in ("box", "landmarks")}
    for i, name in enumerate(("box_x1", "box_y1", "box_x2", "box_y2")):
        out[name] = row["box"][i] if "box" in row else None
    for i in range(5):
        for j, axis in enumerate("xy"):
            out[f"lm{i}_{axis}"] = row["landmarks"][i][j] if "landmarks" in row else None
    return out


def draw(path: str, rows: Sequence[dict[str, Any]], out_dir: Path, number: int) -> Path | None:
    """An annotated copy of one photo: each face's box, landmarks and answers."""
    from PIL import ImageDraw

    faces = [r for r in rows if r["status"] == "ok" and "box" in r]
    image = _read(path)
    if isinstance(image, str):
        return None
    canvas = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 400))
    for r in faces:
        x1, y1, x2, y2 = r["box"]
        canvas.rectangle((x1, y1, x2, y2), outline=(255, 200, 0), width=width)
        for x, y in r["landmarks"]:
            canvas.ellipse((x - width, y - width, x + width, y + width), fill=(0, 255, 0))
        label = " ".join(
            str(v)
            for v in (
                r.get("gender", ""),
                f"{r['age']:.0f}y" if r.get("age") is not None else "",
                f"±{r['age_std']:.0f}" if r.get("age_std") is not None else "",
                r.get("age_group", ""),
            )
            if v
        )
        canvas.text((x1, max(0, y1 - 12 * width)), label, fill=(255, 200, 0))
    out = out_dir / f"{number:05d}_{Path(path).stem}.jpg"
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, quality=90)
    return out


def run(
    inputs: Sequence[str],
    model_spec: str,
    out: str | None,
    draw_dir: str | None,
    aligned: bool,
    batch_size: int,
    min_probability: float,
    detect_max_side: int,
    progress: bool = True,
    retry_rotated: bool = False,
    fill: str | None = None,
    min_face: int = MIN_FACE,
    min_face_share: float = MIN_FACE_SHARE,
    keep_nested: bool = False,
    dropped: Counter[str] | None = None,
) -> tuple[int, int, int]:
    """``faceattr predict``: write the rows; returns (faces, images without a face, unreadable).
    ``dropped``, where given, is updated with the detections left out, by reason."""
    import csv
    import sys

    from tqdm import tqdm

    model = load_model(model_spec)
    predictor = Predictor(
        model,
        min_probability=min_probability,
        detect_max_side=detect_max_side,
        batch_size=batch_size,
        aligned=aligned,
        retry_rotated=retry_rotated,
        fill=fill,
        min_face=min_face,
        min_face_share=min_face_share,
        keep_nested=keep_nested,
    )
    paths = find_images(inputs)
    stream = open(out, "w", newline="") if out else sys.stdout  # noqa: SIM115 (closed below)
    writer = None
    faces = no_face = failed = 0
    by_path: dict[str, list[dict[str, Any]]] = {}
    try:
        quiet = not progress or len(paths) < 2
        bar = tqdm(total=len(paths), unit="img", desc="predict", disable=quiet, file=sys.stderr)
        seen: set[str] = set()
        for row in predictor.rows(read_ahead(paths)):
            if row["path"] not in seen:
                seen.add(row["path"])
                bar.update(1)
            faces += row["status"] == "ok"
            no_face += row["status"] == "no_face"
            failed += row["status"] == "error"
            if out and out.endswith(".csv"):
                flat = flat_row(row)
                if writer is None:
                    columns = list(flat) + [c for c in _all_columns(model) if c not in flat]
                    writer = csv.DictWriter(stream, fieldnames=columns, extrasaction="ignore")
                    writer.writeheader()
                writer.writerow(flat)
            else:
                stream.write(json.dumps(row) + "\n")
            if draw_dir:
                by_path.setdefault(row["path"], []).append(row)
        bar.close()
    finally:
        if out:
            stream.close()
    if draw_dir:
        for number, (path, rows) in enumerate(by_path.items()):
            draw(path, rows, Path(draw_dir), number)
    if dropped is not None:
        dropped.update(predictor.dropped)
    return faces, no_face, failed


def _all_columns(model: Model) -> list[str]:
    meta = model.meta
    cols = ["faces_in_photo", "model", "box_w", "box_h", "det_prob"]
    cols += ["gender", "gender_prob", "p_female"] if "gender" in meta["tasks"] else []
    if "age" in meta["tasks"]:
        cols += ["age", "age_std"] + (["age_group", "age_group_prob"] if meta["age_head"] == "group" else [])
    return cols + [f"attr_{a}" for a in meta.get("attribute_names", [])]
