"""Classification throughput, liblmx against mlx-lm: many short prompts, one forward pass each,
the greedy next token, in batches of B prompts; sentences per second at each batch size.

usage: python benches/classify.py --model DIR --batches 1,8,64,256 [--prompts 512] [--reps 3]
           [--lmx-bench target/release/lmx-bench] [--same-blas LIB] [--out FILE.jsonl]

Prompts are random token ids of 16 to 24 tokens (fixed seed), the same for both. mlx-lm's side
runs its model on left-padded batches as its own batch generation does (a BatchKVCache per
layer carrying the padding, masks and per-row positions from it), then its output head on the
last position only: how a user of mlx-lm classifies at its best. One process each, liblmx
first, then mlx-lm; each batch size is warmed up before it is timed.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time


def prompts_for(model_dir, n, seed=11):
    with open(os.path.join(model_dir, "tokenizer.json")) as f:
        vocab = len(json.load(f)["model"]["vocab"])
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(rng.randint(16, 24))] for _ in range(n)]


def mlxlm(model_dir, prompts, batches, reps):
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.models.cache import BatchKVCache

    model, _ = load(model_dir)
    inner = model.model
    head = model.lm_head if hasattr(model, "lm_head") and not getattr(model, "tie_word_embeddings", True) \
        else inner.embed_tokens.as_linear

    def run(batch):
        longest = max(len(p) for p in batch)
        pad = [longest - len(p) for p in batch]
        ids = mx.array([[0] * n + p for p, n in zip(batch, pad)])
        cache = [BatchKVCache(pad) for _ in inner.layers]
        h = inner(ids, cache)
        return mx.argmax(head(h[:, -1:, :])[:, 0, :], axis=-1)

    out = []
    for b in batches:
        b = min(b, len(prompts))
        mx.eval(run(prompts[:b]))
        secs = []
        for _ in range(reps):
            t = time.perf_counter()
            for i in range(0, len(prompts), b):
                run(prompts[i:i + b]).tolist()
            secs.append(time.perf_counter() - t)
        r = dict(impl="mlx-lm", device=str(mx.default_device()), model=model_dir, batch=b,
                 prompts=len(prompts), sentences_per_s=len(prompts) / statistics.median(secs),
                 peak_bytes=mx.get_peak_memory())
        print(json.dumps(r), flush=True)
        out.append(r)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batches", default="1,8,64,256")
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--lmx-bench", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "lmx-bench"))
    ap.add_argument("--same-blas")
    ap.add_argument("--out")
    ap.add_argument("--side", choices=["both", "mlx-lm"], default="both")
    a = ap.parse_args()
    batches = [int(x) for x in a.batches.split(",")]
    prompts = prompts_for(a.model, a.prompts)
    rows = []
    if a.side == "mlx-lm":
        mlxlm(a.model, prompts, batches, a.reps)
        return
    tmp = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump(prompts, tmp)
    tmp.close()
    pfile = tmp.name
    def lines(cmd, env=None):
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        for x in p.stdout:
            if x.startswith("{"):
                print(x.strip(), flush=True)
                rows.append(json.loads(x))
        if p.wait():
            sys.exit(f"failed: {cmd}")

    lines([a.lmx_bench, "--model", a.model, "--prompts", pfile, "--classify", a.batches, "--reps", str(a.reps)])
    os.unlink(pfile)
    env = dict(os.environ)
    if a.same_blas:
        env["LD_PRELOAD"] = a.same_blas
    lines([sys.executable, __file__, "--model", a.model, "--batches", a.batches, "--prompts", str(a.prompts),
           "--reps", str(a.reps), "--side", "mlx-lm"], env)
    if a.out:
        with open(a.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(f"| batch | liblmx sentences/s | mlx-lm sentences/s | ratio |\n|---|---|---|---|")
    for b in batches:
        x = next((r["sentences_per_s"] for r in rows if r["impl"] == "liblmx" and r["batch"] == min(b, a.prompts)), None)
        y = next((r["sentences_per_s"] for r in rows if r["impl"] == "mlx-lm" and r["batch"] == min(b, a.prompts)), None)
        print(f"| {b} | {x:,.1f} | {y:,.1f} | {x / y:.2f}x |")


if __name__ == "__main__":
    main()
