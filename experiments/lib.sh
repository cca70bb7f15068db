# Shared by the experiment scripts (source it): one `dvc exp run`, timed and recorded.
#
#   run_recorded DEST CMD [ARG ...]
#
# runs CMD from the committed params.yaml, then copies its aggregates (metrics/, reports/ where
# present, without figures drawn on faces, params.yaml, dvc.lock; without the outputs of stages
# it did not reach, which are the committed default's: experiments/stale_outputs.py) to DEST and writes DEST/RUN.txt:
# the command, commit, wall time, CPU and bf16, jobs and cores, the time it finished. params.yaml is restored afterwards. A failing
# CMD returns its status and leaves DEST as it was. The caller marks DEST done (`touch DEST/done`)
# once it has copied anything else it keeps, so a stopped script redoes an unmarked DEST.

machine_line() {  # the CPU model and whether it has native bf16, as every RUN.txt names them
  echo "$(lscpu | sed -n 's/^Model name: *//p'); bf16: $(grep -q -w avx512_bf16 /proc/cpuinfo && echo native || echo no)"
}

run_recorded() {
  local dest=$1 start wall status=0
  shift
  git checkout HEAD -- params.yaml             # each run starts from the committed params
  start=$(date +%s)
  "$@" || status=$?
  wall=$(( $(date +%s) - start ))
  if [ "$status" -ne 0 ]; then
    git checkout HEAD -- params.yaml
    return "$status"
  fi
  rm -rf "$dest" && mkdir -p "$dest"
  cp -r metrics params.yaml dvc.lock "$dest"/
  if [ -d reports ]; then
    cp -r reports "$dest"/
    # figures drawn on test faces (the attentional CNN's maps) are never published (the data's terms)
    find "$dest/reports" -name 'attention-*' -delete
    # DVC's .gitignore for its outputs (reports/figures) would keep the figures out of git here
    find "$dest/reports" -name .gitignore -delete
  fi
  # a stage the command did not reach left the committed default's outputs: not this run's
  local path
  python "$(dirname "${BASH_SOURCE[0]}")/stale_outputs.py" | while read -r path; do [ -z "$path" ] || rm -rf "${dest:?}/$path"; done
  [ -f "$dest/reports/report.md" ] || rm -rf "$dest/reports"
  {
    echo "command: $*"
    echo "commit: $(git rev-parse HEAD)"
    echo "wall_s: $wall"
    echo "cpu: $(machine_line)"
    echo "jobs: FACEATTR_JOBS=${FACEATTR_JOBS:-unset} ($(nproc) cores)"
    echo "finished: $(date -u +%FT%TZ)"
  } > "$dest/RUN.txt"
  git checkout HEAD -- params.yaml
}
