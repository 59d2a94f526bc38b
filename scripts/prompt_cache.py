#!/usr/bin/env python3
"""mlx-lm 0.32.2's side of the session-file interoperability tests (tests/session_state.rs).

usage:
  prompt_cache.py make MODEL_DIR FILE ID,ID,... [KV_BITS KV_GROUP_SIZE]
      feeds the ids through a fresh prompt cache in one step and saves it with
      mlx_lm's save_prompt_cache (as mlx_lm.cache_prompt does), quantizing it first when
      KV_BITS is given (maybe_quantize_kv_cache with start 0)
  prompt_cache.py continue MODEL_DIR FILE ID,ID,... N
      loads FILE with load_prompt_cache and prints, as JSON, the N greedy tokens that
      generate_step makes after the ids
"""
import json
import sys

import mlx.core as mx
from mlx_lm.generate import generate_step, maybe_quantize_kv_cache
from mlx_lm.models.cache import QuantizedKVCache, load_prompt_cache, make_prompt_cache, save_prompt_cache
from mlx_lm.utils import load

mx.set_default_device(mx.cpu)
mode, model_dir, path, ids = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
ids = [int(x) for x in ids.split(",")]
model, _ = load(model_dir)

if mode == "make":
    cache = make_prompt_cache(model)
    model(mx.array([ids]), cache=cache)
    if len(sys.argv) > 5:
        maybe_quantize_kv_cache(cache, 0, int(sys.argv[6]), int(sys.argv[5]))
    mx.eval([c.state for c in cache])
    save_prompt_cache(path, cache, {"model": model_dir, "tokenizer_config": "{}"})
elif mode == "continue":
    n = int(sys.argv[5])
    cache = load_prompt_cache(path)
    kw = {}
    if isinstance(cache[0], QuantizedKVCache):
        kw = dict(kv_bits=cache[0].bits, kv_group_size=cache[0].group_size, quantized_kv_start=0)
    out = []
    for tok, _ in generate_step(mx.array(ids), model, max_tokens=n, prompt_cache=cache, **kw):
        out.append(int(tok))
    print(json.dumps(out))
else:
    sys.exit(f"unknown mode {mode}")
