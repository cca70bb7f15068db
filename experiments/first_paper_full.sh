#!/usr/bin/env bash
# The first paper's Tables 1 and 2 on all of UTKFace (issue 24): every variant of
# presets/first_paper.yaml (15; the 3 ImageNet runs read "not run" without torchvision's weights),
# 3 seeds, on the default split of all 23,228 faces, instead of the 4,000-image subset of
# results/first_paper_cpu. Identity pretraining from the best identity source of the IResNet-18
# trunk these tables compare: LFW's 1,680 people, 16 epochs (the length transfer_scale's held-out
# verification chose). Fine-tuning as transfer_scale's UTKFace points (64-px ArcFace-template
# crops, width 16, 4 epochs), so its two gender+age+landmarks rows are that experiment's lfw1680
# arms run again. dlib's trunk, the best CPU recipe's, is another network and not in the tables.
# Run it in a clone of this repository beside ../shared, with the project installed, from the
# clone's root:
#
#   bash experiments/first_paper_full.sh        # hours on 2 cores: stop it any time, rerun to resume
#
# About 42 trainings of 5 to 8 minutes each on 2 cores: it spans sessions. A stopped run resumes
# where it was (DVC skips finished stages; the fine-tuning matrix reuses finished runs and resumes
# a killed one from checkpoints/, a persist output). When it finishes, its aggregates (metrics,
# report and its figures, params, dvc.lock, RUN.txt) are in $OUT (default results/first_paper_full).
set -euo pipefail
set -f  # the params' [lists] are words, never globs
source "$(dirname "$0")/lib.sh"

out=${OUT:-results/first_paper_full}
if [ -f "$out/done" ]; then
  echo "== $out: done, skipped"
  exit 0
fi
echo "== $out: $(date -u +%FT%TZ)"
# shellcheck disable=SC2046  # the presets are words
run_recorded "$out" dvc exp run -n first-paper-full $(faceattr preset lfw_identities) $(faceattr preset utkface) \
  $(faceattr preset first_paper) -S pretrain_identity.optim.epochs=16 -S evaluate.interval=seeds_and_clusters \
  ${EXTRA:-}
touch "$out/done"
