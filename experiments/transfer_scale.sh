#!/usr/bin/env bash
# How transfer grows with the identity set (issue 21): one `dvc exp run` per pretraining point, all
# fine-tuned the same way on the same images (the same split, the same `none` runs, paired on the
# same test items), 3 seeds each. Run it in a clone of this repository beside ../shared, with the
# project installed (README, set-up), from the clone's root:
#
#   bash experiments/transfer_scale.sh utkface      # gender + age + landmarks on all of UTKFace
#   bash experiments/transfer_scale.sh celeba       # CelebA's 40 attributes, official partition
#
# Each point's aggregates (metrics, report, pretraining curve, params, dvc.lock) are copied to
# $OUT/<target>/<point>/ (default results/transfer_scale/runs), its trunk to $TRUNKS/<point>.pt
# (outside the repository: a checkpoint made from the data, never committed) for the probes.
# A point whose folder holds `done` is skipped, so a stopped script resumes at the point it was
# in; inside a point, DVC skips finished stages and the fine-tuning matrix reuses finished runs
# (the `none` runs train once, in the first point, and are reused by every later one).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

target=${1:?usage: transfer_scale.sh utkface|celeba [point ...]}
shift
out=${OUT:-results/transfer_scale/runs}/$target
trunks=${TRUNKS:-../transfer_scale_trunks}
mkdir -p "$out" "$trunks"

case $target in
  utkface)
    finetune=( $(faceattr preset utkface) )
    tasks=gender+age+landmarks ;;
  celeba)
    finetune=( $(faceattr preset celeba) )          # official partition
    tasks=attributes ;;
  *) echo "transfer_scale.sh: unknown target '$target' (utkface | celeba)" >&2; exit 2 ;;
esac
# A claim about a method (pretraining on N people), so its intervals resample the seeds as well as
# the test clusters (evaluate.interval: seeds_and_clusters).
matrix=( -S 'finetune_multitask.seeds=[0,1,2]' -S evaluate.interval=seeds_and_clusters )

# The pretraining points: name, then the params that make it (after the target's preset: the dlib
# preset's 150-px chips must override the data presets' 64-px size). LFW at 16 epochs, the length
# chosen at every LFW point on the point's own held-out verification among 8, 16 and 30
# (experiments/transfer_scale_recipes.sh, results/transfer_scale/recipes), CelebA's 112 people with
# cpu_real's 30 epochs (its verification was still rising at 8). `dlib`: dlib's trunk
# (7,485 people, about 3 million faces) against the same network from scratch, its own pair of
# arms; at 150 px its network costs about 10 times IResNet-18 at 64 px, so on UTKFace it
# fine-tunes on the seeded 4,000-image subset (the same images for both of its arms), and
# pretrain_identity (synthetic faces, read by no dlib variant) trains for one epoch only.
point_params() {
  case $1 in
    dlib)
      local sub=""
      [ "$target" = utkface ] && sub="-S datasets.finetune.max_images=4000"
      echo "$(faceattr preset dlib) $sub -S pretrain_identity.optim.epochs=1" ;;
    lfw1680) echo "$(faceattr preset lfw_identities) -S pretrain_identity.optim.epochs=16" ;;
    lfw400) echo "$(faceattr preset lfw_identities) -S datasets.pretrain.max_identities=400 -S pretrain_identity.optim.epochs=16" ;;
    lfw100) echo "$(faceattr preset lfw_identities) -S datasets.pretrain.max_identities=100 -S pretrain_identity.optim.epochs=16" ;;
    celeba112) echo "$(faceattr preset celeba_identities) $(faceattr preset cpu_real)" ;;
    *) echo "transfer_scale.sh: unknown point '$1' (lfw1680 | lfw400 | lfw100 | celeba112 | dlib)" >&2; return 2 ;;
  esac
}

# The arms a point fine-tunes: its pretrained trunk and the same network from scratch.
point_matrix() {
  local backbone=face_resnet18 pretraining=identity
  [ "$1" = dlib ] && backbone=dlib_resnet pretraining=dlib
  echo "-S finetune_multitask.variants=[$backbone-$pretraining-$tasks,$backbone-none-$tasks]"
}

points=( "$@" )
if [ ${#points[@]} -eq 0 ]; then
  points=( lfw1680 lfw100 lfw400 celeba112 )
  # CelebA's 200 people are the CelebA target's own people: pretraining on some of them would take
  # their images out of fine-tuning (each person goes to one role), so that arm's `none` would train
  # on other images than every other arm's. The CelebA target has the LFW points only.
  [ "$target" = celeba ] && points=( lfw1680 lfw100 lfw400 )
fi
for point in "${points[@]}"; do
  if [ "$target" = celeba ] && [ "$point" = celeba112 ]; then
    echo "transfer_scale.sh: celeba112 pretrains on the CelebA target's own people; not a point of that target" >&2
    exit 2
  fi
done
for point in "${points[@]}"; do
  params=$(point_params "$point")
  if [ -f "$out/$point/done" ]; then
    echo "== $target/$point: done, skipped"
    continue
  fi
  echo "== $target/$point: $(date -u +%FT%TZ)"
  dest=$out/$point
  # shellcheck disable=SC2086  # the presets are words
  run_recorded "$dest" dvc exp run -n "ts-$target-$point" "${finetune[@]}" $params $(point_matrix "$point") "${matrix[@]}"
  cp plots/pretrain_identity.csv "$dest"/ 2>/dev/null || true
  cp models/pretrain_identity/trunk.pt "$trunks/$point.pt"
  touch "$dest/done"
done
