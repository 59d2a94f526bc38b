#!/usr/bin/env python3
"""Prints, as JSON, mlx-lm 0.32.2's logits with its quantized KV cache, for tests/kv_quant.rs:
liblmx's quantized cache must give the same numbers.

For each CONFIG (BITS:GROUP_SIZE:START; BITS 0: the float cache), from an empty cache: the prompt goes through the model
in one chunk, then each id of DECODE_IDS as a single token. After every forward pass the cache
goes through `mlx_lm.generate.maybe_quantize_kv_cache`, as `generate_step` calls it (KVCache
layers become QuantizedKVCache once their offset reaches START). mlx-lm 0.32.2 cannot quantize
a RotatingKVCache (`to_quantized` raises NotImplementedError), so sliding-window layers are
left out of that call and stay float: what liblmx does with them.

Output: {"runs": [{"steps": [[logit, ...], ...], "quantized": [bool, ...]}, ...]}, one run per
CONFIG: the prompt's last position then one row per decode id, and which layers were
quantized at the end.

usage: kv_quant_logits.py MODEL_DIR PROMPT_IDS DECODE_IDS CONFIG...
       (ids comma-separated; DECODE_IDS may be empty)
"""
import json
import sys

import mlx.core as mx
from mlx_lm.generate import maybe_quantize_kv_cache
from mlx_lm.models.cache import QuantizedKVCache, RotatingKVCache, make_prompt_cache
from mlx_lm.utils import load

mx.set_default_device(mx.cpu)
model_dir = sys.argv[1]
prompt = [int(x) for x in sys.argv[2].split(",")]
decode = [int(x) for x in sys.argv[3].split(",") if x]
model, _ = load(model_dir)


def run(bits, group, start):
    cache = make_prompt_cache(model)
    quantizable = [i for i, c in enumerate(cache) if not isinstance(c, RotatingKVCache)]
    steps = []
    for ids in [prompt] + [[t] for t in decode]:
        logits = model(mx.array([ids]), cache=cache)[0, -1].astype(mx.float32)
        mx.eval(logits)
        sub = [cache[i] for i in quantizable]
        maybe_quantize_kv_cache(sub, quantized_kv_start=start, kv_group_size=group, kv_bits=bits or None)
        for i, c in zip(quantizable, sub):
            cache[i] = c
        steps.append(logits.tolist())
    return {"steps": steps, "quantized": [isinstance(c, QuantizedKVCache) for c in cache]}


runs = [run(*(int(v) for v in c.split(":"))) for c in sys.argv[4:]]
print(json.dumps({"runs": runs}))
