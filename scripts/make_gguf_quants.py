#!/usr/bin/env python3
"""Reference blocks for liblmx's GGUF dequantizers (tests/gguf_quants.rs).

usage: .venv-ref/bin/python scripts/make_gguf_quants.py tests/fixtures/gguf_quants

For each block type: <TYPE>.raw, 8 blocks of deterministic random bytes whose float16 scale
fields are set to plausible values, and <TYPE>.f32, what gguf-py 0.19's dequantize (the
reference implementation's numpy port) makes of them, as little-endian float32.
"""
import os
import sys

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, quants

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(20261122)
BLOCKS = 8


def f16(lo, hi, n):
    return rng.uniform(lo, hi, n).astype(np.float16).view(np.uint8).reshape(n, 2)


# Offsets of float16 fields inside each block type's layout.
scale_fields = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
for t, fields in scale_fields.items():
    _, size = GGML_QUANT_SIZES[t]
    raw = rng.integers(0, 256, size=(BLOCKS, size), dtype=np.uint8)
    for i, off in enumerate(fields):
        raw[:, off:off + 2] = f16(0.001, 0.05, BLOCKS) if i == 0 else f16(-0.05, 0.05, BLOCKS)
    ref = quants.dequantize(raw.reshape(-1), t).astype("<f4")
    raw.tofile(os.path.join(out, f"{t.name}.raw"))
    ref.tofile(os.path.join(out, f"{t.name}.f32"))
    print(t.name, raw.nbytes, "bytes ->", ref.size, "values")
