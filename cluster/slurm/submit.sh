#!/usr/bin/env bash
# The fine-tuning matrix on a SLURM cluster: one array task per run, then `dvc repro` to finish.
#
#   bash cluster/slurm/submit.sh [sbatch options for every job, e.g. --partition=gpu --account=lab]
#
# Run it on a login node, from the project's root, in a checkout on a filesystem every node mounts
# (the runs write their outputs into it), with the project installed (README, set-up) and, for a
# team, MLFLOW_TRACKING_URI pointing at the shared tracking server (docs/scale.md). Steps:
#   1. the stages before fine-tuning (download, align, split, pretrain_identity), as one job;
#   2. an array job, task I trains run I of `faceattr matrix` (cluster/slurm/run.sbatch);
#   3. after every task succeeded, `dvc repro` (cluster/slurm/finish.sbatch): finetune_multitask
#      finds every run finished for the same inputs and reuses it, then evaluate, report and export
#      run and dvc.lock records it all. Run it on the kind of node the runs trained on: a run's resume
#      key holds the precision it came to (bf16 on a GPU), so a CPU node would train them again.
# A task that fails or is preempted resumes from its resume state when resubmitted:
#   sbatch --array=I cluster/slurm/run.sbatch
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p logs/slurm
prepare=$(sbatch --parsable "$@" --job-name=faceattr-prepare --output=logs/slurm/%x-%j.out \
  --wrap "dvc repro pretrain_identity split")
n=$(faceattr matrix --count)
runs=$(sbatch --parsable "$@" --dependency="afterok:$prepare" --array="0-$((n - 1))" cluster/slurm/run.sbatch)
finish=$(sbatch --parsable "$@" --dependency="afterok:$runs" cluster/slurm/finish.sbatch)
echo "submitted: prepare $prepare, $n runs as array $runs, finish $finish (logs in logs/slurm/)"
