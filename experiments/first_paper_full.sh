#!/usr/bin/env bash
# The first paper's Tables 1 and 2 on all of UTKFace (issue 24): the tables' 9 variants of
# presets/first_paper.yaml (Table 1's four arms, the ImageNet one "not run" without torchvision's
# weights; Table 2's task subsets), 3 seeds, without the preset's data-efficiency fractions (-frac*,
# another question, kept at subset size in results/first_paper_cpu; TABLES_ONLY=0 runs them too),
# on the default split of all 23,228 faces, instead of the 4,000-image subset of first_paper_cpu. Identity pretraining from the best identity source of the IResNet-18
# trunk these tables compare: LFW's 1,680 people, 16 epochs (the length transfer_scale's held-out
# verification chose). Fine-tuning as transfer_scale's UTKFace points (64-px ArcFace-template
# crops, width 16, 4 epochs), so its two gender+age+landmarks rows are that experiment's lfw1680
# arms run again. dlib's trunk, the best CPU recipe's, is another network and not in the tables.
# Run it in a clone of this repository beside ../shared, with the project installed, from the
# clone's root:
#
#   bash experiments/first_paper_full.sh        # hours on 2 cores: stop it any time, rerun to resume
#
# 24 trainings of about 12 minutes each (3 min an epoch on 2 AMD EPYC cores, bf16), after 15 min
# of alignment and 27 of pretraining: about 5.5 hours (42 trainings with TABLES_ONLY=0); on 2 Intel
# Xeon cores with bf16, 3 minutes a training and 100 minutes in all (results/first_paper_full). SEEDS
# (default 0,1,2) and TABLES (default "1 2"; Table 1 is identity against none, the ResNet-18 rows
# included; Table 2 the identity trunk's task subsets) cut it to what one 3-hour session runs:
# Table 2 at one seed, 6 trainings, about 1.7 hours in all:
#
#   OUT=results/first_paper_full_table2_seed0 SEEDS=0 TABLES=2 bash experiments/first_paper_full.sh
#
# A stopped run resumes where it was (DVC skips finished stages; the fine-tuning matrix reuses finished runs and resumes
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
tables=()
if [ "${TABLES_ONLY:-1}" = 1 ]; then
  v=face_resnet18-identity-gender+age+landmarks
  case " ${TABLES:-1 2} " in *" 1 "*)
    v=$v,face_resnet18-none-gender+age+landmarks,resnet18-imagenet-gender+age+landmarks
    v=$v,resnet18-none-gender+age+landmarks ;;
  esac
  case " ${TABLES:-1 2} " in *" 2 "*)
    v=$v,face_resnet18-identity-gender,face_resnet18-identity-gender+landmarks,face_resnet18-identity-age
    v=$v,face_resnet18-identity-age+landmarks,face_resnet18-identity-gender+age ;;
  esac
  tables=(-S "finetune_multitask.variants=[$v]")
fi
[ -z "${SEEDS:-}" ] || tables+=(-S "finetune_multitask.seeds=[$SEEDS]")
# shellcheck disable=SC2046  # the presets are words
run_recorded "$out" dvc exp run -n first-paper-full $(faceattr preset lfw_identities) $(faceattr preset utkface) \
  $(faceattr preset first_paper) -S pretrain_identity.optim.epochs=16 -S evaluate.interval=seeds_and_clusters \
  "${tables[@]}" ${EXTRA:-}
touch "$out/done"
