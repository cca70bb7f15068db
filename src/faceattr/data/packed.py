"""The packed aligned-face store: one memory-mappable ``faces.npy`` plus ``labels.csv``.

``faces.npy`` is a plain NumPy array of uint8 crops (N, size, size, 3, RGB); row ``i`` of
``labels.csv`` describes crop ``i`` (the manifest columns with landmarks in crop coordinates).
Training reads it with ``np.load(mmap_mode="r")``: no JPEG is decoded after the align stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from faceattr.data import manifest
from faceattr.io import atomic_path

FACES = "faces.npy"
LABELS = "labels.csv"
GEOMETRY = "geometry.json"  # crop size, template scale, border fill and crop kind the crops were made with


class StoreWriter:
    """Fills ``faces.npy`` row by row through a memory map, renamed into place on ``close``."""

    def __init__(
        self,
        directory: str | Path,
        capacity: int,
        size: int,
        scale: float = 1.0,
        fill: str = "black",
        crop: str = "template",
    ) -> None:
        self.directory = Path(directory)
        # crop "template" (ArcFace's at scale) or "resize" (with the crops' mean landmarks as
        # "template_points", in units of the crop side: what a new photo is aligned to)
        self.geometry: dict[str, object] = {"size": size, "scale": scale, "fill": fill, "crop": crop}
        self.directory.mkdir(parents=True, exist_ok=True)
        self._final = self.directory / FACES
        self._tmp = self.directory / f".{FACES}.partial"
        self._faces = np.lib.format.open_memmap(self._tmp, "w+", np.uint8, (max(capacity, 1), size, size, 3))
        self.count = 0

    def add(self, crop: np.ndarray) -> int:
        """Append one crop and return its row index."""
        self._faces[self.count] = crop
        self.count += 1
        return self.count - 1

    def close(self, labels: pd.DataFrame) -> None:
        """Truncate to the rows written and publish faces and labels atomically."""
        if len(labels) != self.count:
            raise ValueError(f"{len(labels)} label rows for {self.count} crops")
        size = self._faces.shape[1]
        self._faces.flush()
        data = self._faces[: self.count]
        with atomic_path(self._final) as tmp:
            out = np.lib.format.open_memmap(tmp, "w+", np.uint8, (self.count, size, size, 3))
            out[:] = data
            out.flush()
            del out
        del self._faces, data
        self._tmp.unlink(missing_ok=True)
        manifest.write(labels, self.directory / LABELS)
        with atomic_path(self.directory / GEOMETRY) as tmp:
            tmp.write_text(json.dumps(self.geometry, indent=2) + "\n")


def read_geometry(directory: str | Path) -> dict[str, object]:
    """The crop geometry of a store (``size``, ``scale``, ``fill``); a store without the file is
    the plain ArcFace template with black fill."""
    path = Path(directory) / GEOMETRY
    if not path.is_file():
        return {"scale": 1.0, "fill": "black"}
    return json.loads(path.read_text())


def read_store(directory: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Open a store: (memory-mapped faces, validated labels)."""
    directory = Path(directory)
    faces_path = directory / FACES
    if not faces_path.is_file():
        raise FileNotFoundError(f"no aligned faces at '{faces_path}'; run the align stage first")
    faces = np.load(faces_path, mmap_mode="r")
    labels = manifest.read(directory / LABELS)
    if len(labels) != len(faces):
        raise ValueError(f"'{directory}': {len(faces)} faces but {len(labels)} label rows")
    return faces, labels
