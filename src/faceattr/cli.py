"""faceattr: conveniences around the pipeline (the stages themselves run via DVC: dvc repro).

faceattr ui [--port 5000] [--host 127.0.0.1]   browse the MLflow runs of this project
faceattr check-params [params.yaml]            parse every section; print the first problem
faceattr preset utkface                        `-S key=value` arguments for `dvc exp run`
faceattr protocol-summary RUN...               mean ± std over a multi-split protocol's runs (AgeDB's 5)
faceattr matrix [--count | --run I]            the fine-tuning runs of params; train run I (a cluster's array task)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from faceattr.config import SECTIONS, ConfigError, load_params, parse
from faceattr.data.faces import MIN_FACE, MIN_FACE_SHARE
from faceattr.tracking import tracking_uri


def project_root(start: Path | None = None) -> Path:
    """The folder holding dvc.yaml at or above ``start`` (the current folder), else ``start``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    return here


def runs_page(host: str, port: int, uri: str | None = None) -> str:
    """The UI's runs table of the fine-tuning experiment in faceattr's shared view (test metrics,
    seed, pretraining and tasks as columns, sorted by test gender accuracy); MLflow 3 otherwise
    opens its GenAI view, and shows no metric column."""
    base = f"http://{host}:{port}/#/experiments"
    try:
        from mlflow.tracking import MlflowClient

        from faceattr.tracking import EXPERIMENT

        exp = MlflowClient(uri or tracking_uri()).get_experiment_by_name(EXPERIMENT)
    except Exception:  # no store yet: the experiments list
        exp = None
    if exp is None:
        return f"{base}?workflowType=machine_learning"
    from faceattr.tracking import VIEW_KEY

    shared = f"viewStateShareKey={VIEW_KEY}&" if f"mlflow.sharedViewState.{VIEW_KEY}" in exp.tags else ""
    return f"{base}/{exp.experiment_id}/runs?{shared}workflowType=machine_learning"


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except Exception:
        return False


def _ui(args: argparse.Namespace) -> int:
    """Serve the MLflow UI; print its address once it answers; pass Ctrl-C and SIGTERM on to the
    server's whole process group (mlflow ui starts uvicorn workers and huey consumers), so that
    stopping `faceattr ui` stops all of them."""
    import signal
    import time

    from faceattr.tracking import absolute_uri

    uri = absolute_uri(tracking_uri(), project_root())
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    cmd += ["--host", args.host, "--port", str(args.port)]
    print(f"MLflow UI for {uri}: starting on {args.host}:{args.port} ...", file=sys.stderr)
    proc = subprocess.Popen(cmd, start_new_session=True)  # its own process group, signalled as one

    def stop(signum: int = signal.SIGTERM, frame: object = None) -> None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

    previous = signal.signal(signal.SIGTERM, lambda n, f: (stop(), sys.exit(143)))
    try:
        local = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        deadline = time.monotonic() + args.wait
        while proc.poll() is None and not _answers(f"http://{local}:{args.port}/health"):
            if time.monotonic() > deadline:
                print(f"error: the MLflow UI did not answer within {args.wait} s", file=sys.stderr)
                stop()
                return 1
            time.sleep(0.5)
        if proc.poll() is not None:
            print(f"error: mlflow ui exited ({proc.returncode}); is port {args.port} in use?", file=sys.stderr)
            return proc.returncode or 1
        print(f"MLflow UI: open {runs_page(args.host, args.port, uri)} (Ctrl-C to stop)", file=sys.stderr)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop()
        signal.signal(signal.SIGTERM, previous)


def _check_params(args: argparse.Namespace) -> int:
    try:
        params = load_params(args.params)
        parsed = {}
        for name, cls in SECTIONS.items():
            if name not in params:
                raise ConfigError(f"params file '{args.params}' has no section '{name}'")
            parsed[name] = parse(cls, params[name], name, complete=True)
        from faceattr.config import SOURCE_TASKS, check_same_trunk
        from faceattr.variants import parse_variant

        check_same_trunk(parsed["pretrain_identity"], parsed["finetune_multitask"])

        source = parsed["datasets"].finetune.source
        for variant in params["finetune_multitask"].get("variants", []):
            missing = [t for t in parse_variant(variant).tasks if t not in SOURCE_TASKS[source]]
            if missing:
                raise ConfigError(
                    f"variant '{variant}' trains {missing}, which datasets.finetune.source '{source}' has no labels "
                    f"for (it has {list(SOURCE_TASKS[source])})"
                )
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.params}: all {len(SECTIONS)} sections parse")
    return 0


