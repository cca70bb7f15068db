"""The ``faceattr`` command: conveniences around the pipeline (the stages themselves run via DVC).

faceattr ui [--port 5000] [--host 127.0.0.1]   browse the MLflow runs of this project
faceattr check-params [params.yaml]            parse every section; print the first problem
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence

from faceattr.config import SECTIONS, ConfigError, load_params, parse
from faceattr.tracking import tracking_uri


def _ui(args: argparse.Namespace) -> int:
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        tracking_uri(),
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    print(f"MLflow UI for {tracking_uri()} at http://{args.host}:{args.port} (Ctrl-C to stop)", file=sys.stderr)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def _check_params(args: argparse.Namespace) -> int:
    try:
        params = load_params(args.params)
        for name, cls in SECTIONS.items():
            if name not in params:
                raise ConfigError(f"params file '{args.params}' has no section '{name}'")
            parse(cls, params[name], name)
        from faceattr.variants import parse_variant

        for variant in params["finetune_multitask"].get("variants", []):
            parse_variant(variant)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.params}: all {len(SECTIONS)} sections parse")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="faceattr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    ui = sub.add_parser("ui", help="MLflow UI over this project's tracking store")
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=_ui)
    check = sub.add_parser("check-params", help="validate a params file")
    check.add_argument("params", nargs="?", default="params.yaml")
    check.set_defaults(func=_check_params)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
