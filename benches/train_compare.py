#!/usr/bin/env python3
"""LoRA training speed and memory: `lmx train --json` beside mlx-lm's training loop
(benches/mlxlm_train.py) on the same model folder and JSONL data, same hyperparameters,
processes interleaved (A B A B ...). Reports, per implementation, trained tokens per second
over the steps after the first two (the first ones compile and allocate) and MLX's peak
memory, each as the median over the runs, and the ratio liblmx / mlx-lm.

usage: train_compare.py --model DIR --data DIR [--iters N] [--pairs N] [--batch N] [--rank R]
       [--scale S] [--layers N] [--lr X] [--max-seq N] [--checkpoint] [--device cpu|gpu]
       [--lmx PATH] [--same-blas LIB] [--out FILE.jsonl]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lines(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{") and '"loss"' in line]


def summary(steps):
    later = steps[2:] or steps
    tps = statistics.median(s["tokens_per_second"] for s in later)
    return {"tokens_per_second": tps, "peak_memory_bytes": max(s["peak_memory_bytes"] for s in steps),
            "first_loss": steps[0]["loss"], "last_loss": steps[-1]["loss"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--scale", type=float, default=20.0)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-seq", type=int, default=512)
    ap.add_argument("--checkpoint", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lmx", default=str(ROOT / "target" / "release" / "lmx"))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--same-blas", default=None, help="LD_PRELOAD this BLAS into mlx-lm's process")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    runs = {"liblmx": [], "mlx-lm": []}
    for pair in range(a.pairs):
        with tempfile.TemporaryDirectory() as out:
            cmd = [a.lmx, "train", "--model", a.model, "--data", str(Path(a.data) / "train.jsonl"),
                   "--adapter-out", out, "--iters", str(a.iters), "--batch-size", str(a.batch),
                   "--rank", str(a.rank), "--scale", str(a.scale), "--num-layers", str(a.layers),
                   "--learning-rate", str(a.lr), "--max-seq-length", str(a.max_seq), "--json"]
            if a.checkpoint:
                cmd.append("--grad-checkpoint")
            runs["liblmx"].append(summary(lines(cmd)))
        env = dict(os.environ)
        if a.same_blas:
            env["LD_PRELOAD"] = a.same_blas
        cmd = [a.python, str(ROOT / "benches" / "mlxlm_train.py"), a.model, a.data, str(a.iters), str(a.batch),
               str(a.rank), str(a.scale), str(a.layers), str(a.lr), str(a.max_seq), "1" if a.checkpoint else "0",
               a.device]
        runs["mlx-lm"].append(summary(lines(cmd, env)))
        print(f"pair {pair + 1}: liblmx {runs['liblmx'][-1]['tokens_per_second']:.1f} tok/s, "
              f"mlx-lm {runs['mlx-lm'][-1]['tokens_per_second']:.1f} tok/s", file=sys.stderr)
    res = {"model": a.model, "iters": a.iters, "batch": a.batch, "rank": a.rank, "layers": a.layers,
           "checkpoint": a.checkpoint, "device": a.device}
    for k, v in runs.items():
        res[k] = {"tokens_per_second": statistics.median(r["tokens_per_second"] for r in v),
                  "peak_memory_bytes": statistics.median(r["peak_memory_bytes"] for r in v),
                  "loss": [v[0]["first_loss"], v[0]["last_loss"]]}
    res["speed_ratio"] = res["liblmx"]["tokens_per_second"] / res["mlx-lm"]["tokens_per_second"]
    res["peak_memory_ratio"] = res["liblmx"]["peak_memory_bytes"] / res["mlx-lm"]["peak_memory_bytes"]
    print(json.dumps(res))
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
