#!/usr/bin/env bash
# What the Go layer (go/metal: options, the session pool, the pull stream with one cgo call
# per token) adds to decoding: go/metal's BenchmarkDecode against lmx-bench (Rust, in-process)
# on the same model, prompt and token count, alternated ROUNDS times; medians of decode tok/s.
# usage (after `make`): benches/go_overhead.sh [MODEL_DIR] [ROUNDS]
#   MODEL_DIR default: the tiny qwen3 fixture (per-token overhead shows most there).
set -euo pipefail
cd "$(dirname "$0")/.."
export PKG_CONFIG_PATH=$PWD/build/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
dir=${1:-tests/fixtures/qwen3}
rounds=${2:-5}
name=fixture
[ "$dir" != tests/fixtures/qwen3 ] && name=smollm2
ids=$(mktemp)
trap 'rm -f "$ids"' EXIT
.venv-ref/bin/python -c "
import json, sys
from tokenizers import Tokenizer
print(json.dumps([Tokenizer.from_file('$dir/tokenizer.json').encode('Once upon a time').ids]))" >"$ids"
go_runs=() rust_runs=()
for _ in $(seq "$rounds"); do
  go_runs+=("$(cd go && LMX_REAL_MODELS=1 go test -run '^$' -bench "Decode/$name\$" -benchtime=20x ./metal |
    awk '/decode-tok\/s/ {print $(NF-1)}')")
  rust_runs+=("$(target/release/lmx-bench --model "$dir" --prompts "$ids" --gen 64 --reps 20 --warmup 1 |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["decode_tps"])')")
done
python3 - "${go_runs[*]}" "${rust_runs[*]}" <<'EOF'
import statistics, sys
g = [float(x) for x in sys.argv[1].split()]
r = [float(x) for x in sys.argv[2].split()]
mg, mr = statistics.median(g), statistics.median(r)
print(f"go/metal decode tok/s: {' '.join(f'{x:.1f}' for x in g)} (median {mg:.1f})")
print(f"lmx-bench decode tok/s: {' '.join(f'{x:.1f}' for x in r)} (median {mr:.1f})")
print(f"Go layer: {(1 / mg - 1 / mr) * 1e6:+.1f} us per token, {(mr / mg - 1) * 100:+.1f}% of decode time")
EOF
