"""liblmx against mlx-lm, side by side: same model folder, same prompt ids, same generated
count, greedy, same MLX build, same machine; processes interleaved A B A B; medians and ratios.

usage: python benches/compare.py --cases SHAPE:DTYPE:BITS[,...] --tokenizers DIR --models DIR
           [--prompt-lens 512,2048] [--gen 128] [--pairs 3] [--reps 1] [--warmup 0]
           [--lmx-bench target/release/lmx-bench] [--same-blas LIB] [--out FILE.jsonl] [--md FILE.md]

Run it with a Python that has mlx-lm (it makes missing model folders with it and runs
benches/mlxlm_bench.py with the same interpreter). Each process loads the model once, runs
every prompt length (the first run of each is its cold run, kernels compiled and buffers
allocated there), and prints one JSON line per prompt length. A pair is one liblmx process
and one mlx-lm process; the table gives the median over pairs and the ratio liblmx / mlx-lm
(for times, mlx-lm / liblmx, so that above 1 always means liblmx is better).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import models  # noqa: E402

# (field, label, higher is better)
FIELDS = [
    ("prefill_tps", "prefill tok/s", True),
    ("decode_tps", "decode tok/s", True),
    ("ttft_s", "TTFT warm s", False),
    ("cold_ttft_s", "TTFT fresh process s", False),
    ("load_s", "load s", False),
    ("peak_bytes", "peak MLX MiB", False),
    ("max_rss_bytes", "max RSS MiB", False),
    ("host_ms_per_token", "host ms/token", False),
    ("wait_ms_per_token", "device wait ms/token", False),
]


def run_json(cmd, env):
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"failed ({p.returncode}): {' '.join(map(str, cmd))}")
    lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    for x in lines:
        x["process_s"] = time.perf_counter() - t
    return lines


def fmt(field, v):
    if v is None:
        return "-"
    if field.endswith("bytes"):
        return f"{v / 2**20:,.0f}"
    if field.endswith("_tps"):
        return f"{v:,.1f}"
    return f"{v:.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", required=True)
    ap.add_argument("--tokenizers", required=True, type=Path)
    ap.add_argument("--models", required=True, type=Path)
    ap.add_argument("--prompt-lens", default="512,2048")
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--lmx-bench", default=str(HERE.parent / "target" / "release" / "lmx-bench"))
    ap.add_argument("--same-blas", help="a BLAS library to preload into mlx-lm's process (the one liblmx links)")
    ap.add_argument("--lmx-env", action="append", default=[], help="KEY=VALUE for liblmx's process only")
    ap.add_argument("--kv-bits", type=int, default=0, help="quantize the KV cache (4 or 8) on both sides, from the first step")
    ap.add_argument("--kv-group-size", type=int, default=64)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--md", type=Path)
    a = ap.parse_args()

    import mlx.core as mx

    header = dict(machine=platform.node(), cpu=platform.processor() or platform.machine(),
                  device=str(mx.default_device()), mlx=mx.__version__, python=sys.executable,
                  date=time.strftime("%Y-%m-%d %H:%M"), args=" ".join(sys.argv[1:]))
    try:
        import mlx_lm

        header["mlx_lm"] = mlx_lm.__version__
    except Exception:
        pass
    print(json.dumps(header), flush=True)
    out = open(a.out, "a") if a.out else None
    if out:
        out.write(json.dumps(header) + "\n")
    lens = [int(x) for x in a.prompt_lens.split(",")]
    results = []
    for case in a.cases.split(","):
        shape, dtype, bits = case.split(":")
        folder = models.make_model(shape, dtype, int(bits), a.tokenizers, a.models)
        prompts = folder / f"prompts-{'-'.join(map(str, lens))}.json"
        if not prompts.exists():
            prompts.write_text(json.dumps([models.prompt_ids(shape, n, a.tokenizers) for n in lens]))
        def args(gen, reps):
            kv = ["--kv-bits", str(a.kv_bits), "--kv-group-size", str(a.kv_group_size)] if a.kv_bits else []
            return ["--model", str(folder), "--prompts", str(prompts), "--gen", str(gen),
                    "--reps", str(reps), "--warmup", str(a.warmup)] + kv

        common = args(a.gen, a.reps)
        lmx_env = dict(os.environ)
        lmx_env.update(kv.split("=", 1) for kv in a.lmx_env)
        ref_env = dict(os.environ)
        if a.same_blas:
            ref_env["LD_PRELOAD"] = a.same_blas
        # One untimed process of each first: MLX caches compiled kernels on disk (CUDA), and
        # the first process on a machine would otherwise pay for both sides' compilation.
        short = args(8, 1)
        for cmd, env in [([a.lmx_bench] + short, lmx_env),
                         ([sys.executable, str(HERE / "mlxlm_bench.py")] + short, ref_env)]:
            run_json(cmd, env)
        for pair in range(a.pairs):
            for impl, cmd, env in [("liblmx", [a.lmx_bench] + common, lmx_env),
                                   ("mlx-lm", [sys.executable, str(HERE / "mlxlm_bench.py")] + common, ref_env)]:
                for r in run_json(cmd, env):
                    r.update(case=case, pair=pair)
                    results.append(r)
                    print(json.dumps(r), flush=True)
                    if out:
                        out.write(json.dumps(r) + "\n")
                        out.flush()
    md = table(results, header)
    print(md)
    if a.md:
        a.md.write_text(md)


def table(results, header):
    rows = [f"device {header['device']}, MLX {header['mlx']}, mlx-lm {header.get('mlx_lm', '?')}; "
            f"medians over pairs; ratio > 1 means liblmx is better\n",
            "| case | prompt | metric | liblmx | mlx-lm | ratio |", "|---|---|---|---|---|---|"]
    keys = []
    for r in results:
        k = (r["case"], r["prompt_len"])
        if k not in keys:
            keys.append(k)
    for case, plen in keys:
        for field, label, higher in FIELDS:
            med = {}
            for impl in ["liblmx", "mlx-lm"]:
                vals = [r[field] for r in results if r["case"] == case and r["prompt_len"] == plen
                        and r["impl"] == impl and r.get(field) is not None]
                med[impl] = statistics.median(vals) if vals else None
            a, b = med["liblmx"], med["mlx-lm"]
            ratio = "-"
            if a and b:
                ratio = f"{(a / b) if higher else (b / a):.2f}x"
            rows.append(f"| {case} | {plen} | {label} | {fmt(field, a)} | {fmt(field, b)} | {ratio} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
