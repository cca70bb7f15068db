"""The pipeline's stage commands in `dvc.yaml` order, with `${paths.*}` and `${item}` filled in.

    python bench/stage_commands.py [--skip report] [--params params.yaml] [--dvc-yaml dvc.yaml]

For machines without DVC (a lent GPU machine: `bench/gpu_check.sh`), so the same stages run there
in the same order, each as its own process, as `dvc repro --force` would run them. Prints one
command per line.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import yaml


def commands(dvc_yaml: Path, params: Path) -> list[tuple[str, str]]:
    """(stage name, command) for every stage, foreach items expanded, in the file's order."""
    paths = yaml.safe_load(params.read_text())["paths"]
    out = []
    for name, stage in yaml.safe_load(dvc_yaml.read_text())["stages"].items():
        if "foreach" in stage:
            items = [(f"{name}@{item}", stage["do"], item) for item in stage["foreach"]]
        else:
            items = [(name, stage, None)]
        for full, body, item in items:
            cmd = " ".join(body["cmd"].split())
            if item is not None:
                cmd = cmd.replace("${item}", str(item))
            cmd = re.sub(r"\$\{paths\.(\w+)\}", lambda m: str(paths[m.group(1)]), cmd)
            if "${" in cmd:
                raise SystemExit(f"{dvc_yaml}: stage {full} uses a variable this script cannot fill: {cmd}")
            out.append((full, cmd))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    p.add_argument("--skip", nargs="*", default=[], help="stage names to leave out (e.g. report)")
    args = p.parse_args()
    for name, cmd in commands(args.dvc_yaml, args.params):
        if name.split("@")[0] not in args.skip:
            print(f"{name}\t{cmd}")


if __name__ == "__main__":
    main()