def _override_value(value: object) -> str:
    """A value in DVC's (Hydra's) override grammar, without spaces: `$(faceattr preset X)` is split
    on whitespace and never unquoted by the shell. JSON, except that dictionary keys are bare
    (Hydra rejects quoted keys) and numbers print plainly (YAML's dump would add a ``...`` line)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_override_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    return json.dumps(value)


# Preset values that are local paths: printed resolved against the project, so that
# `dvc exp run --temp/--queue`, which runs in a copy of the workspace elsewhere, still finds them.
PATH_KEYS = (".uri", "split.file", ".imagenet_weights")


def _resolve(key: str, value: object, root: Path) -> object:
    if not isinstance(value, str) or not value or not key.endswith(PATH_KEYS) or "://" in value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (root / path).resolve())


def _preset(args: argparse.Namespace) -> int:
    """Print a preset's params as ``-S key=value`` arguments for ``dvc exp run``.

    Relative local paths (``*.uri``, ``split.file``) are printed absolute, resolved against the
    project folder that holds ``--dir``, so experiment copies (``--temp``, ``--queue``) find them.
    """

    import yaml

    path = Path(args.dir) / f"{args.name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in Path(args.dir).glob("*.yaml"))
        print(f"error: unknown preset '{args.name}'; choose from {names}", file=sys.stderr)
        return 1
    overrides = yaml.safe_load(path.read_text()) or {}
    parts = []
    root = Path(args.dir).resolve().parent
    for key, value in overrides.items():
        value = _resolve(key, value, root)
        text = value if isinstance(value, str) else _override_value(value)
        if any(c.isspace() for c in f"{key}{text}"):
            print(f"error: preset '{args.name}': '{key}' has whitespace, which $(...) would split", file=sys.stderr)
            return 1
        parts += ["-S", f"{key}={text}"]

    print(" ".join(parts))
    return 0


def _protocol_summary(args: argparse.Namespace) -> int:
    """Print (and optionally write) the mean over splits of each variant's test metrics."""
    from faceattr.protocol_summary import summarise_runs

    try:
        result = summarise_runs(args.runs)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"protocol {result['protocol']} ({result['protocol_file']}), splits {sorted(result['runs'].values(), key=str)}"
    )
    for variant, metrics in result["variants"].items():
        cells = ", ".join(
            f"{m} {e['mean']:.4g} ± {e['std']:.2g} ({e['splits']} splits)"
            for m, e in metrics.items()
            if m in args.metrics
        )
        print(f"  {variant}: {cells}")
    if args.out:
        from faceattr.io import write_json

        write_json(result, args.out)
    return 0


def _publish(args: argparse.Namespace) -> int:
    """Copy the aggregate results of a workspace (report, plot figures, metrics, curves) to a folder."""
    from faceattr.publish import publish

    try:
        written = publish(Path(args.workspace), Path(args.dest))
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files to {args.dest} (no crops, predictions, checkpoints or face figures)")
    return 0


def _predict(args: argparse.Namespace) -> int:
    """Predict every face in the given photos; non-zero exit when any input could not be read."""
    import faceattr

    faceattr.short_openmp_spin()  # torch is not loaded yet: MTCNN's many small operations wait less
    from collections import Counter

    from faceattr.predict import ModelError, run

    dropped: Counter[str] = Counter()
    try:
        faces, no_face, failed = run(
            args.paths,
            args.model,
            args.out,
            args.draw,
            args.aligned,
            args.batch_size,
            args.min_probability,
            args.detect_max_side,
            retry_rotated=args.retry_rotated,
            fill=args.fill,
            min_face=args.min_face,
            min_face_share=args.min_face_share,
            keep_nested=args.keep_nested,
            dropped=dropped,
        )
    except (ModelError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    left = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in sorted(dropped.items())) or "none"
    print(
        f"predict: {faces} faces; {no_face} images without a face; {failed} inputs unreadable; "
        f"detections left out: {left}",
        file=sys.stderr,
    )
    if failed:
        print(f"error: {failed} inputs could not be read (their rows say why)", file=sys.stderr)
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    """Write the ONNX file of a fine-tuned run (trunk and all heads, dynamic batch axis)."""
    from faceattr.export import export_onnx

    try:
        out = export_onnx(args.model, args.onnx)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out} (use it with: faceattr predict PHOTOS --model {out})")
    return 0


