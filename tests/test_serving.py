"""The registered model served by MLflow on 127.0.0.1: real requests, the same rows as predict."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from faceattr import tracking
from faceattr.serving import log_model, register

from .conftest import TINY_VARIANTS

pytest.importorskip("mlflow")
pytest.importorskip("facenet_pytorch")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, payload: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_mlflow_serves_the_registered_model_on_localhost(pipeline, tmp_path, monkeypatch) -> None:
    from matplotlib import cbook

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("FACEATTR_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    with tracking.tracked_run("finetune_multitask", {}, variant="served-s0") as run:
        pass
    model_uri = log_model(run.run_id, pipeline["models"] / "finetune" / f"{TINY_VARIANTS[0]}-s0")
    version = register(model_uri, "faceattr-served")
    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        photo = fh.read()
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/faceattr-served/{version}"]
    server = subprocess.Popen(
        [*cmd, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):  # the server imports torch and loads the model
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
        b64 = base64.b64encode(photo).decode()
        code, body = _post(f"{url}/invocations", {"dataframe_records": [{"image": b64}]})
        assert code == 200, body
        (row,) = body["predictions"]
        assert row["status"] == "ok" and row["face"] == 0 and row["det_prob"] > 0.9
        assert row["gender"] in ("female", "male") and row["age"] > 0 and 200 < row["lm0_x"] < 240
        code, body = _post(f"{url}/invocations", {"dataframe_records": [{"image": "no such file, nor base64"}]})
        assert 400 <= code < 500 and "neither an existing file path nor base64" in body["message"]
        code, body = _post(f"{url}/invocations", {"dataframe_records": [{"picture": b64}]})
        assert 400 <= code < 500
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_logging_a_model_prints_no_pickle_warning_and_no_progress_bars(pipeline, tmp_path, monkeypatch, capfd, caplog):
    """evaluate logs 42 models: each printed MLflow's CloudPickle warning and two artifact progress
    bars (126 lines of noise); both are silenced around faceattr's own model class."""
    monkeypatch.setenv("FACEATTR_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    with tracking.tracked_run("finetune_multitask", {}, variant="quiet-s0") as run:
        pass
    capfd.readouterr()
    with caplog.at_level("WARNING"):
        uri = log_model(run.run_id, pipeline["models"] / "finetune" / f"{TINY_VARIANTS[0]}-s0")
    out = capfd.readouterr()
    assert uri.startswith("models:/")
    assert "Downloading artifacts" not in out.err + out.out
    assert not any("CloudPickle" in r.getMessage() for r in caplog.records)
    assert "CloudPickle" not in out.err
