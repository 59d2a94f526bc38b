"""mlx-lm's half of the side-by-side benchmark: the same measurements as lmx-bench
(benches/lmx_bench.rs), taken with mlx-lm's own generation loop (`generate_step`).

usage: python mlxlm_bench.py --model DIR --prompts FILE.json [--gen N] [--reps N] [--warmup N]

One process: load the folder with mlx_lm.load (timed, tokenizer included, as liblmx's load is),
then for each prompt one cold generation, --warmup untimed ones and --reps timed ones, greedy,
exactly --gen tokens (generate_step never stops at EOS). Prints one JSON line per prompt with
the fields lmx-bench prints.
"""

import argparse
import json
import os
import statistics
import sys
import time

import mlx.core as mx
from mlx_lm import load
from mlx_lm.generate import generate_step


def _gather_qmm_without_global_scale():
    """mlx-lm 0.32.2's quantized expert layers (SwitchLinear) pass `global_scale=None` to
    mx.gather_qmm, an argument mlx 0.32.2 does not take: no quantized mixture of experts runs
    without this. The argument is dropped when it is None (affine and mxfp4 have none); the
    computation is mlx's own."""
    original = mx.gather_qmm
    if "global_scale" in (original.__doc__ or "").split("->")[0]:
        return

    def gather_qmm(*args, global_scale=None, **kwargs):
        if global_scale is not None:
            raise ValueError("a global scale (nvfp4) needs a newer mlx")
        return original(*args, **kwargs)

    mx.gather_qmm = gather_qmm


_gather_qmm_without_global_scale()


def max_rss():
    """Largest resident set of this process so far, in bytes (VmHWM; 0 where /proc has none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_once(model, prompt, gen, kv):
    """Seconds to the first token and decode tokens per second of one generation."""
    t0 = time.perf_counter()
    n = 0
    t1 = t0
    for _tok, _ in generate_step(prompt, model, max_tokens=gen, **kv):
        if n == 0:
            t1 = time.perf_counter()
        n += 1
    t2 = time.perf_counter()
    if n != gen:
        raise SystemExit(f"generated {n} tokens, expected {gen}")
    return t1 - t0, (n - 1) / (t2 - t1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--kv-bits", type=int, default=0)
    ap.add_argument("--kv-group-size", type=int, default=64)
    a = ap.parse_args()
    kv = dict(kv_bits=a.kv_bits, kv_group_size=a.kv_group_size, quantized_kv_start=0) if a.kv_bits else {}
    with open(a.prompts) as f:
        prompts = json.load(f)
    t0 = time.perf_counter()
    model, _tokenizer = load(a.model)
    mx.eval(model.parameters())
    load_s = time.perf_counter() - t0
    with open(os.path.join(a.model, "config.json")) as f:
        bits = (json.load(f).get("quantization") or {}).get("bits", 0)
    dtype = model.model.norm.weight.dtype
    for ids in prompts:
        prompt = mx.array(ids, dtype=mx.uint32)
        cold_ttft, _ = run_once(model, prompt, a.gen, kv)
        for _ in range(a.warmup):
            run_once(model, prompt, a.gen, kv)
        runs = [run_once(model, prompt, a.gen, kv) for _ in range(a.reps)]
        ttft = statistics.median(r[0] for r in runs)
        print(
            json.dumps(
                dict(
                    impl="mlx-lm",
                    device=str(mx.default_device()),
                    model=a.model,
                    dtype=str(dtype).replace("mlx.core.", ""),
                    bits=bits,
                    kv_bits=a.kv_bits,
                    prompt_len=len(ids),
                    gen=a.gen,
                    reps=a.reps,
                    load_s=load_s,
                    cold_ttft_s=cold_ttft,
                    ttft_s=ttft,
                    prefill_tps=statistics.median(len(ids) / r[0] for r in runs),
                    decode_tps=statistics.median(r[1] for r in runs),
                    host_ms_per_token=None,
                    peak_bytes=mx.get_peak_memory(),
                    max_rss_bytes=max_rss(),
                )
            ),
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