# `dvc exp show` lists every param of params.yaml (146) and every file dependency (60) beside the
# metrics; rich then squeezes 250 columns into the terminal and prints "…" in every cell. DVC has no
# setting for its default columns, so `faceattr compare` passes these: the headline metrics
# (metrics/headline.json) and the params that differ between the rows.
COMPARE_DROP = r"metrics/variants/|(data|src|stages|models|checkpoints|plots|predictions|bench|reports)/|paths\."
COMPARE_KEEP = r"best\.|test_"


def _compare(args: argparse.Namespace) -> int:
    """``dvc exp show`` with the headline metrics and the params that differ between the rows."""
    import shutil
    import subprocess

    dvc = shutil.which("dvc")
    if dvc is None:
        print("error: dvc is not on PATH (pip install -e . installs it)", file=sys.stderr)
        return 1
    cmd = [dvc, "exp", "show", "--no-pager", "--only-changed", "--drop", COMPARE_DROP, "--keep", COMPARE_KEEP]
    return subprocess.run([*cmd, *args.dvc_args], check=False).returncode


def stage_command(root: Path, stage: str) -> str:
    """A dvc.yaml stage's ``cmd`` with its ``${...}`` params filled in from params.yaml, as DVC runs it."""
    import re

    import yaml

    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    if stage not in stages:
        raise ConfigError(f"{root / 'dvc.yaml'} has no stage '{stage}'")
    params = load_params(root / "params.yaml")

    def value(match: re.Match[str]) -> str:
        node: object = params
        for key in match.group(1).split("."):
            if not isinstance(node, dict) or key not in node:
                raise ConfigError(f"dvc.yaml's {stage} command names ${{{match.group(1)}}}, which params.yaml lacks")
            node = node[key]
        return str(node)

    return re.sub(r"\$\{([\w.]+)\}", value, " ".join(str(stages[stage]["cmd"]).split()))


