"""Atomic file output: a killed stage never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def parse_yaml(text: str) -> Any:
    """YAML's safe subset, through libyaml's C parser where PyYAML has it (dvc.lock of the default
    pipeline: 0.12 s against 0.7 s in pure Python, paid by every stage that reads it)."""
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def write_json(data: Any, path: str | Path) -> None:
    """Write JSON (sorted keys, indented, trailing newline) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file with a message that names a missing file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' not found; run the stage that writes it first")
    return json.loads(path.read_text())


def write_rows_csv(rows: list[dict[str, Any]], path: str | Path, columns: tuple[str, ...] = ()) -> None:
    """Write a list of dicts (e.g. a per-epoch history) as CSV atomically.

    Columns are ``columns`` followed by the rows' other keys in first-seen order.
    """
    import csv

    names = list(columns)
    for row in rows:
        names += [k for k in row if k not in names]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
