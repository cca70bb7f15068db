#!/usr/bin/env bash
# All of UTKFace, and all 6,000 CelebA images (issue 24): faceattr's best CPU recipe, chosen on the
# validation split only.
# Run it in a clone of this repository beside ../shared, with the project installed (README,
# set-up), from the clone's root:
#
#   bash experiments/full_size.sh select [candidate ...]   # seed 0 of each candidate (default: all)
#   bash experiments/full_size.sh final CANDIDATE          # the chosen one, seeds 0, 1, 2, every stage
#   TARGET=celeba bash experiments/full_size.sh select     # the same for CelebA's 40 attributes
#
# `select` runs one `dvc exp run` per candidate up to `evaluate` (gender + DLDL age on all of
# UTKFace, its own aligned crop, the default split grouped by byte-identical images), seed 0, and
# keeps its validation metrics, test metrics and wall time in $OUT/select/<candidate>/. The rule,
# fixed before any candidate ran: the lowest `val_age_mae / 5.0 + (1 − val_gender_acc) / 0.06`,
# each metric divided by the goal it is held to (MAE 5.0 years, gender 94 %), among the
# candidates whose wall time is at most 60 minutes. Test metrics are recorded, never read by it.
# `final` reruns the chosen candidate with 3 seeds and every stage (evaluate, export, report) and
# copies its aggregates to $OUT/final/<candidate>/.
#
# TARGET=celeba: CelebA's 40 attributes on all 6,000 shared images (official partition: 4,560 /
# 780 / 660), every one of them fine-tuned on, since identity pretraining comes from LFW's 1,680
# people (16 epochs, the length transfer_scale's own held-out verification chose; one pretraining
# serves every candidate). Its rule: the lowest mean attribute error on validation among the
# candidates within 60 minutes. Its `final` trains the chosen recipe with and without identity
# pretraining (the third paper's question, paired by evaluate on the same test images), 3 seeds
# each. $OUT defaults to results/full_size_celeba.
#
# A candidate whose folder holds `done` is skipped, so a stopped script resumes at the candidate it
# was in; inside one, DVC skips finished stages and a killed fine-tuning resumes from its state
# (checkpoints/ is a persist output). $OUT defaults to results/full_size (aggregates only).
# $EXTRA: more `-S` params for every run, e.g. a smoke run on a seeded subset:
#   OUT=/tmp/fs EXTRA="-S datasets.finetune.max_images=300 -S finetune_multitask.optim.epochs=1" \
#     bash experiments/full_size.sh select iresnet64_e4
set -euo pipefail
set -f  # the params' [lists] are words, never globs
source "$(dirname "$0")/lib.sh"

mode=${1:?usage: [TARGET=utkface|celeba] full_size.sh select [candidate ...] | final CANDIDATE}
shift
target=${TARGET:-utkface}
case $target in
  utkface) out=${OUT:-results/full_size}; prefix=""; data=( $(faceattr preset utkface) ) ;;
  celeba) out=${OUT:-results/full_size_celeba}; prefix="celeba-"
    data=( $(faceattr preset lfw_identities) $(faceattr preset celeba) -S pretrain_identity.optim.epochs=16 ) ;;
  *) echo "full_size.sh: unknown TARGET '$target' (utkface | celeba)" >&2; exit 2 ;;
esac

