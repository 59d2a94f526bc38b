"""Host cost of single MLX ops in a pipelined decode-like loop: for each op kind, steps of N
chained ops are built and dispatched with async_eval (as a decode step is), and the script
reports microseconds per op spent building the graph (Python here), in MLX's dispatch
(async_eval: encoding kernels, allocating, CUDA graph work) and per op overall.
Shapes are Qwen3-0.6B's at decode (batch 1, one token, bfloat16). A diagnostic for where a
decode step's host time goes; benches/README.md says when to run it.

usage: python benches/ops_host_cost.py [--n 50] [--steps 40]
"""

import argparse
import json
import time

import mlx.core as mx


def kinds():
    h, inter, heads, kv, hd, ctx = 1024, 3072, 16, 8, 128, 512
    dt = mx.bfloat16
    x = mx.random.normal((1, 1, h)).astype(dt)
    w = (mx.random.normal((h, h)) * 0.02).astype(dt)
    w3 = (mx.random.normal((3 * h, h)) * 0.02).astype(dt)
    wq, sq, bq = mx.quantize(w, group_size=64, bits=4)
    wq3, sq3, bq3 = mx.quantize(w3, group_size=64, bits=4)
    nw = mx.ones((h,), dtype=dt)
    q = mx.random.normal((1, heads, 1, hd)).astype(dt)
    k = mx.random.normal((1, kv, ctx, hd)).astype(dt)
    v = mx.random.normal((1, kv, ctx, hd)).astype(dt)
    buf = mx.zeros((1, kv, ctx, hd), dtype=dt)
    g = mx.random.normal((1, 1, inter)).astype(dt)
    mx.eval(x, w, w3, wq, sq, bq, wq3, sq3, bq3, nw, q, k, v, buf, g)
    swiglu = mx.compile(lambda a, b: nn_silu(a) * b, shapeless=True)
    # Qwen3-4B's MLP up projections (gate and up fused): where decode reads the most bytes.
    H4, I4 = 2560, 2 * 9728
    x4 = mx.random.normal((1, 1, H4)).astype(dt)
    w4 = (mx.random.normal((I4, H4)) * 0.02).astype(dt)
    wq4, sq4, bq4 = mx.quantize(w4, group_size=64, bits=4)
    mx.eval(x4, w4, wq4, sq4, bq4)
    return {
        "matmul_2560x19456_slice": (x4, lambda y: (y @ w4.T)[..., :H4]),
        "qmm4_2560x19456_slice": (x4, lambda y: mx.quantized_matmul(y, wq4, sq4, bq4, True, 64, 4)[..., :H4]),
        "add": (x, lambda y: y + x),
        "multiply_scalar": (x, lambda y: y * 0.5),
        "rms_norm": (x, lambda y: mx.fast.rms_norm(y, nw, 1e-6)),
        "reshape_view": (x, lambda y: y.reshape(1, 1, h)),
        "matmul_1024x1024": (x, lambda y: y @ w.T),
        "matmul_1024x3072_slice": (x, lambda y: (y @ w3.T)[..., :h]),
        "qmm4_1024x1024": (x, lambda y: mx.quantized_matmul(y, wq, sq, bq, True, 64, 4)),
        "qmm4_1024x3072_slice": (x, lambda y: mx.quantized_matmul(y, wq3, sq3, bq3, True, 64, 4)[..., :h]),
        "rope": (q, lambda y: mx.fast.rope(y, hd, traditional=False, base=1e6, scale=1.0, offset=ctx - 1)),
        "sdpa_decode": (q, lambda y: mx.fast.scaled_dot_product_attention(y, k, v, scale=hd**-0.5)),
        "slice_update": (buf, lambda y: mx.slice_update(y, q[:, :kv], mx.array([0, 0, ctx - 1, 0]), (0, 1, 2, 3))),
        "silu_mul_plain": (g, lambda y: nn_silu(y) * g),
        "silu_mul_compiled": (g, lambda y: swiglu(y, g)),
    }


def nn_silu(a):
    return a * mx.sigmoid(a)


def run(name, start, f, n, steps):
    def step(y):
        for _ in range(n):
            y = f(y)
        return y

    y = step(start)
    mx.eval(y)
    build = dispatch = 0.0
    t0 = time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        y = step(start)
        t1 = time.perf_counter()
        mx.async_eval(y)
        build += t1 - t
        dispatch += time.perf_counter() - t1
    mx.eval(y)
    total = time.perf_counter() - t0
    per = steps * n / 1e6
    return dict(op=name, build_us=round(build / per, 2), dispatch_us=round(dispatch / per, 2),
                total_us=round(total / per, 2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--steps", type=int, default=40)
    a = ap.parse_args()
    print(json.dumps(dict(device=str(mx.default_device()), mlx=mx.__version__)))
    for name, (start, f) in kinds().items():
        print(json.dumps(run(name, start, f, a.n, a.steps)), flush=True)


if __name__ == "__main__":
    main()
