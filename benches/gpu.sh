#!/usr/bin/env bash
# Runs on the CUDA machine, from the project root, after the bundle steps in benches/README.md
# (MLX for CUDA assembled by .gpu/on-device.sh, tokenizers unpacked from /tmp/keep).
#
#   benches/gpu.sh bench CASES PROMPT_LENS PAIRS [compare.py options...]
#       liblmx against mlx-lm (benches/compare.py); results in $OUT/bench-*.jsonl and .md
#   benches/gpu.sh exits N CASE
#       N fresh `lmx generate` processes on one model; counts the ones that fail or abort
#   benches/gpu.sh ops [ops_host_cost.py options]
#       host cost of single MLX ops in a pipelined loop
#   benches/gpu.sh lmx CASE LEN [KEY=VALUE...]
#       one lmx-bench process (prompt of LEN tokens) with extra environment
#   benches/gpu.sh classify CASE BATCHES [classify.py options...]
#       sentences per second of liblmx's classify and of mlx-lm's padded batches
#
# CASE is SHAPE:DTYPE:BITS as in benches/compare.py; model folders are made in /tmp/models.
set -uo pipefail
cd "$(dirname "$0")/.."
. .gpu/on-device.sh || exit 1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/models
if [ ! -d /tmp/tok ]; then
  mkdir -p /tmp/tok && tar -C /tmp/tok -xJf /tmp/keep/tok.tar.xz || exit 1
fi
export MLX_PTX_CACHE_DIR=${MLX_PTX_CACHE_DIR:-/tmp/mlx-ptx}

model_dir() {
  local shape dtype bits
  IFS=: read -r shape dtype bits <<<"$1"
  python3 benches/models.py model "$shape" "$dtype" "$bits" /tmp/tok /tmp/models | tail -1
}

cmd=$1
shift
case "$cmd" in
  bench)
    cases=$1 lens=$2 pairs=$3
    shift 3
    tag=$(date +%H%M%S)
    python3 benches/compare.py --cases "$cases" --prompt-lens "$lens" --pairs "$pairs" \
      --tokenizers /tmp/tok --models /tmp/models --lmx-bench .gpu/lmx-bench \
      --out "$OUT/bench-$tag.jsonl" --md "$OUT/bench-$tag.md" "$@" 2>&1 | grep -v '^{'
    ;;
  exits)
    n=$1
    m=$(model_dir "$2") || exit 1
    fails=0 aborts=0
    for i in $(seq "$n"); do
      if ! .gpu/lmx generate --model "$m" --prompt "Hello there" --max-tokens 8 --ignore-eos \
           >/dev/null 2>/tmp/exit-err; then
        fails=$((fails + 1))
        grep -q terminate /tmp/exit-err && aborts=$((aborts + 1))
        tail -2 /tmp/exit-err
      fi
    done
    echo "exits: $n fresh processes of lmx generate, $fails failed, $aborts aborted at exit"
    ;;
  ops)
    python3 benches/ops_host_cost.py "$@"
    ;;
  lmx)
    # One lmx-bench process on CASE at prompt length LEN, with extra KEY=VALUE environment.
    m=$(model_dir "$1") || exit 1
    shape=${1%%:*} len=$2
    shift 2
    python3 -c "import json,sys,pathlib; sys.path.insert(0,'benches'); import models; \
print(json.dumps([models.prompt_ids('$shape', $len, pathlib.Path('/tmp/tok'))]))" >/tmp/p.json || exit 1
    env "$@" "${LMX_BENCH:-.gpu/lmx-bench}" --model "$m" --prompts /tmp/p.json --gen 128 --reps 2
    ;;
  classify)
    m=$(model_dir "$1") || exit 1
    batches=$2
    shift 2
    python3 benches/classify.py --model "$m" --batches "$batches" --lmx-bench .gpu/lmx-bench "$@"
    ;;
  *)
    echo "unknown command $cmd" >&2
    exit 2
    ;;
esac
