#!/usr/bin/env bash
# Issue 13's GPU checks in one call on a lent GPU machine (../shared/GPU.md): the training-step
# and alignment benchmarks, then the default pipeline and one real-data preset, each stage as its
# own process in dvc.yaml's order (bench/stage_commands.py; no DVC or MLflow there, tracking off,
# `report` left out: it needs vl-convert).
#
# Prepare here (ignored folders, carried: `carry: [".whl", ".gpu"]`):
#   .whl/  facenet_pytorch-2.5.3-py3-none-any.whl (pip download --no-deps ... --python-version 3.12)
#   .gpu/celeba/       the files of ../shared/datasets/celeba (checked against its SHA256SUMS there)
#   .gpu/utk512.tar.gz the first 512 photos of ../shared/datasets/utkface/UTKFace.tar.gz, in order
#                      (bench_align.py's benchmark set)
# Then: bash bench/gpu_check.sh   (writes logs, metrics and profiles under $OUT)
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}; W=/tmp/gpu_check_work; rm -rf "$W"; mkdir -p "$OUT" "$W"
# Only 8 files come back from $OUT: everything goes to $W, packed into $OUT/gpu_check.tgz after
# each part (so a run stopped at its limit still brings back what it finished).
pack() { tar czf "$OUT/gpu_check.tgz.part" -C "$W" . && mv "$OUT/gpu_check.tgz.part" "$OUT/gpu_check.tgz"; }
PARTS=${GPU_CHECK_PARTS:-bench default third}   # a rerun can name fewer; 'paper' is the GPU recipe
secs() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
export PYTHONUNBUFFERED=1 FACEATTR_TRACKING=off
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
root=$PWD; top=$(dirname "$root"); shared=$top/shared
mkdir -p "$shared/datasets/utkface" "$shared/datasets/celeba"
cp .gpu/celeba/* "$shared/datasets/celeba/" && cp .gpu/utk512.tar.gz "$shared/datasets/utkface/UTKFace.tar.gz" || exit 1
(cd "$shared/datasets/celeba" && sha256sum -c --quiet SHA256SUMS) || { echo "carried CelebA files do not match SHA256SUMS"; exit 1; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision; print('python', sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())"
  echo "cpus $(nproc)"; } | tee "$W/machine.txt"

if [[ " $PARTS " == *" bench "* ]]; then
echo "== benchmarks"
timeout 120 python3 bench/bench_train_step.py --device cuda 2>&1 | tee "$W/bench_train_step.log"
timeout 150 python3 bench/bench_train_step.py --device cuda --size 112 --width 64 --n 4096 2>&1 | tee -a "$W/bench_train_step.log"
timeout 200 python3 bench/bench_align.py --device cuda 2>&1 | tee "$W/bench_align.log"; pack
fi

# pipeline NAME PRESET... : a copy of the project beside ../shared, params.yaml with the presets
# applied in order (then "key=yaml" overrides), every stage timed, GPU memory sampled.
pipeline() {
  local name=$1; shift
  local dir=$top/gpu_$name
  rm -rf "$dir" && mkdir -p "$dir" && cp -r "$root"/{src,stages,bench,presets,params.yaml,dvc.yaml} "$dir"/ || return 1
  (cd "$dir" && python3 - "$@" <<'PY'
import sys, yaml
from pathlib import Path
params = yaml.safe_load(Path("params.yaml").read_text())
def put(key, value):
    *parents, last = key.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[last] = value
for arg in sys.argv[1:]:
    if "=" in arg:
        key, value = arg.split("=", 1)
        put(key, yaml.safe_load(value))
    else:
        for key, value in (yaml.safe_load(Path(f"presets/{arg}.yaml").read_text()) or {}).items():
            put(key, value)
Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
PY
  ) || return 1
  cp "$dir/params.yaml" "$W/params_$name.yaml"
  nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits -lms 250 > "$W/smi_$name.csv" &
  local smi=$! start=$EPOCHREALTIME failed=0
  export FACEATTR_PROFILE=$W/profile_$name.jsonl
  while IFS=$'\t' read -r stage cmd; do
    local t0=$EPOCHREALTIME
    # STAGE_TIMEOUT (s; 0: none) ends a stage with SIGINT first, so the part still packs its results
    (cd "$dir" && eval "timeout -s INT -k 20 ${STAGE_TIMEOUT:-0} python3 ${cmd#python }") > "$W/log_$name.txt.part" 2>&1
    local rc=$?; cat "$W/log_$name.txt.part" >> "$W/log_$name.txt"
    printf '%s\t%s\t%s\t%s\n' "$name" "$stage" "$(secs "$t0")" "$rc" | tee -a "$W/stages.tsv"
    [ $rc -eq 0 ] || { tail -20 "$W/log_$name.txt.part"; failed=1; break; }
  done < <(cd "$dir" && python3 bench/stage_commands.py --skip report ${SKIP_STAGES:-})
  rm -f "$W/log_$name.txt.part"; unset FACEATTR_PROFILE
  kill $smi
  printf '%s\tALL\t%s\t%s\n' "$name" "$(secs "$start")" "$failed" | tee -a "$W/stages.tsv"
  (cd "$dir" && tar czf "$W/metrics_$name.tgz" metrics plots); pack
}

if [[ " $PARTS " == *" default "* ]]; then
  echo "== the default pipeline (embedded synthetic data, params.yaml as it is)"
  pipeline default
fi
[[ " $PARTS " == *" third "* ]] && echo "== third paper at CPU size, as results/third_paper_cpu/RUN.md ran it on the CPU" && pipeline third celeba_identities celeba third_paper cpu_real cpu_fp32 \
  'finetune_multitask.variants=[face_resnet18-identity-attributes,face_resnet18-none-attributes]'
if [[ " $PARTS " == *" paper "* ]]; then
  # The first paper's training recipe (presets/paper_recipe.yaml: 112 px, width 64, 512-d, 200
  # epochs, bf16 on CUDA) on the third paper's CelebA attribute question, one run (all a
  # 15-minute loan holds); identity pretraining sized as on the CPU (cpu_real: 30 epochs).
  echo "== the paper recipe on CelebA's attributes: identity-pretrained, seed 0"
  SKIP_STAGES=export pipeline paper celeba_identities celeba third_paper cpu_real paper_recipe \
    'finetune_multitask.variants=[face_resnet18-identity-attributes]' 'finetune_multitask.seeds=[0]'
fi
echo "== summary"; cat "$W/machine.txt"; grep -h -E "^  [a-z]|efficiency|GPU max" "$W"/bench_*.log 2>/dev/null; cat "$W/stages.tsv" 2>/dev/null; pack
