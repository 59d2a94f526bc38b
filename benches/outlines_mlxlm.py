"""Outlines driving mlx-lm: the reference for what a constraint costs per token in Python, beside
`lmx-constrained-bench` (same cases: a fixed-key schema, a free-text schema, a phone regex; same
chat prompts; greedy). Needs a virtualenv with `outlines` and mlx-lm 0.32.2 (not the pinned
reference one: outlines brings its own pins):

    python3 -m venv /tmp/vo && /tmp/vo/bin/pip install outlines 'mlx-lm[cpu]==0.32.2' 'mlx[cpu]==0.32.2'
    /tmp/vo/bin/python benches/outlines_mlxlm.py --model DIR [--reps 5] [--max-tokens 256]

outlines-core applies its mask to MLX logits with a Metal kernel (`mx.fast.metal_kernel`), which
MLX's CPU and CUDA builds lack ("No Metal back-end"); off macOS this script puts the same
operation in its place, written in MLX ops (gather each id's mask word, shift, select), so that
what is measured is outlines' matcher and processor around it.

For each case, interleaved --reps times: a generation under outlines' logits processor (its
default backend, outlines-core), then an unconstrained one of as many tokens (EOS banned by a
processor of one indexed add, so the counts match); mlx-lm's own generation tokens/s of each,
and their ratio. Then one more constrained run with the processor's calls timed one by one
(p50/p99: computing the mask plus applying it, as outlines does both on each call), and
building the processor (compiling the schema) cold.
Prints one JSON line per case.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlx.core as mx  # noqa: E402
import outlines  # noqa: E402
from mlx_lm import load, stream_generate  # noqa: E402
from outlines.backends import get_json_schema_logits_processor, get_regex_logits_processor  # noqa: E402

FIXED_KEYS = {
    "type": "object",
    "properties": {
        "temperature_celsius": {"type": "integer", "minimum": -60, "maximum": 60},
        "condition": {"enum": ["sunny", "cloudy", "overcast", "rain", "snow", "fog"]},
        "humidity_percent": {"type": "integer", "minimum": 0, "maximum": 100},
        "wind_direction": {"enum": ["north", "north-east", "east", "south-east", "south", "south-west", "west",
                                    "north-west"]},
        "wind_speed_kmh": {"type": "integer", "minimum": 0, "maximum": 300},
        "uv_index": {"type": "integer", "minimum": 0, "maximum": 12},
        "precipitation_probability_percent": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["temperature_celsius", "condition", "humidity_percent", "wind_direction", "wind_speed_kmh",
                 "uv_index", "precipitation_probability_percent"],
    "additionalProperties": False,
}
FREE_TEXT = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 80},
        "summary": {"type": "string", "maxLength": 600},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 5},
    },
    "required": ["title", "summary", "tags"],
    "additionalProperties": False,
}
BACKEND = None
CASES = [
    ("fixed_keys", "Give today's weather in Lisbon as JSON.", "json", json.dumps(FIXED_KEYS)),
    ("free_text", "Describe the city of Lisbon as JSON.", "json", json.dumps(FREE_TEXT)),
    ("regex", "Give a phone number.", "regex", r"\+[0-9]{2} [0-9]{3} [0-9]{3} [0-9]{3}"),
]


def _apply_bitmask_ops(data, mask):
    """outlines-core's bitmask kernel as MLX ops: id i is kept when bit i%32 of word i//32 is set."""
    vocab = data.shape[-1]
    ids = mx.arange(vocab)
    words = mx.take(mask.astype(mx.uint32), ids // 32, axis=1)
    keep = ((words >> (ids % 32).astype(mx.uint32)) & 1) > 0
    return mx.where(keep, data, mx.array(-mx.inf, dtype=data.dtype))


if not mx.metal.is_available():
    import outlines_core.kernels.mlx as _kernels

    _kernels._apply_token_bitmask_kernel = mx.compile(_apply_bitmask_ops)


class Timed:
    """Wraps a logits processor, timing each call (the logits computed before, the result after)."""

    def __init__(self, inner):
        self.inner = inner
        self.seconds = []

    def __call__(self, tokens, logits):
        mx.eval(logits)  # the forward pass is not the processor's
        t = time.perf_counter()
        out = self.inner(tokens, logits)
        mx.eval(out)
        self.seconds.append(time.perf_counter() - t)
        return out


def ban(ids):
    ids = mx.array(sorted(ids))

    def proc(tokens, logits):
        return logits.at[..., ids].add(-mx.inf) if logits.ndim == 2 else logits

    return proc


def run(model, tok, prompt, max_tokens, processors):
    text, n, tps = "", 0, 0.0
    for r in stream_generate(model, tok, prompt, max_tokens=max_tokens, logits_processors=processors):
        text += r.text
        n = r.generation_tokens
        tps = r.generation_tps
    return text, n, tps


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=256)
    a = ap.parse_args()
    model, tok = load(a.model)
    om = outlines.from_mlxlm(model, tok)
    eos = set(tok.eos_token_ids)
    for name, question, kind, spec in CASES:
        prompt = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)

        def processor():
            t = time.perf_counter()
            if kind == "json":
                p = get_json_schema_logits_processor(BACKEND, om, spec)
            else:
                p = get_regex_logits_processor(BACKEND, om, spec)
            return p, time.perf_counter() - t

        # Warm-up (kernels, the vocabulary index), then the measured turns.
        p, _ = processor()
        text, n, _ = run(model, tok, prompt, a.max_tokens, [p])
        run(model, tok, prompt, n, [ban(eos)])
        with_tps, without_tps, masks, compiles = [], [], [], []
        for _ in range(a.reps):
            p, c = processor()
            compiles.append(c)
            _, n2, tps = run(model, tok, prompt, a.max_tokens, [p])
            with_tps.append(tps)
            _, _, tps3 = run(model, tok, prompt, n2, [ban(eos)])
            without_tps.append(tps3)
        # The processor's calls timed in a run of their own: timing them waits for each
        # step's logits, which the runs above do not.
        timed = Timed(processor()[0])
        run(model, tok, prompt, a.max_tokens, [timed])
        masks = timed.seconds[1:]
        w, wo = statistics.median(with_tps), statistics.median(without_tps)
        print(json.dumps({
            "case": name, "tool": "outlines+mlx-lm", "device": str(mx.default_device()),
            "tokens": n, "text": text[:200],
            "constrained_ms_per_token": 1000 / w, "unconstrained_ms_per_token": 1000 / wo,
            "ratio": wo / w,
            "processor_call_us_p50": 1e6 * pct(masks, 0.5), "processor_call_us_p99": 1e6 * pct(masks, 0.99),
            "processor_build_ms_median": 1000 * statistics.median(compiles),
        }), flush=True)


if __name__ == "__main__":
    main()
