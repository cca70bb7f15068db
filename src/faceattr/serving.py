"""Fine-tuned networks as MLflow models: logged with their checkpoint and meta, served by
``mlflow models serve`` with the same rows as ``faceattr predict``.

The pyfunc takes a table with one column ``image`` (a file path on the server, or base64 image
bytes) and returns one row per face (or per input without one). A malformed request gets a 4xx
with a message; an image without a face gets its row with ``status`` ``no_face``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)
MODEL_NAME = "model"  # the logged model's name in its run (MLflow 3: models:/<model id>)
OUTPUT_COLUMNS = {  # name -> MLflow type of the rows the served model returns
    "input": "long",
    "face": "double",
    "status": "string",
    "reason": "string",
    "det_prob": "double",
    "box_x1": "double",
    "box_y1": "double",
    "box_x2": "double",
    "box_y2": "double",
    **{f"lm{i}_{a}": "double" for i in range(5) for a in "xy"},
    "gender": "string",
    "gender_prob": "double",
    "p_female": "double",
    "age": "double",
    "age_std": "double",
    "age_group": "string",
    "age_group_prob": "double",
}


def _python_model() -> Any:
    import mlflow.pyfunc

    class FaceAttrModel(mlflow.pyfunc.PythonModel):
        """Detect, align and predict, as ``faceattr predict`` does."""

        def load_context(self, context: Any) -> None:
            from faceattr.inference import load_model
            from faceattr.predict import Predictor

            self.predictor = Predictor(load_model(context.artifacts["checkpoint"]))

        def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            from faceattr.predict import decode_image, flat_row

            if not isinstance(model_input, pd.DataFrame) or "image" not in model_input.columns:
                raise MlflowException("send a table with a column 'image' (a path or base64)", INVALID_PARAMETER_VALUE)
            images = []
            for i, value in enumerate(model_input["image"].tolist()):
                if not isinstance(value, str) or not value:
                    raise MlflowException(f"row {i}: 'image' must be a path or base64 string", INVALID_PARAMETER_VALUE)
                try:
                    images.append((str(i), decode_image(value)))
                except (ValueError, OSError) as err:
                    raise MlflowException(f"row {i}: {err}", INVALID_PARAMETER_VALUE) from None
            rows = []
            for row in self.predictor.rows(images):
                flat = flat_row(row)
                flat["input"] = int(flat.pop("path"))
                rows.append(flat)
            return pd.DataFrame(rows)

    return FaceAttrModel()


def signature(meta: dict[str, Any]) -> Any:
    """Input: one string column ``image``; output: the prediction columns of this model's heads."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    outputs = [ColSpec(t, n) for n, t in OUTPUT_COLUMNS.items()]
    outputs += [ColSpec("double", f"attr_{a}") for a in meta.get("attribute_names", [])]
    return ModelSignature(inputs=Schema([ColSpec("string", "image")]), outputs=Schema(outputs))


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """Log a model without MLflow's per-model noise: its warning that a Python model is pickled
    (faceattr's model class is code in this package, loaded from the checkpoint it ships) and
    its artifact progress bars (two per model: 84 lines for the default's 42 models)."""
    import os

    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level, bars = pyfunc_log.level, os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    pyfunc_log.setLevel(logging.ERROR)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*CloudPickle.*")
            yield
    finally:
        pyfunc_log.setLevel(level)
        if bars is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bars


def log_model(run_id: str, model_dir: Path) -> str:
    """Log the run folder's checkpoint as an MLflow model of run ``run_id``; returns its URI."""
    import json

    import mlflow

    from faceattr import __version__
    from faceattr.tracking import store_uri

    meta = json.loads((model_dir / "meta.json").read_text())
    mlflow.set_tracking_uri(store_uri())
    with mlflow.start_run(run_id=run_id), quiet_logging():
        info = mlflow.pyfunc.log_model(
            name=model_name(model_dir.name),
            python_model=_python_model(),
            artifacts={"checkpoint": str(model_dir / "model.pt"), "meta": str(model_dir / "meta.json")},
            signature=signature(meta),
            pip_requirements=[f"faceattr=={__version__}"],  # served with --env-manager local
        )
    return info.model_uri


def model_name(run: str) -> str:
    """A logged model's name: its run's (``<variant>-s<seed>``), in the characters MLflow takes."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run) or MODEL_NAME


def register(model_uri: str, name: str, description: str = "") -> str:
    """Register the logged model ``model_uri`` under ``name``, the registered model and the new
    version described by ``description``; returns the new version."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from faceattr.tracking import store_uri

    mlflow.set_tracking_uri(store_uri())
    version = mlflow.register_model(model_uri, name)
    if description:
        client = MlflowClient(store_uri())
        client.update_registered_model(name, description=description)
        client.update_model_version(name, version.version, description=description)
    return str(version.version)