# name: the params after the data preset. IResNet-18 at width 16 from scratch on UTKFace's own
# crop (`own_crop`; the synthetic identity pretraining trains one epoch, read by no variant), or
# dlib's trunk on its 150-px chips (`dlib`: dlib's template, heads at lr, trunk at 1 % of it).
candidate_params() {
  [ "$target" = celeba ] && { celeba_params "$1"; return; }
  local iresnet="$(faceattr preset own_crop) -S finetune_multitask.variants=[face_resnet18-none-gender+age-dldl] -S pretrain_identity.optim.epochs=1"
  local dlib="$(faceattr preset dlib) -S finetune_multitask.variants=[dlib_resnet-dlib-gender+age-dldl] -S pretrain_identity.optim.epochs=1"
  case $1 in
    iresnet64_e4) echo "$iresnet -S finetune_multitask.optim.epochs=4" ;;
    iresnet64_e24) echo "$iresnet -S finetune_multitask.optim.epochs=24" ;;
    iresnet64_e24_ema_flip) echo "$iresnet -S finetune_multitask.optim.epochs=24 -S finetune_multitask.ema=0.999 -S finetune_multitask.tta=flip" ;;
    iresnet96_e12) echo "$iresnet -S align.size=96 -S finetune_multitask.optim.epochs=12" ;;
    dlib_e4) echo "$dlib -S finetune_multitask.optim.epochs=4" ;;
    dlib_e4_flip) echo "$dlib -S finetune_multitask.optim.epochs=4 -S finetune_multitask.tta=flip" ;;
    dlib_e8_ema_flip) echo "$dlib -S finetune_multitask.optim.epochs=8 -S finetune_multitask.ema=0.999 -S finetune_multitask.tta=flip" ;;
    # the same, its chips cut from dlib's own five points (align.fit: dlib), as dlib cut its training chips
    dlib_fit_e8_ema_flip) echo "$dlib -S align.fit=dlib -S finetune_multitask.optim.epochs=8 -S finetune_multitask.ema=0.999 -S finetune_multitask.tta=flip" ;;
    *) echo "full_size.sh: unknown candidate '$1' (${CANDIDATES[*]})" >&2; return 2 ;;
  esac
}
# CelebA: IResNet-18 at width 16 on the ArcFace template's 64-px crops, pretrained on LFW's people
# (`lfw1680`: transfer_scale's CelebA point, 4 epochs, then longer with EMA and flip TTA) or from
# scratch (`none`, where a longer schedule may close the gap).
celeba_params() {
  local lfw="-S finetune_multitask.variants=[face_resnet18-identity-attributes]"
  local none="-S finetune_multitask.variants=[face_resnet18-none-attributes]"
  local long="-S finetune_multitask.ema=0.999 -S finetune_multitask.tta=flip"
  case $1 in
    lfw1680_e4) echo "$lfw -S finetune_multitask.optim.epochs=4" ;;
    lfw1680_e12_ema_flip) echo "$lfw -S finetune_multitask.optim.epochs=12 $long" ;;
    lfw1680_e24_ema_flip) echo "$lfw -S finetune_multitask.optim.epochs=24 $long" ;;
    none_e24_ema_flip) echo "$none -S finetune_multitask.optim.epochs=24 $long" ;;
    *) echo "full_size.sh: unknown candidate '$1' (${CANDIDATES[*]})" >&2; return 2 ;;
  esac
}
case $target in
  utkface) CANDIDATES=( iresnet64_e4 dlib_e4 dlib_e4_flip iresnet64_e24 iresnet64_e24_ema_flip iresnet96_e12 dlib_e8_ema_flip
    dlib_fit_e8_ema_flip ) ;;
  celeba) CANDIDATES=( lfw1680_e4 lfw1680_e12_ema_flip lfw1680_e24_ema_flip none_e24_ema_flip ) ;;
esac

run_one() {  # run_one DEST NAME ARGS STAGE: ARGS, -S words after the candidate's; STAGE, a dvc target or ""
  local dest=$1 name=$2 args=$3 stage=$4 params
  params=$(candidate_params "$name")
  if [ -f "$dest/done" ]; then
    echo "== $dest: done, skipped"
    return
  fi
  echo "== $dest: $(date -u +%FT%TZ)"
  # shellcheck disable=SC2086  # the presets are words
  run_recorded "$dest" dvc exp run -n "fs-${prefix}$(basename "$(dirname "$dest")")-$name" ${data[*]} $params \
    $args ${EXTRA:-} $stage
  touch "$dest/done"
}

case $mode in
  select)
    names=( "$@" ); [ ${#names[@]} -gt 0 ] || names=( "${CANDIDATES[@]}" )
    for name in "${names[@]}"; do candidate_params "$name" > /dev/null; done   # fail before any run
    for name in "${names[@]}"; do run_one "$out/select/$name" "$name" "-S finetune_multitask.seeds=[0]" evaluate; done
    python experiments/full_size_report.py --out "$out" --target "$target" --candidates "${CANDIDATES[@]}" ;;
  final)
    name=${1:?usage: full_size.sh final CANDIDATE}
    candidate_params "$name" > /dev/null
    args="-S finetune_multitask.seeds=[0,1,2] -S evaluate.interval=seeds_and_clusters"
    if [ "$target" = celeba ]; then
      # the third paper's question at full size: the chosen recipe with and without identity
      # pretraining, paired on the same test images (the chosen arm first: the report's row)
      case $name in
        none_*) arms=face_resnet18-none-attributes,face_resnet18-identity-attributes ;;
        *) arms=face_resnet18-identity-attributes,face_resnet18-none-attributes ;;
      esac
      args="$args -S finetune_multitask.variants=[$arms]"
    fi
    run_one "$out/final/$name" "$name" "$args" ""
    python experiments/full_size_report.py --out "$out" --target "$target" --candidates "${CANDIDATES[@]}" ;;
  *) echo "full_size.sh: unknown mode '$mode' (select | final)" >&2; exit 2 ;;
esac
