"""Benchmark inputs: random-weight checkpoints of real model shapes, saved as mlx-lm saves them,
with real tokenizers, and fixed random prompts.

    python benches/models.py tokenizers OUT_DIR     (here, with .venv-ref: needs transformers)
    python benches/models.py model SHAPE DTYPE BITS TOKENIZERS_DIR OUT_DIR   (needs mlx-lm)

Tokenizers: SmolLM2's and Gemma 3's come from the real-model cache that scripts/real_models.py
fills; Qwen's is rebuilt by transformers from `ggml-vocab-qwen2.gguf`, the vocabulary file that
ships in llama.cpp's sources (the PyPI sdist of llama-cpp-python): Qwen2's vocabulary, which
Qwen3 shares (151,936 ids). Nothing is fetched from a model hub.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

# Real configs (the fields the model classes read), by shape name.
SHAPES = {
    "smollm2-135m": dict(
        family="smollm2", model_type="llama", hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, intermediate_size=1536, vocab_size=49152, rms_norm_eps=1e-5, rope_theta=100000.0,
        tie_word_embeddings=True, head_dim=64, max_position_embeddings=8192),
    "qwen3-0.6b": dict(
        family="qwen3", model_type="qwen3", hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, intermediate_size=3072, vocab_size=151936, rms_norm_eps=1e-6,
        rope_theta=1000000.0, tie_word_embeddings=True, head_dim=128, max_position_embeddings=40960),
    "qwen3-4b": dict(
        family="qwen3", model_type="qwen3", hidden_size=2560, num_hidden_layers=36, num_attention_heads=32,
        num_key_value_heads=8, intermediate_size=9728, vocab_size=151936, rms_norm_eps=1e-6,
        rope_theta=1000000.0, tie_word_embeddings=True, head_dim=128, max_position_embeddings=40960),
    "gemma3-1b": dict(
        family="gemma3", model_type="gemma3_text", hidden_size=1152, num_hidden_layers=26,
        num_attention_heads=4, num_key_value_heads=1, head_dim=256, intermediate_size=6912,
        vocab_size=262144, rms_norm_eps=1e-6, rope_theta=1000000.0, rope_local_base_freq=10000.0,
        sliding_window=512, sliding_window_pattern=6, query_pre_attn_scalar=256,
        max_position_embeddings=32768, tie_word_embeddings=True),
    # Mixtures of experts (issue 20).
    "qwen3-30b-a3b": dict(
        family="qwen3", model_type="qwen3_moe", hidden_size=2048, num_hidden_layers=48, num_attention_heads=32,
        num_key_value_heads=4, head_dim=128, intermediate_size=6144, moe_intermediate_size=768,
        num_experts=128, num_experts_per_tok=8, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
        vocab_size=151936, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False,
        max_position_embeddings=40960),
    # A small MoE for the CPU: Qwen3-MoE's layout at a tenth of the width.
    "qwen3-moe-small": dict(
        family="qwen3", model_type="qwen3_moe", hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
        num_key_value_heads=4, head_dim=64, intermediate_size=1536, moe_intermediate_size=256,
        num_experts=32, num_experts_per_tok=4, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
        vocab_size=151936, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
        max_position_embeddings=40960),
    # gpt-oss-20b: its config; the tokenizer is Qwen's (o200k is not on a registry), padded to
    # the model's 201,088 ids; prompts use Qwen's own ids. Quantized, the experts are MXFP4 as
    # in OpenAI's release and mlx-community's conversions, the other layers affine at BITS
    # (routers at 8 bits, mlx-lm's choice).
    "gpt-oss-20b": dict(
        family="qwen3", model_type="gpt_oss", hidden_size=2880, num_hidden_layers=24, num_attention_heads=64,
        num_key_value_heads=8, head_dim=64, intermediate_size=2880, num_local_experts=32, num_experts_per_tok=4,
        sliding_window=128, layer_types=["sliding_attention", "full_attention"] * 12, vocab_size=201088,
        rms_norm_eps=1e-5, rope_theta=150000.0, swiglu_limit=7.0, tie_word_embeddings=False,
        rope_scaling=dict(rope_type="yarn", factor=32.0, beta_fast=32.0, beta_slow=1.0, truncate=False,
                          original_max_position_embeddings=4096),
        max_position_embeddings=131072, experts_mode="mxfp4"),
    # DeepSeek-V2-Lite: latent attention (direct q, kv_lora_rank 512), 64 routed experts (top
    # 6, greedy) and 2 shared, its first layer dense. Tokenizer: SmolLM2's, padded to the
    # model's 102,400 ids.
    "deepseek-v2-lite": dict(
        family="smollm2", model_type="deepseek_v2", hidden_size=2048, num_hidden_layers=27,
        num_attention_heads=16, num_key_value_heads=16, intermediate_size=10944, moe_intermediate_size=1408,
        n_routed_experts=64, n_shared_experts=2, num_experts_per_tok=6, routed_scaling_factor=1.0,
        topk_method="greedy", n_group=1, topk_group=1, norm_topk_prob=False, scoring_func="softmax",
        moe_layer_freq=1, first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=512, qk_rope_head_dim=64,
        v_head_dim=128, qk_nope_head_dim=128, vocab_size=102400, rms_norm_eps=1e-6, rope_theta=10000.0,
        rope_scaling=dict(type="yarn", factor=40.0, beta_fast=32, beta_slow=1, mscale=0.707,
                          mscale_all_dim=0.707, original_max_position_embeddings=4096),
        max_position_embeddings=163840, attention_bias=False, tie_word_embeddings=False),
    # Small versions of both for the CPU.
    "gpt-oss-small": dict(
        family="qwen3", model_type="gpt_oss", hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
        num_key_value_heads=2, head_dim=64, intermediate_size=512, num_local_experts=16, num_experts_per_tok=4,
        sliding_window=128, layer_types=["sliding_attention", "full_attention"] * 4, vocab_size=151936,
        rms_norm_eps=1e-5, rope_theta=150000.0, swiglu_limit=7.0, tie_word_embeddings=False,
        rope_scaling=dict(rope_type="yarn", factor=32.0, beta_fast=32.0, beta_slow=1.0, truncate=False,
                          original_max_position_embeddings=4096),
        max_position_embeddings=131072, experts_mode="mxfp4"),
    "deepseek-v2-small": dict(
        family="smollm2", model_type="deepseek_v2", hidden_size=512, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=8, intermediate_size=1536, moe_intermediate_size=256,
        n_routed_experts=32, n_shared_experts=2, num_experts_per_tok=4, routed_scaling_factor=1.0,
        topk_method="greedy", n_group=1, topk_group=1, norm_topk_prob=False, scoring_func="softmax",
        moe_layer_freq=1, first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=128, qk_rope_head_dim=32,
        v_head_dim=64, qk_nope_head_dim=64, vocab_size=102400, rms_norm_eps=1e-6, rope_theta=10000.0,
        rope_scaling=dict(type="yarn", factor=40.0, beta_fast=32, beta_slow=1, mscale=0.707,
                          mscale_all_dim=0.707, original_max_position_embeddings=4096),
        max_position_embeddings=163840, attention_bias=False, tie_word_embeddings=False),
}

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"]
CACHE = Path(os.environ.get("LMX_TEST_CACHE") or Path.home() / ".cache" / "lmx-test").expanduser()
LLAMA_CPP_SDIST = "llama-cpp-python==0.3.36"
QWEN_VOCAB = "vendor/llama.cpp/models/ggml-vocab-qwen2.gguf"


def folder_name(shape, dtype, bits):
    return f"{shape}-{dtype}" + (f"-q{bits}" if bits else "")


def shape_config(shape: str) -> dict:
    """The config of SHAPE, or of SHAPE@N: the same shape cut to its first N layers (for shapes
    too large to make or move in full; per-layer figures scale)."""
    name, _, layers = shape.partition("@")
    cfg = dict(SHAPES[name])
    if layers:
        n = int(layers)
        if not 0 < n <= cfg["num_hidden_layers"]:
            raise SystemExit(f"{shape}: {n} layers is not within 1..{cfg['num_hidden_layers']}")
        cfg["num_hidden_layers"] = n
    return cfg


def qwen_tokenizer(out: Path):
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoTokenizer

    dl = CACHE / "dl"
    dl.mkdir(parents=True, exist_ok=True)
    sdists = list(dl.glob("llama_cpp_python-*.tar.gz"))
    if not sdists:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        LLAMA_CPP_SDIST, "-d", str(dl)], check=True)
        sdists = list(dl.glob("llama_cpp_python-*.tar.gz"))
    vocab_dir = CACHE / "vocab"
    vocab_dir.mkdir(parents=True, exist_ok=True)
    gguf = vocab_dir / "ggml-vocab-qwen2.gguf"
    if not gguf.exists():
        with tarfile.open(sdists[0]) as t:
            member = next(m for m in t.getmembers() if m.name.endswith(QWEN_VOCAB))
            with t.extractfile(member) as src, open(gguf, "wb") as dst:
                shutil.copyfileobj(src, dst)
    tok = AutoTokenizer.from_pretrained(str(vocab_dir), gguf_file=gguf.name)
    tok.save_pretrained(str(out))


def make_tokenizers(out: Path):
    for family, src in [("smollm2", CACHE / "smollm2-135m-instruct"), ("gemma3", CACHE / "gemma3-270m")]:
        dst = out / family
        dst.mkdir(parents=True, exist_ok=True)
        for f in TOKENIZER_FILES:
            if (src / f).exists():
                shutil.copy(src / f, dst / f)
        if not (dst / "tokenizer.json").exists():
            raise SystemExit(f"{src}: no tokenizer.json (run `make real-models` first)")
    qwen = out / "qwen3"
    if not (qwen / "tokenizer.json").exists():
        qwen_tokenizer(qwen)
    for family in ["smollm2", "qwen3", "gemma3"]:
        print(f"{out / family}: {(out / family / 'tokenizer.json').stat().st_size} bytes")


def pad_tokenizer(path: Path, vocab_size: int):
    """Gives the tokenizer at `path` exactly `vocab_size` ids, as a real checkpoint's has: ids
    past its own become special tokens `<|bench_pad_N|>` (a random-weight model emits any id of
    its vocabulary, and liblmx refuses a tokenizer and model that disagree)."""
    with open(path) as f:
        tok = json.load(f)
    ids = list(tok["model"]["vocab"].values()) + [t["id"] for t in tok.get("added_tokens", [])]
    n = max(ids) + 1
    if n > vocab_size:
        raise SystemExit(f"{path}: {n} ids do not fit the shape's vocab_size {vocab_size}: pick another tokenizer")
    tok.setdefault("added_tokens", []).extend(
        {"id": i, "content": f"<|bench_pad_{i}|>", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i in range(n, vocab_size))
    with open(path, "w") as f:
        json.dump(tok, f, ensure_ascii=False)


def make_model(shape: str, dtype: str, bits: int, tokenizers: Path, out_root: Path) -> Path:
    """The folder for (shape, dtype, bits), made unless it exists. Weights are random (fixed
    seed), in `dtype`; with bits, quantized by mlx-lm (affine, groups of 64; a shape's
    `experts_mode` quantizes its experts in that mode instead)."""
    out = out_root / folder_name(shape, dtype, bits)
    if (out / "config.json").exists():
        return out
    import importlib

    import mlx.core as mx
    from mlx_lm.utils import quantize_model, save_config, save_model

    cfg = shape_config(shape)
    family = cfg.pop("family")
    experts_mode = cfg.pop("experts_mode", None)
    mod = importlib.import_module(f"mlx_lm.models.{cfg['model_type']}")
    mx.random.seed(0)
    model = mod.Model(mod.ModelArgs.from_dict(cfg))
    model.set_dtype(getattr(mx, dtype))
    mx.eval(model.parameters())
    if bits:
        predicate = None
        if experts_mode:
            default = getattr(model, "quant_predicate", None)

            def predicate(path, module):
                if ".experts." in path or path.endswith(".experts"):
                    return {"group_size": 32, "bits": 4, "mode": experts_mode}
                return default(path, module) if default else True

        model, cfg = quantize_model(model, cfg, group_size=64, bits=bits, quant_predicate=predicate)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(tmp, model)
    cfg["torch_dtype"] = dtype
    save_config(cfg, tmp / "config.json")
    for f in TOKENIZER_FILES:
        src = tokenizers / family / f
        if src.exists():
            shutil.copy(src, tmp / f)
    pad_tokenizer(tmp / "tokenizer.json", cfg["vocab_size"])
    tmp.rename(out)
    return out


def prompt_ids(shape: str, length: int, tokenizers: Path, seed: int = 7):
    """`length` token ids drawn uniformly (fixed seed) from the ordinary vocabulary of the
    shape's tokenizer (special tokens excluded)."""
    import random

    cfg = shape_config(shape)
    with open(tokenizers / cfg["family"] / "tokenizer.json") as f:
        n = min(len(json.load(f)["model"]["vocab"]), cfg["vocab_size"])
    rng = random.Random(f"{shape}:{length}:{seed}")
    return [rng.randrange(3, n) for _ in range(length)]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "tokenizers":
        make_tokenizers(Path(sys.argv[2]))
    elif len(sys.argv) == 7 and sys.argv[1] == "model":
        print(make_model(sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5]), Path(sys.argv[6])))
    else:
        raise SystemExit(__doc__)