def _matrix(args: argparse.Namespace) -> int:
    """The fine-tuning matrix's runs, numbered; or one of them trained as dvc.yaml's stage would."""
    import shlex

    from faceattr.config import FinetuneConfig, load_section
    from faceattr.variants import parse_variant, run_name

    root = project_root()
    try:
        cfg = load_section(root / "params.yaml", "finetune_multitask", FinetuneConfig)
        runs = [run_name(parse_variant(v).name, s) for v in cfg.variants for s in cfg.seeds]
        command = stage_command(root, "finetune_multitask")
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.count:
        print(len(runs))
        return 0
    if args.run is None:
        for i, name in enumerate(runs):
            print(f"{i}\t{name}")
        return 0
    if not 0 <= args.run < len(runs):
        print(f"error: --run {args.run}: the matrix has {len(runs)} runs (0 to {len(runs) - 1})", file=sys.stderr)
        return 1
    argv = [*shlex.split(command), "--index", str(args.run)]
    if argv[0] == "python":  # the interpreter this faceattr runs in, as on the PATH of `dvc repro`
        argv[0] = sys.executable
    print(f"faceattr matrix: run {args.run} of {len(runs)}, {runs[args.run]}", file=sys.stderr, flush=True)
    return subprocess.run(argv, cwd=root, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="faceattr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    ui = sub.add_parser("ui", help="MLflow UI over this project's tracking store")
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the server to answer")
    ui.set_defaults(func=_ui)
    check = sub.add_parser("check-params", help="validate a params file")
    check.add_argument("params", nargs="?", default="params.yaml")
    check.set_defaults(func=_check_params)
    preset = sub.add_parser("preset", help="print a preset's params as `-S key=value` for `dvc exp run`")
    preset.add_argument("name", help="preset name, e.g. utkface (a file presets/<name>.yaml)")
    preset.add_argument("--dir", default="presets", help="folder of preset files (default: presets)")
    preset.set_defaults(func=_preset)
    summary = sub.add_parser("protocol-summary", help="mean ± std over the runs of a multi-split protocol")
    summary.add_argument("runs", nargs="+", help="DVC experiment names, git revisions or folders holding metrics/")
    summary.add_argument("--metrics", nargs="+", default=["age_mae", "age_cs5", "gender_acc"], help="metrics to print")
    summary.add_argument("--out", help="write the full result (per split too) as JSON")
    summary.set_defaults(func=_protocol_summary)
    pub = sub.add_parser("publish", help="copy a run's aggregate results (report, metrics, curves) to a folder")
    pub.add_argument("dest", help="results folder to write, e.g. results/first_paper_cpu")
    pub.add_argument("--workspace", default=".", help="project folder whose outputs to copy (default: .)")
    pub.set_defaults(func=_publish)
    pred = sub.add_parser("predict", help="faces in photos -> every head's answer, one row per face")
    pred.add_argument("paths", nargs="+", help="image files, folders (recursive) or globs")
    pred.add_argument(
        "--model", required=True, help="run folder (models/finetune/<run>), model.pt, models:/ URI, .onnx"
    )
    pred.add_argument("--out", help="write rows here: .csv, else JSON lines (default: JSON lines on stdout)")
    pred.add_argument("--draw", help="folder for annotated copies of the photos")
    pred.add_argument("--aligned", action="store_true", help="inputs are aligned crops already: skip detection")
    pred.add_argument("--batch-size", type=int, default=32, help="faces per network call (default 32)")
    pred.add_argument("--min-probability", type=float, default=0.9, help="MTCNN face probability to keep a face")
    pred.add_argument("--detect-max-side", type=int, default=640, help="detect on a copy at most this large (px)")
    pred.add_argument("--retry-rotated", action="store_true", help="no face: look again at 90/180/270 degrees")
    pred.add_argument(
        "--min-face",
        type=int,
        default=MIN_FACE,
        help=f"leave out faces whose box is narrower than this (px, default {MIN_FACE})",
    )
    pred.add_argument(
        "--min-face-share",
        type=float,
        default=MIN_FACE_SHARE,
        help=f"leave out faces narrower than this share of the photo's shorter side (default {MIN_FACE_SHARE})",
    )
    pred.add_argument(
        "--keep-nested", action="store_true", help="keep a box lying inside a larger face's box (default: left out)"
    )
    pred.add_argument(
        "--fill",
        choices=["black", "edge", "reflect"],
        default=None,
        help="crop pixels outside the photo (default: the fill the model's training crops were cut with, "
        "from its checkpoint)",
    )
    pred.set_defaults(func=_predict)
    exp = sub.add_parser("export", help="write a fine-tuned run as ONNX (trunk and all heads, dynamic batch)")
    exp.add_argument("model", help="run folder (models/finetune/<run>) or its model.pt")
    exp.add_argument("--onnx", required=True, help="ONNX file to write")
    exp.set_defaults(func=_export)
    mat = sub.add_parser(
        "matrix",
        help="list the fine-tuning runs of params (index and name), or train one: a cluster's array task",
    )
    mat.add_argument("--count", action="store_true", help="print the number of runs only")
    mat.add_argument("--run", type=int, help="train run RUN (0-based) with dvc.yaml's finetune_multitask command")
    mat.set_defaults(func=_matrix)
    cmp = sub.add_parser(
        "compare",
        help="experiments side by side: dvc exp show with the headline metrics and the params that differ",
    )
    cmp.set_defaults(func=_compare)
    cmp.epilog = "Any other argument is passed on to `dvc exp show` (e.g. -A for all commits, --md, --csv)."
    args, rest = p.parse_known_args(argv)
    if args.command != "compare" and rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    args.dvc_args = rest
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
