#!/usr/bin/env bash
# Issue 21: each LFW point's pretraining recipe (the epochs of its cosine schedule) against the
# point's own held-out verification, never the fine-tuning labels. Candidates 16 and 30 epochs
# beside the 8 the point ran; the crops and split are the point's own, checked out of the DVC
# cache of the clone that ran experiments/transfer_scale.sh.
#
#   bash experiments/transfer_scale_recipes.sh RUNS CACHE [point ...]
#     RUNS:  that clone's results/transfer_scale/runs/<target> (each point's dvc.lock, params, metrics)
#     CACHE: that clone's .dvc/cache
# Run it from a clone of this repository (its data/ is overwritten); results go to
# results/transfer_scale/recipes/<point>_e<epochs>.{json,csv}. A candidate already there is skipped.
set -euo pipefail
runs=${1:?usage: transfer_scale_recipes.sh RUNS CACHE [point ...]}; cache=${2:?CACHE}; shift 2
points=( "$@" ); [ ${#points[@]} -gt 0 ] || points=( lfw100 lfw400 lfw1680 )
out=results/transfer_scale/recipes; work=${TMPDIR:-/tmp}/faceattr_recipes
mkdir -p "$out" "$work/raw"
dvc cache dir --local "$cache"
for point in "${points[@]}"; do
  cp "$runs/$point/dvc.lock" "$runs/$point/params.yaml" .
  dvc checkout -q data/aligned/pretrain data/splits
  cp "$runs/$point/pretrain_identity.csv" "$out/${point}_e8.csv"
  cp "$runs/$point/metrics/pretrain_identity.json" "$out/${point}_e8.json"
  for epochs in 16 30; do
    tag=${point}_e$epochs
    [ -f "$out/$tag.json" ] && continue
    python - "$epochs" <<'PY'
import sys, yaml
p = yaml.safe_load(open("params.yaml"))
p["pretrain_identity"]["optim"]["epochs"] = int(sys.argv[1])
yaml.safe_dump(p, open("params_sweep.yaml", "w"), sort_keys=False)
PY
    start=$(date +%s)
    python stages/pretrain_identity.py --params params_sweep.yaml --store data/aligned/pretrain \
      --split data/splits/pretrain.csv --raw "$work/raw" --out "$work/$tag/trunk.pt" \
      --resume "$work/$tag/resume.pt" --metrics "$work/$tag/metrics.json" --curve "$out/$tag.csv"
    cp "$work/$tag/metrics.json" "$out/$tag.json"
    echo "$tag: $(( $(date +%s) - start )) s; $(lscpu | sed -n 's/^Model name: *//p'); FACEATTR_JOBS=${FACEATTR_JOBS:-unset}" >> "$out/RUN.txt"
  done
done
git checkout -q -- params.yaml dvc.lock
