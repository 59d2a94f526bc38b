#!/usr/bin/env python3
"""Build the tiny test checkpoints under tests/fixtures/ and their reference outputs.

Every case is a small random-weight float32 model (hidden size 64) with a byte-level BPE
tokenizer trained here on a fixed text. Reference outputs come from Hugging Face
transformers (torch, float32, CPU, eager attention) and from mlx-lm, and the script checks
that the two agree before writing anything. Running it again reproduces the same bytes.

Run it through `make references`, which creates .venv-ref with the pinned packages first.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

import contextlib  # noqa: E402
import copy  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import save_file as save_numpy  # noqa: E402
from safetensors.torch import save_file as save_torch  # noqa: E402
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from tokenizers import processors, trainers  # noqa: E402

import mlx.core as mx  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402
from mlx_lm.models.cache import make_prompt_cache  # noqa: E402
from mlx_lm.utils import load_model as mlx_load_model  # noqa: E402
from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer  # noqa: E402
from mlx_lm.utils import quantize_model as mlx_quantize_model  # noqa: E402

import transformers  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers import Qwen2Tokenizer  # noqa: E402



def _gather_qmm_without_global_scale():
    """mlx-lm 0.32.2's quantized expert layers pass `global_scale` (None for affine
    quantization) to mx.gather_qmm, which mlx 0.32.2 does not take; without it mlx-lm cannot
    run any quantized MoE model here. Drop the argument when it is None."""
    original = mx.gather_qmm
    if "global_scale" in (original.__doc__ or "").split("->")[0]:
        return

    def gather_qmm(*args, global_scale=None, **kwargs):
        assert global_scale is None, "an nvfp4 global scale needs a newer mlx"
        return original(*args, **kwargs)

    mx.gather_qmm = gather_qmm


_gather_qmm_without_global_scale()
warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
mx.set_default_device(mx.cpu)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

N_GREEDY = 32
MIN_MARGIN = 0.05  # top-1 minus top-2 logit along every greedy step
TOLERANCE = 1e-4  # absolute, on logits
MAX_SEEDS = 64
BASE_VOCAB = 400  # 256 byte symbols plus merges, before special tokens
# Weight scales, chosen so that logits spread over several units and the residual stream is
# not dominated by the input embedding (with tied embeddings that makes greedy decoding
# repeat the last prompt token): output projections get a gain, and Gemma, whose input
# embedding is multiplied by sqrt(hidden), gets small embeddings and a large final norm.
INIT = {"embed": 1.0, "gemma_embed": 0.08, "gemma_final_norm": 12.0, "out_gain": 8.0, "router_gain": 3.0,
        "deepseek_router_gain": 6.0}
MIN_DISTINCT = 8  # distinct tokens required among the greedy ids
# Mixture-of-experts cases: the k-th minus the (k+1)-th router logit (softmax keeps their
# order), at every MoE layer and every position the tests run (prompt and greedy path), so
# that float noise (~1e-6 here) cannot change which experts a token uses.
MIN_ROUTER_MARGIN = 1e-3
MIXTRAL_WINDOW = 16  # below the prompt length, so the window hides keys
GPT_OSS_WINDOW = 8  # gpt_oss's sliding layers: below the prompt length too

PROMPT_TEXT = (
    "The keeper counted 37 grey ships, then wrote a letter."
)

# Training text for the BPE model: plain prose written for this script.
CORPUS = """
On the northern edge of the bay stands an old lighthouse, painted white with a red band
near the top. For many years a keeper lived there alone. Every evening he climbed the
narrow stairs, one hundred and twelve of them, cleaned the glass, and lit the lamp. Ships
that passed in the night saw the light turn slowly and knew where the rocks were hidden.

The keeper kept a notebook. In it he wrote the weather, the number of ships, and small
things that he noticed: a seal on the rocks, a strange cloud, a bird that rested on the
rail for a whole afternoon. Some days the sea was calm and grey like a sheet of metal.
Other days the wind came from the west and the waves broke over the wall, and the whole
tower seemed to hum with the storm.

His sister lived in the town across the water. Once a month a small boat brought letters,
bread, oil for the lamp, and news. She wrote about the market, the school where she taught
children to read and count, the new bridge over the river, and the price of fish. He wrote
back about the light, the tides, and the long quiet hours. Neither of them ever wrote
about being lonely, but both of them read the letters many times.

In winter the days were short. The keeper would sit by the stove and mend nets, although
he did not fish, because his hands liked to be busy. He listened to the radio when the
signal was clear. Sometimes he heard music from distant cities, sometimes only a voice
reading the shipping forecast: wind, rain, visibility, pressure, rising or falling.

In spring the birds returned. They nested in the cliffs below the tower and filled the
air with noise from dawn until dusk. The keeper counted them too, and drew their shapes
in the margins of his notebook. He was not a good artist, but he was patient, and over
the years the drawings became better.

One autumn a letter arrived that said the light would soon be automatic. A machine would
turn the lamp on and off, and a keeper would no longer be needed. He read the letter
twice, folded it carefully, and put it in the drawer with the others. That night he
climbed the stairs as usual, cleaned the glass, and lit the lamp, and he watched the beam
sweep across the dark water until the morning came.

When he finally left the tower, he took the notebooks with him. They filled two boxes.
His sister helped him carry them up the hill to her house, where there was a small room
with a window facing the sea. From there, at night, he could still see the light turning,
steady and patient, doing its work without him.
"""

# ---------------------------------------------------------------------------------------
# Small helpers


def write_json(path, obj):
    text = json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    Path(path).write_text(text, encoding="utf-8")


def write_text(path, text):
    Path(path).write_text(text, encoding="utf-8")


def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def greedy_margins(rows):
    """top-1 minus top-2 logit of each row."""
    rows = np.asarray(rows, np.float64)
    top2 = np.sort(rows, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0]


def fmt(x):
    return f"{x:.2e}"


# ---------------------------------------------------------------------------------------
# Tokenizers


def corpus_lines():
    return [line.strip() for line in CORPUS.strip().split("\n\n")]


def qwen_pipeline():
    """The normalizer and pre-tokenizer that transformers' Qwen2Tokenizer always uses.

    transformers 5 loads checkpoints of model_type qwen2 with Qwen2Tokenizer, which keeps
    only the vocabulary and merges of tokenizer.json and installs its own normalizer and
    pre-tokenizer. The qwen tokenizer.json files carry the same ones (as real Qwen
    checkpoints do), taken from the library here, so that every reader agrees.
    """
    backend = Qwen2Tokenizer().backend_tokenizer
    return backend.normalizer, backend.pre_tokenizer


def train_bpe(front_specials, pipeline=None):
    """Byte-level BPE trained on CORPUS. `front_specials` take the first ids."""
    tok = Tokenizer(models.BPE())
    if pipeline is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.normalizer, tok.pre_tokenizer = pipeline
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BASE_VOCAB + len(front_specials),
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in front_specials],
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    return tok


def add_tokens(tok, specials=(), plain=()):
    if specials:
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if plain:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain])


def bos_template(bos, bos_id, byte_level_first):
    tmpl = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0",
        pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
        special_tokens=[(bos, bos_id)],
    )
    if byte_level_first:
        return processors.Sequence([processors.ByteLevel(trim_offsets=False), tmpl])
    return tmpl


LLAMA_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{- message['content'] | trim }}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

MISTRAL_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_text = messages[0]['content'] %}"
    "{%- set turns = messages[1:] %}"
    "{%- else %}"
    "{%- set system_text = '' %}"
    "{%- set turns = messages %}"
    "{%- endif %}"
    "{%- for message in turns %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.first and system_text %}"
    "{{- '[INST] ' + system_text + '\\n\\n' + message['content'] + ' [/INST]' }}"
    "{%- else %}"
    "{{- '[INST] ' + message['content'] + ' [/INST]' }}"
    "{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- ' ' + message['content'] + eos_token }}"
    "{%- endif %}"
    "{%- endfor %}"
)

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

CHATML_THINK_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

GEMMA_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set first_prefix = messages[0]['content'] + '\\n\\n' %}"
    "{%- set turns = messages[1:] %}"
    "{%- else %}"
    "{%- set first_prefix = '' %}"
    "{%- set turns = messages %}"
    "{%- endif %}"
    "{%- for message in turns %}"
    "{%- if message['role'] == 'assistant' %}{%- set role = 'model' %}"
    "{%- else %}{%- set role = message['role'] %}{%- endif %}"
    "{{- '<start_of_turn>' + role + '\\n' }}"
    "{%- if loop.first %}{{- first_prefix }}{%- endif %}"
    "{{- message['content'] | trim }}"
    "{{- '<end_of_turn>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<start_of_turn>model\\n' }}"
    "{%- endif %}"
)


def build_tokenizer(family):
    """Returns (tokenizers.Tokenizer, tokenizer_config dict, ids dict)."""
    base_cfg = {
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 256,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if family == "llama":
        tok = train_bpe([])
        add_tokens(
            tok,
            specials=[
                "<|begin_of_text|>",
                "<|end_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
            ],
        )
        ids = {t: tok.token_to_id(t) for t in ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]}
        tok.post_processor = bos_template("<|begin_of_text|>", ids["<|begin_of_text|>"], True)
        cfg = dict(
            base_cfg,
            bos_token="<|begin_of_text|>",
            eos_token="<|eot_id|>",
            chat_template=LLAMA_TEMPLATE,
        )
        bos = ids["<|begin_of_text|>"]
        eos = [ids["<|end_of_text|>"], ids["<|eot_id|>"]]
        ids = {"bos": bos, "eos": eos, "config_eos": eos, "pad": None}
    elif family == "mistral":
        tok = train_bpe(["<unk>", "<s>", "</s>", "[INST]", "[/INST]"])
        bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
        tok.post_processor = bos_template("<s>", bos, False)
        cfg = dict(
            base_cfg,
            add_bos_token=True,
            add_eos_token=False,
            bos_token="<s>",
            eos_token="</s>",
            unk_token="<unk>",
            chat_template=MISTRAL_TEMPLATE,
        )
        ids = {"bos": bos, "eos": eos, "config_eos": eos, "pad": None}
    elif family in ("qwen2", "qwen3"):
        tok = train_bpe([], qwen_pipeline())
        add_tokens(tok, specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        if family == "qwen3":
            add_tokens(tok, plain=["<think>", "</think>"])
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        cfg = dict(
            base_cfg,
            bos_token=None,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            chat_template=CHATML_THINK_TEMPLATE if family == "qwen3" else CHATML_TEMPLATE,
        )
        eot, im_end = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>")
        ids = {"bos": eot, "eos": [im_end, eot], "config_eos": [im_end, eot], "pad": eot}
    elif family == "gemma":
        tok = train_bpe(["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"])
        bos = tok.token_to_id("<bos>")
        tok.post_processor = bos_template("<bos>", bos, False)
        cfg = dict(
            base_cfg,
            add_bos_token=True,
            add_eos_token=False,
            bos_token="<bos>",
            eos_token="<eos>",
            pad_token="<pad>",
            chat_template=GEMMA_TEMPLATE,
        )
        eos, eot = tok.token_to_id("<eos>"), tok.token_to_id("<end_of_turn>")
        ids = {"bos": bos, "eos": [eos, eot], "config_eos": eos, "pad": tok.token_to_id("<pad>")}
    else:
        raise ValueError(family)
    ids["vocab"] = tok.get_vocab_size(with_added_tokens=True)
    assert ids["vocab"] <= 512, ids["vocab"]
    return tok, cfg, ids


def generation_config(ids):
    gen = {"bos_token_id": ids["bos"], "eos_token_id": ids["eos"]}
    if ids["pad"] is not None:
        gen["pad_token_id"] = ids["pad"]
    return gen


def write_tokenizer_files(dst, tok_bundle):
    tok, cfg, ids = tok_bundle
    write_text(dst / "tokenizer.json", tok.to_str(pretty=True) + "\n")
    write_json(dst / "tokenizer_config.json", cfg)
    write_json(dst / "generation_config.json", generation_config(ids))


SPECIAL_TEXT = {
    "llama": "Done.<|eot_id|><|start_header_id|>user<|end_header_id|> and <|im_end|> too",
    "mistral": "[INST] Where is the lamp? [/INST] Up the stairs.</s> <|im_end|>",
    "qwen2": "<|im_start|>user\nhello<|im_end|>\n<|endoftext|> [INST]",
    "qwen3": "<think>\nthe tide is high\n</think>\n\nYes.<|im_end|> <end_of_turn>",
    "gemma": "<start_of_turn>user\nhello<end_of_turn>\n<eos> <|eot_id|>",
}

CHATS = [
    [{"role": "user", "content": "Who keeps the light?"}],
    [
        {"role": "system", "content": "You are a careful lighthouse keeper."},
        {"role": "user", "content": "How many stairs are there?"},
        {"role": "assistant", "content": "One hundred and twelve."},
        {"role": "user", "content": "And how many ships passed tonight?"},
    ],
]


def chat_ids(hf_tok, messages, add_generation_prompt, extra):
    out = hf_tok.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=True, **extra
    )
    if hasattr(out, "keys"):
        out = out["input_ids"]
    return [int(i) for i in out]


def tokenizer_reference(case_dir, family):
    hf_tok = AutoTokenizer.from_pretrained(str(case_dir))
    raw = Tokenizer.from_file(str(case_dir / "tokenizer.json"))
    texts = [
        "Hello world",
        "The keeper wrote the weather, the number of ships, and small things.",
        "café ☕ 日本",
        SPECIAL_TEXT[family],
        "  two leading spaces, digits 1234567 and\ttabs\nand a new line ",
        "",
        "nai\u0308ve cafe\u0301",  # combining marks: NFC changes these for the qwen family
    ]
    encode = []
    for text in texts:
        with_special = [int(i) for i in hf_tok(text)["input_ids"]]
        plain = [int(i) for i in hf_tok(text, add_special_tokens=False)["input_ids"]]
        # The tokenizer.json alone must give the same ids as transformers.
        assert raw.encode(text).ids == with_special, (family, text)
        assert raw.encode(text, add_special_tokens=False).ids == plain, (family, text)
        encode.append({"text": text, "ids_with_special": with_special, "ids_plain": plain})

    multibyte = encode[2]["ids_plain"]
    assert len(multibyte) > len("café ☕ 日本"), "multi-byte characters should span tokens"
    decode_ids = [
        encode[3]["ids_with_special"],
        encode[2]["ids_with_special"],
        multibyte[:-1],  # ends inside a character
        encode[4]["ids_plain"],
    ]
    chats = []
    extras = [{}]
    if family == "qwen3":
        extras = [{}, {"enable_thinking": False}, {"enable_thinking": True}]
    for messages in CHATS:
        for agp in (True, False):
            for extra in extras:
                text = hf_tok.apply_chat_template(
                    messages, add_generation_prompt=agp, tokenize=False, **extra
                )
                ids = chat_ids(hf_tok, messages, agp, extra)
                assert ids == raw.encode(text, add_special_tokens=False).ids
                chats.append(
                    {
                        "messages": messages,
                        "add_generation_prompt": agp,
                        "extra": extra,
                        "text": text,
                        "ids": ids,
                    }
                )
                if len(messages) > 1 and agp:
                    decode_ids.append(ids)
    decode = []
    seen = set()
    for ids in decode_ids:
        if tuple(ids) in seen:
            continue
        seen.add(tuple(ids))
        for skip in (False, True):
            text = hf_tok.decode(ids, skip_special_tokens=skip)
            decode.append({"ids": ids, "skip_special": skip, "text": text})
    # mlx-lm loads the same folder through its own tokenizer loader.
    mlx_tok = mlx_load_tokenizer(Path(case_dir))
    for e in encode:
        assert mlx_tok.encode(e["text"]) == e["ids_with_special"], (case_dir.name, e["text"])
    return {"encode": encode, "decode": decode, "chat": chats}


# ---------------------------------------------------------------------------------------
# Model configurations


def common_config(ids, n_layers, n_heads, n_kv, eps, tie, rope_theta):
    return {
        "attention_dropout": 0.0,
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["config_eos"],
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "max_position_embeddings": 256,
        "num_attention_heads": n_heads,
        "num_hidden_layers": n_layers,
        "num_key_value_heads": n_kv,
        "rms_norm_eps": eps,
        "rope_scaling": None,
        "rope_theta": rope_theta,
        "tie_word_embeddings": tie,
        "dtype": "float32",
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": ids["vocab"],
    }


def config_for(case, ids):
    if case == "llama_tied":
        c = common_config(ids, 2, 4, 2, 1e-5, True, 10000.0)
        c.update(
            architectures=["LlamaForCausalLM"],
            model_type="llama",
            hidden_act="silu",
            attention_bias=False,
            mlp_bias=False,
        )
    elif case == "llama_rope3":
        c = common_config(ids, 2, 4, 2, 1e-5, False, 500000.0)
        c.update(
            architectures=["LlamaForCausalLM"],
            model_type="llama",
            hidden_act="silu",
            head_dim=32,
            attention_bias=True,
            mlp_bias=True,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        )
    elif case == "mistral":
        c = common_config(ids, 2, 4, 1, 1e-5, False, 1000000.0)
        c.update(
            architectures=["MistralForCausalLM"],
            model_type="mistral",
            hidden_act="silu",
            head_dim=16,
            sliding_window=None,
        )
    elif case == "qwen2":
        c = common_config(ids, 2, 4, 2, 1e-5, True, 1000000.0)
        c.update(
            architectures=["Qwen2ForCausalLM"],
            model_type="qwen2",
            hidden_act="silu",
            use_sliding_window=False,
            sliding_window=None,
            max_window_layers=2,
        )
    elif case == "qwen3":
        c = common_config(ids, 2, 4, 2, 1e-5, True, 1000000.0)
        c.update(
            architectures=["Qwen3ForCausalLM"],
            model_type="qwen3",
            hidden_act="silu",
            head_dim=32,
            attention_bias=False,
            use_sliding_window=False,
            sliding_window=None,
            max_window_layers=2,
        )
    elif case == "gemma3":
        c = common_config(ids, 6, 4, 1, 1e-6, True, 1000000.0)
        pattern = 3
        c.update(
            architectures=["Gemma3ForCausalLM"],
            model_type="gemma3_text",
            head_dim=16,
            hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=24,
            sliding_window=8,
            sliding_window_pattern=pattern,
            layer_types=[
                "full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                for i in range(6)
            ],
            rope_local_base_freq=10000.0,
            attention_bias=False,
            final_logit_softcapping=None,
            attn_logit_softcapping=None,
            pad_token_id=ids["pad"],
        )
    elif case == "phi3":
        c = common_config(ids, 2, 4, 2, 1e-5, False, 10000.0)
        c.update(
            architectures=["Phi3ForCausalLM"],
            model_type="phi3",
            hidden_act="silu",
            pad_token_id=None,
            sliding_window=None,
            # 12 of the 16 head dimensions rotate; the factor lists have 6 entries.
            partial_rotary_factor=0.75,
            # The prompt and its 32 greedy tokens (55) stay within the original length, where
            # transformers rotates with the short factors; LONG_REPEAT copies of the prompt
            # pass it.
            original_max_position_embeddings=64,
            rope_scaling={
                "type": "longrope",
                "short_factor": [1.0, 1.05, 1.1, 1.25, 1.5, 1.9],
                "long_factor": [1.0, 1.6, 2.5, 4.0, 6.5, 9.0],
            },
        )
    elif case == "smollm3":
        c = common_config(ids, 4, 4, 2, 1e-6, True, 10000.0)
        c.update(
            architectures=["SmolLM3ForCausalLM"],
            model_type="smollm3",
            hidden_act="silu",
            pad_token_id=None,
            attention_bias=False,
            mlp_bias=False,
            use_sliding_window=False,
            sliding_window=None,
            # 1: the layer rotates, 0: it does not (NoPE).
            no_rope_layers=[1, 0, 1, 0],
        )
    elif case == "olmo2":
        c = common_config(ids, 2, 4, 2, 1e-6, False, 10000.0)
        c.update(
            architectures=["Olmo2ForCausalLM"],
            model_type="olmo2",
            hidden_act="silu",
            attention_bias=False,
            pad_token_id=None,
        )
    elif case == "qwen3_moe":
        # Sparse every 2nd layer (1, 3, 5) except layer 3, which stays dense.
        c = common_config(ids, 6, 4, 2, 1e-5, True, 1000000.0)
        c.update(
            architectures=["Qwen3MoeForCausalLM"],
            model_type="qwen3_moe",
            hidden_act="silu",
            head_dim=32,
            attention_bias=False,
            use_sliding_window=False,
            sliding_window=None,
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            norm_topk_prob=False,
            decoder_sparse_step=2,
            mlp_only_layers=[3],
        )
    elif case == "qwen2_moe":
        c = common_config(ids, 2, 4, 2, 1e-5, False, 1000000.0)
        c.update(
            architectures=["Qwen2MoeForCausalLM"],
            model_type="qwen2_moe",
            hidden_act="silu",
            use_sliding_window=False,
            sliding_window=None,
            max_window_layers=2,
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=96,
            norm_topk_prob=False,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            qkv_bias=True,
        )
    elif case == "mixtral":
        c = common_config(ids, 2, 4, 1, 1e-5, False, 1000000.0)
        c.update(
            architectures=["MixtralForCausalLM"],
            model_type="mixtral",
            hidden_act="silu",
            head_dim=16,
            intermediate_size=64,
            num_local_experts=4,
            num_experts_per_tok=2,
            sliding_window=MIXTRAL_WINDOW,
            router_jitter_noise=0.0,
        )
    elif case == "gpt_oss":
        # Sliding and full layers alternating; gpt-oss-20b's YaRN rope (correction range not
        # truncated); hidden 64 beside 2I = 128 so the stacked layouts cannot be confused.
        c = common_config(ids, 4, 4, 2, 1e-5, False, 150000.0)
        c.update(
            architectures=["GptOssForCausalLM"],
            model_type="gpt_oss",
            hidden_act="silu",
            head_dim=32,
            intermediate_size=64,
            attention_bias=True,
            num_local_experts=8,
            num_experts_per_tok=2,
            sliding_window=GPT_OSS_WINDOW,
            layer_types=["sliding_attention", "full_attention"] * 2,
            rope_scaling={
                "rope_type": "yarn",
                "factor": 32.0,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "truncate": False,
                "original_max_position_embeddings": 4096,
            },
            swiglu_alpha=1.702,
            swiglu_limit=7.0,
            router_aux_loss_coef=0.0,
            output_router_logits=False,
        )
    elif case == "deepseek_v2":
        # MLA with a direct q_proj (q_lora_rank null); layer 0 dense, layers 1-2 MoE with
        # layer 1 MoE with group-limited greedy routing (4 groups of 2 experts, top 3 of the best 2 groups).
        c = common_config(ids, 2, 4, 4, 1e-6, False, 10000.0)
        c.update(
            architectures=["DeepseekV2ForCausalLM"],
            model_type="deepseek_v2",
            hidden_act="silu",
            attention_bias=False,
            mlp_bias=False,
            q_lora_rank=None,
            kv_lora_rank=32,
            qk_nope_head_dim=32,
            qk_rope_head_dim=16,
            v_head_dim=32,
            n_routed_experts=8,
            # Top 3 from the best 2 of 4 groups: with top k <= topk_group the group limit
            # could never change the choice (the k best experts sit in at most k groups).
            num_experts_per_tok=3,
            n_shared_experts=1,
            moe_intermediate_size=32,
            first_k_dense_replace=1,
            topk_method="group_limited_greedy",
            n_group=4,
            topk_group=2,
            routed_scaling_factor=1.5,
            norm_topk_prob=False,
            # DeepSeek-V2's own kind: YaRN whose mscale equals mscale_all_dim (the rope's
            # attention factor is 1; the softmax scale takes mscale_all_dim's factor squared).
            rope_scaling={
                "type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 64,
                "beta_fast": 32,
                "beta_slow": 1,
                "mscale": 0.707,
                "mscale_all_dim": 0.707,
            },
        )
    elif case == "deepseek_v3":
        # MLA with a low-rank q (q_a_proj, q_a_layernorm, q_b_proj), YaRN with DeepSeek's
        # mscale/mscale_all_dim; sigmoid routing with a correction bias, 2 groups of 4 experts
        # of which the best 1 is kept, renormalised and scaled.
        c = common_config(ids, 2, 4, 4, 1e-6, False, 10000.0)
        c.update(
            architectures=["DeepseekV3ForCausalLM"],
            model_type="deepseek_v3",
            hidden_act="silu",
            attention_bias=False,
            q_lora_rank=32,
            kv_lora_rank=32,
            qk_nope_head_dim=32,
            qk_rope_head_dim=16,
            v_head_dim=32,
            n_routed_experts=8,
            num_experts_per_tok=2,
            n_shared_experts=1,
            moe_intermediate_size=32,
            first_k_dense_replace=1,
            topk_method="noaux_tc",
            scoring_func="sigmoid",
            n_group=2,
            topk_group=1,
            routed_scaling_factor=2.5,
            norm_topk_prob=True,
            rope_interleave=True,
            rope_scaling={
                "type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 64,
                "beta_fast": 32,
                "beta_slow": 1,
                "mscale": 1.0,
                "mscale_all_dim": 0.8,
            },
        )
    else:
        raise ValueError(case)
    return c


def nested_gemma_config(text_config):
    text = copy.deepcopy(text_config)
    text.pop("architectures", None)
    return {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "bos_token_id": text["bos_token_id"],
        "eos_token_id": text["eos_token_id"],
        "model_type": "gemma3",
        "pad_token_id": text["pad_token_id"],
        "text_config": text,
        "tie_word_embeddings": True,
        "dtype": "float32",
        "torch_dtype": "float32",
        "vocab_size": text["vocab_size"],
    }


def rope_parameters_config(config):
    c = copy.deepcopy(config)
    theta = c.pop("rope_theta")
    assert c.pop("rope_scaling") is None
    c["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    return c


# ---------------------------------------------------------------------------------------
# Weights


def init_weights(config_dir, config, seed):
    """Random float32 weights with HF names, drawn in sorted-name order."""
    hf_config = AutoConfig.from_pretrained(str(config_dir))
    torch.manual_seed(0)
    skeleton = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
    shapes = {name: tuple(p.shape) for name, p in skeleton.named_parameters()}
    del skeleton
    gemma = config["model_type"].startswith("gemma")
    if config["tie_word_embeddings"]:
        assert "lm_head.weight" not in shapes
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for name in sorted(shapes):
        shape = shapes[name]
        noise = torch.randn(shape, generator=gen, dtype=torch.float32)
        if name.endswith("embed_tokens.weight") or name == "lm_head.weight":
            w = INIT["gemma_embed" if gemma else "embed"] * noise
        elif name == "model.norm.weight" and gemma:
            w = INIT["gemma_final_norm"] + 0.15 * noise
        elif "norm" in name:
            w = 0.15 * noise if gemma else 1.0 + 0.15 * noise
        elif name.endswith(".bias"):
            w = 0.1 * noise
        elif name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            # Stacked experts [E, out, in] (transformers' in-memory layout), or [E, in, out]
            # for gpt_oss.
            assert len(shape) == 3, name
            gain = INIT["out_gain"] if name.endswith("down_proj") else 1.0
            fan_in = shape[1] if config["model_type"] == "gpt_oss" else shape[2]
            w = gain * noise / math.sqrt(fan_in)
        elif name.endswith(("experts.gate_up_proj_bias", "experts.down_proj_bias")):
            w = 0.1 * noise
        elif name.endswith(".self_attn.sinks"):
            # One logit per head beside scores of a few units.
            w = noise
        elif name.endswith((".mlp.gate.weight", ".mlp.router.weight")):
            # The router: logits spread over a few units, so the top k stand apart.
            gain = INIT["deepseek_router_gain"] if config["model_type"].startswith("deepseek") else INIT["router_gain"]
            w = gain * noise / math.sqrt(shape[1])
        else:
            assert len(shape) == 2, name
            gain = INIT["out_gain"] if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0
            w = gain * noise / math.sqrt(shape[1])
        weights[name] = w.contiguous()
    if config["model_type"] == "deepseek_v3":
        # A buffer, not a parameter: drawn after the parameters, non-zero so that it changes
        # which experts are chosen (sigmoid scores lie in 0..1).
        for layer in moe_layers(config):
            e = config["n_routed_experts"]
            weights[f"model.layers.{layer}.mlp.gate.e_score_correction_bias"] = (
                0.2 * torch.randn((e,), generator=gen, dtype=torch.float32)
            ).contiguous()
    return weights


def write_weights(dst, weights, shard=False, prefix=""):
    weights = {prefix + k: v for k, v in weights.items()}
    for old in dst.glob("model*.safetensors*"):
        old.unlink()
    if not shard:
        save_torch(weights, str(dst / "model.safetensors"), metadata={"format": "pt"})
        return
    # Two shards: embeddings and the first layer, then the rest.
    first = {k: v for k, v in weights.items() if "embed_tokens" in k or ".layers.0." in k}
    second = {k: v for k, v in weights.items() if k not in first}
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map = {}
    for fname, part in zip(names, [first, second]):
        save_torch(part, str(dst / fname), metadata={"format": "pt"})
        for k in part:
            weight_map[k] = fname
    total = sum(v.numel() * v.element_size() for v in weights.values())
    write_json(
        dst / "model.safetensors.index.json",
        {"metadata": {"total_size": total}, "weight_map": weight_map},
    )


# ---------------------------------------------------------------------------------------
# Reference runs


def run_hf(model_dir, prompt_ids):
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt_ids]), use_cache=True)
        prompt_logits = out.logits[0].float().numpy().copy()
        cache = out.past_key_values
        picks, rows = [], []
        row = prompt_logits[-1]
        for step in range(N_GREEDY):
            rows.append(row)
            nxt = int(np.argmax(row))
            picks.append(nxt)
            if step == N_GREEDY - 1:
                break
            out = model(input_ids=torch.tensor([[nxt]]), past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            row = out.logits[0, -1].float().numpy().copy()

        cache = None
        decode = []
        for t in prompt_ids:
            out = model(input_ids=torch.tensor([[t]]), past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            decode.append(out.logits[0, -1].float().numpy().copy())
    return {
        "prompt_logits": prompt_logits,
        "decode_logits": np.stack(decode),
        "greedy_ids": picks,
        "margin": float(np.min(greedy_margins(np.stack(rows)))),
    }


def mlx_logits(model, ids, cache):
    out = model(mx.array([ids]), cache=cache)
    out = out.astype(mx.float32)
    mx.eval(out)
    return np.array(out[0])


def run_mlx_model(model, prompt_ids):
    cache = make_prompt_cache(model)
    prompt_logits = mlx_logits(model, prompt_ids, cache)
    picks, rows = [], []
    row = prompt_logits[-1]
    for step in range(N_GREEDY):
        rows.append(row)
        nxt = int(np.argmax(row))
        picks.append(nxt)
        if step == N_GREEDY - 1:
            break
        row = mlx_logits(model, [nxt], cache)[-1]

    cache = make_prompt_cache(model)
    decode = [mlx_logits(model, [t], cache)[-1] for t in prompt_ids]
    return {
        "prompt_logits": prompt_logits,
        "decode_logits": np.stack(decode),
        "greedy_ids": picks,
        "margin": float(np.min(greedy_margins(np.stack(rows)))),
    }


def run_mlx(model_dir, prompt_ids, patch=None):
    model, _ = mlx_load_model(Path(model_dir))
    if patch is not None:
        patch(model)
    return run_mlx_model(model, prompt_ids)


def mlx_short_factors(model):
    """mlx-lm 0.32.2's SuScaledRoPE rotates with the long factors at every length, where
    transformers uses the short ones while the sequence fits original_max_position_embeddings.
    For references within that length, give mlx-lm's ropes the short-factor periods (the
    script then checks it against transformers)."""
    args = model.args
    short = mx.array(args.rope_scaling["short_factor"], dtype=mx.float32)
    for layer in model.layers:
        rope = layer.self_attn.rope
        dims = rope.dim
        rope._freqs = short * (args.rope_theta ** (mx.arange(0, dims, 2, dtype=mx.float32) / dims))


def mlx_yarn_untruncated(model):
    """mlx-lm 0.32.2's YarnRoPE always rounds the correction range outward (transformers'
    `truncate` true); gpt_oss sets `truncate` false. Give mlx-lm's ropes the periods
    transformers computes then (the script then checks it against transformers)."""
    args = model.args
    sc = args.rope_scaling
    assert sc["rope_type"] == "yarn" and sc["truncate"] is False, sc
    base = float(args.rope_theta)
    for layer in model.layers:
        rope = layer.self_attn.rope
        dims = rope.dims

        def correction(rot):
            return dims * math.log(sc["original_max_position_embeddings"] / (rot * 2 * math.pi)) / (2 * math.log(base))

        lo, hi = max(correction(sc["beta_fast"]), 0.0), min(correction(sc["beta_slow"]), dims - 1.0)
        keep = 1.0 - mx.clip((mx.arange(dims // 2, dtype=mx.float32) - lo) / (hi - lo), 0, 1)
        extra = base ** (mx.arange(0, dims, 2, dtype=mx.float32) / dims)
        inter = sc["factor"] * extra
        rope._freqs = (inter * extra) / (inter * keep + extra * (1 - keep))


MLX_PATCH = {"phi3": mlx_short_factors, "gpt_oss": mlx_yarn_untruncated}


def gpt_oss_mlx_layout(weights):
    """gpt_oss's transformers tensors as mlx-lm's converted models hold them:
    `mlp.experts.{gate,up,down}_proj.{weight,bias}` stacked [E, out, in], gate and up taken
    from the alternating columns of transformers' [E, hidden, 2I] `gate_up_proj`. (mlx-lm's own
    sanitize reads OpenAI's [E, 2I, hidden] original layout, not this one.)"""
    out = {}
    for name, w in weights.items():
        p, _, leaf = name.rpartition(".")
        if leaf == "gate_up_proj":
            out[f"{p}.gate_proj.weight"] = w[:, :, 0::2].transpose(1, 2).contiguous()
            out[f"{p}.up_proj.weight"] = w[:, :, 1::2].transpose(1, 2).contiguous()
        elif leaf == "gate_up_proj_bias":
            out[f"{p}.gate_proj.bias"] = w[:, 0::2].contiguous()
            out[f"{p}.up_proj.bias"] = w[:, 1::2].contiguous()
        elif leaf == "down_proj" and p.endswith(".experts"):
            out[f"{p}.down_proj.weight"] = w.transpose(1, 2).contiguous()
        elif leaf == "down_proj_bias":
            out[f"{p}.down_proj.bias"] = w
        else:
            out[name] = w
    return out


def mlx_source(case_dir, config, stored):
    """The folder mlx-lm loads a case from: the case itself, or for gpt_oss a scratch copy
    (outside the fixtures) with mlx-lm's layout."""
    if config["model_type"] != "gpt_oss":
        return case_dir
    d = fresh_dir(Path(tempfile.gettempdir()) / f"lmx-fixtures-{case_dir.name}.mlx")
    save_torch(gpt_oss_mlx_layout(stored), str(d / "model.safetensors"), metadata={"format": "pt"})
    for name in ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]:
        shutil.copyfile(case_dir / name, d / name)
    return d
LONG_CASES = {"phi3"}  # cases with a sequence past the original rope length
LONG_REPEAT = 3  # phi3: copies of the prompt in the sequence longer than the original length


def long_sequence(case_dir, q4_dir, prompt_ids):
    """phi3: logits of one forward pass over a sequence longer than
    original_max_position_embeddings, where transformers switches to the long factors (for
    every position) and mlx-lm, unpatched, agrees with it."""
    ids = list(prompt_ids) * LONG_REPEAT
    with open(case_dir / "config.json") as f:
        assert len(ids) > json.load(f)["original_max_position_embeddings"]
    model = AutoModelForCausalLM.from_pretrained(str(case_dir), dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        hf = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float().numpy().copy()
    mlx_model, _ = mlx_load_model(Path(case_dir))
    mlx = mlx_logits(mlx_model, ids, make_prompt_cache(mlx_model))
    q4_model, _ = mlx_load_model(Path(q4_dir))
    q4 = mlx_logits(q4_model, ids, make_prompt_cache(q4_model))
    d = check_pair(f"{case_dir.name} long HF/mlx", hf, mlx)
    return ids, hf, mlx, q4, d


def quantize_to(src_dir, dst_dir, base_config, per_layer):
    """4-bit affine (group 32) copy of src_dir made by mlx-lm's quantizer."""
    model, loaded_config = mlx_load_model(Path(src_dir))

    def predicate(path, module):
        if path in per_layer:
            return dict(per_layer[path])
        return True

    with contextlib.redirect_stdout(io.StringIO()):
        model, qconfig = mlx_quantize_model(
            model, loaded_config, group_size=32, bits=4, mode="affine", quant_predicate=predicate
        )
    config = copy.deepcopy(base_config)
    config["quantization"] = qconfig["quantization"]
    config["quantization_config"] = qconfig["quantization_config"]
    for path in per_layer:
        assert config["quantization"][path] == per_layer[path], config["quantization"]
    weights = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    dst_dir.mkdir(parents=True, exist_ok=True)
    save_numpy(weights, str(dst_dir / "model.safetensors"), metadata={"format": "mlx"})
    write_json(dst_dir / "config.json", config)
    for name in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]:
        shutil.copyfile(src_dir / name, dst_dir / name)


# ---------------------------------------------------------------------------------------
# Output


def write_reference(dst, case, model_type, seed, prompt_ids, hf, mlx, hf_from=None,
                    extra_json=None, extra_tensors=None, long=None):
    margins = [r["margin"] for r in (hf, mlx) if r is not None]
    ref = {
        "case": case,
        "model_type": model_type,
        "seed": seed,
        "prompt_text": PROMPT_TEXT,
        "prompt_ids": [int(i) for i in prompt_ids],
        "n_greedy": N_GREEDY,
        "hf": None if hf is None else {"greedy_ids": hf["greedy_ids"]},
        "mlx_lm": None if mlx is None else {"greedy_ids": mlx["greedy_ids"]},
        "min_margin": round(min(margins), 6),
    }
    if hf_from is not None:
        ref["hf_from"] = hf_from
    if long is not None:
        ref["long_prompt_ids"] = [int(i) for i in long["ids"]]
    ref.update(extra_json or {})
    write_json(dst / "reference.json", ref)
    tensors = {}
    for key, res in (("hf", hf), ("mlx_lm", mlx)):
        if res is None:
            continue
        for t in ("prompt_logits", "decode_logits"):
            tensors[f"{key}.{t}"] = np.ascontiguousarray(res[t], dtype=np.float32)
        if long is not None and long.get(key) is not None:
            tensors[f"{key}.long_prompt_logits"] = np.ascontiguousarray(long[key], dtype=np.float32)
    tensors.update(extra_tensors or {})
    save_numpy(tensors, str(dst / "reference.safetensors"))


def check_pair(label, a, b, tol=TOLERANCE):
    d = max_abs(a, b)
    assert d <= tol, f"{label}: max |diff| {d} > {tol}"
    return d


BASE_CASES = [
    # case, tokenizer family, sharded weights, per-layer quantization overrides for _q4
    ("llama_tied", "llama", True, {}),
    (
        "llama_rope3",
        "llama",
        False,
        {"model.layers.0.mlp.down_proj": {"group_size": 32, "bits": 8, "mode": "affine"}},
    ),
    ("mistral", "mistral", False, {}),
    ("qwen2", "qwen2", False, {}),
    ("qwen3", "qwen3", False, {}),
    ("gemma3", "gemma", False, {}),
    ("phi3", "mistral", False, {}),
    ("smollm3", "llama", False, {}),
    ("olmo2", "llama", False, {}),
]


def fresh_dir(path):
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


MOE_CASES = [
    # case, tokenizer family, sharded weights, per-layer quantization overrides for _q4
    (
        "qwen3_moe",
        "qwen3",
        False,
        {
            # mlx-lm's own choice for qwen3_moe routers, and one expert stack at 8 bits.
            "model.layers.1.mlp.gate": {"group_size": 64, "bits": 8, "mode": "affine"},
            "model.layers.5.mlp.switch_mlp.down_proj": {"group_size": 32, "bits": 8, "mode": "affine"},
        },
    ),
    ("qwen2_moe", "qwen2", False, {}),
    ("mixtral", "mistral", False, {}),
    (
        "gpt_oss",
        "llama",
        False,
        # mlx-lm's own choice for gpt_oss routers.
        {f"model.layers.{i}.mlp.router": {"group_size": 64, "bits": 8, "mode": "affine"} for i in range(4)},
    ),
    ("deepseek_v2", "llama", False, {}),
    ("deepseek_v3", "llama", False, {}),
]

# Cases built from another case's weights (the second name).
DERIVED_CASES = [
    ("gemma3_nested", "gemma3"),
    ("qwen3_rope_params", "qwen3"),
    ("qwen3_moe_fused", "qwen3_moe"),
    ("qwen2_moe_mlx", "qwen2_moe"),
    ("gpt_oss_mlx", "gpt_oss"),
    ("gpt_oss_mxfp4", "gpt_oss"),
]


def all_case_names():
    names = []
    for case, *_ in BASE_CASES + MOE_CASES:
        names += [case, f"{case}_q4"]
    return names + [d for d, _ in DERIVED_CASES]


def parse_only(argv):
    """The cases named by `--only CASE[,CASE]` (None: every case)."""
    if not argv:
        return None
    if len(argv) != 2 or argv[0] != "--only":
        raise SystemExit("usage: make_fixtures.py [--only CASE[,CASE...]]")
    only = {c for c in argv[1].split(",") if c}
    known = set(all_case_names())
    bad = sorted(only - known)
    if bad:
        raise SystemExit(f"unknown case(s) {bad}; known: {sorted(known)}")
    # A _q4 twin is made with its base case.
    return {c[: -len("_q4")] if c.endswith("_q4") else c for c in only}


# ---------------------------------------------------------------------------------------
# Mixture of experts


def moe_layers(config):
    """Indices of the layers transformers builds as sparse MoE blocks."""
    n = config["num_hidden_layers"]
    if config["model_type"] in ("mixtral", "gpt_oss"):
        return list(range(n))
    if config["model_type"].startswith("deepseek"):
        return [i for i in range(n) if i >= config["first_k_dense_replace"]]
    step = config.get("decoder_sparse_step", 1)
    only = config.get("mlp_only_layers") or []
    return [i for i in range(n) if (i + 1) % step == 0 and i not in only]


def original_layout(config, weights):
    """Transformers' in-memory stacked experts as the per-expert tensors save_pretrained
    writes (checked against save_pretrained itself in check_original_layout). gpt_oss's are
    written stacked, as they are."""
    if config["model_type"] == "gpt_oss":
        return dict(weights)
    mixtral = config["model_type"] == "mixtral"
    names = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
    block = "block_sparse_moe" if mixtral else "mlp"
    out = {}
    for name, w in weights.items():
        if name.endswith(".mlp.experts.gate_up_proj"):
            p = name[: -len(".mlp.experts.gate_up_proj")]
            inter = w.shape[1] // 2
            for e in range(w.shape[0]):
                out[f"{p}.{block}.experts.{e}.{names[0]}.weight"] = w[e, :inter].contiguous()
                out[f"{p}.{block}.experts.{e}.{names[1]}.weight"] = w[e, inter:].contiguous()
        elif name.endswith(".mlp.experts.down_proj"):
            p = name[: -len(".mlp.experts.down_proj")]
            for e in range(w.shape[0]):
                out[f"{p}.{block}.experts.{e}.{names[2]}.weight"] = w[e].contiguous()
        elif mixtral and ".mlp.gate." in name:
            out[name.replace(".mlp.gate.", ".block_sparse_moe.gate.")] = w
        else:
            out[name] = w
    return out


def check_original_layout(case_dir, weights, written):
    """What transformers' save_pretrained writes for these weights equals `written`."""
    hf_config = AutoConfig.from_pretrained(str(case_dir))
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    tmp = case_dir.parent / f".{case_dir.name}.save_pretrained"
    if tmp.exists():
        shutil.rmtree(tmp)
    with contextlib.redirect_stderr(io.StringIO()):
        model.save_pretrained(str(tmp))
    saved = {}
    for f in sorted(tmp.glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():
                saved[k] = fh.get_tensor(k)
    shutil.rmtree(tmp)
    if config_tied(case_dir):
        saved.pop("lm_head.weight", None)
    assert sorted(saved) == sorted(written), sorted(set(saved) ^ set(written))
    for k, v in written.items():
        assert torch.equal(saved[k], v), k


def config_tied(case_dir):
    return json.loads((case_dir / "config.json").read_text())["tie_word_embeddings"]


def deepseek_routing(model_dir, config, ids):
    """hf_routing for DeepSeek's routers, read from each router module's own output (experts
    and weights), with the margin of the choice the router makes: at each step (the groups
    kept, then the experts among them), the smallest gap between the last score kept and
    the first one dropped."""
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    layers = moe_layers(config)
    seen = {}
    hooks = []
    for layer in layers:
        gate = model.model.layers[layer].mlp.gate
        hooks.append(gate.register_forward_hook(lambda m, i, o, layer=layer: seen.__setitem__(layer, o)))
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]), use_cache=False)
    for h in hooks:
        h.remove()
    k, e = config["num_experts_per_tok"], config["n_routed_experts"]
    groups, keep = config["n_group"], config["topk_group"]
    v3 = config["model_type"] == "deepseek_v3"
    routes, margin = {}, math.inf
    for layer in layers:
        logits, w, idx = seen[layer]
        if v3:
            bias = model.model.layers[layer].mlp.gate.e_score_correction_bias
            choice = logits.float().sigmoid() + bias
            group = choice.view(-1, groups, e // groups).topk(2, dim=-1).values.sum(-1)
        else:
            # The softmax keeps the logits' order: the margins are taken on the logits.
            choice = logits.float()
            group = choice.view(-1, groups, e // groups).max(dim=-1).values
        g = torch.sort(group, dim=-1, descending=True).values
        margin = min(margin, float((g[:, keep - 1] - g[:, keep]).min()))
        top_groups = torch.topk(group, keep, dim=-1).indices
        mask = torch.zeros_like(group).scatter_(1, top_groups, 1).repeat_interleave(e // groups, dim=1)
        allowed = choice.masked_fill(mask == 0, -math.inf)
        s = torch.sort(allowed, dim=-1, descending=True).values
        gap = s[:, k - 1] - s[:, k]
        margin = min(margin, float(gap.min()))
        order = torch.argsort(idx, dim=-1)
        routes[layer] = (
            torch.gather(idx, 1, order).numpy().astype(np.int32),
            torch.gather(w, 1, order).numpy().astype(np.float32),
        )
    return routes, margin


def hf_routing(model_dir, config, ids):
    """Per MoE layer: the router's chosen experts (ascending) and weights [T, k], for one
    forward pass over `ids`, and the smallest k-th minus (k+1)-th router logit."""
    if config["model_type"].startswith("deepseek"):
        return deepseek_routing(model_dir, config, ids)
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_router_logits=True, use_cache=False)
    layers = moe_layers(config)
    logits = out.router_logits
    assert len(logits) == len(layers), (len(logits), layers)
    k = config["num_experts_per_tok"]
    renorm = config["model_type"] == "mixtral" or config.get("norm_topk_prob", False)
    routes, margin = {}, math.inf
    for layer, lg in zip(layers, logits):
        top_logits = torch.topk(lg.float(), k + 1, dim=-1).values
        margin = min(margin, float((top_logits[:, k - 1] - top_logits[:, k]).min()))
        if config["model_type"] == "gpt_oss":
            # The top k logits, softmaxed among themselves.
            top, e = torch.topk(lg.float(), k, dim=-1)
            w = torch.softmax(top, dim=-1)
        else:
            probs = torch.softmax(lg.float(), dim=-1)
            w, e = torch.topk(probs, k, dim=-1)
        if renorm:
            w = w / w.sum(dim=-1, keepdim=True)
        order = torch.argsort(e, dim=-1)
        routes[layer] = (
            torch.gather(e, 1, order).numpy().astype(np.int32),
            torch.gather(w, 1, order).numpy().astype(np.float32),
        )
    return routes, margin


# ---------------------------------------------------------------------------------------
# Building the cases


def build_case(case, family, shard, per_layer, tokenizers, stats, results):
    tok_bundle = tokenizers[family]
    ids = tok_bundle[2]
    config = config_for(case, ids)
    moe = "num_experts_per_tok" in config
    # mlx-lm 0.32.2's mixtral ignores sliding_window: the windowed case gets HF references
    # only, and its _q4 twin (whose reference only mlx-lm gives) has no window.
    windowless_mlx = config["model_type"] == "mixtral" and config.get("sliding_window")
    case_dir = fresh_dir(FIXTURES / case)
    q4_dir = FIXTURES / f"{case}_q4"
    write_json(case_dir / "config.json", config)
    write_tokenizer_files(case_dir, tok_bundle)
    hf_tok = AutoTokenizer.from_pretrained(str(case_dir))
    prompt_ids = [int(i) for i in hf_tok(PROMPT_TEXT)["input_ids"]]
    assert 20 <= len(prompt_ids) <= 40, (case, len(prompt_ids))
    # phi3: mlx-lm's ropes given transformers' short factors (see mlx_short_factors).
    patch = MLX_PATCH.get(case)
    q4_config = config
    if windowless_mlx:
        assert len(prompt_ids) > config["sliding_window"], "the window must hide keys"
        q4_config = dict(config, sliding_window=None)

    for seed in range(MAX_SEEDS):
        weights = init_weights(case_dir, config, seed)
        stored = original_layout(config, weights) if moe else weights
        write_weights(case_dir, stored, shard=shard)
        hf = run_hf(case_dir, prompt_ids)
        if hf["margin"] < MIN_MARGIN or len(set(hf["greedy_ids"])) < MIN_DISTINCT:
            print(f"  {case}: seed {seed} HF margin {hf['margin']:.4f}, "
                  f"{len(set(hf['greedy_ids']))} distinct, next seed")
            continue
        if moe:
            routes, router_margin = hf_routing(case_dir, config, prompt_ids + hf["greedy_ids"][:-1])
            if router_margin < MIN_ROUTER_MARGIN:
                print(f"  {case}: seed {seed} router margin {router_margin:.5f}, next seed")
                continue
        src = mlx_source(case_dir, config, stored)
        mlx = run_mlx(src, prompt_ids, patch)
        if not windowless_mlx:
            # Float noise between the two (checked below) grows with the weights a seed
            # draws; one past the tolerance moves on, as a thin margin does.
            noise = max(max_abs(hf[t], mlx[t]) for t in ("prompt_logits", "decode_logits"))
            if noise > TOLERANCE:
                print(f"  {case}: seed {seed} HF/mlx max |diff| {noise:.2e}, next seed")
                continue
        fresh_dir(q4_dir)
        quantize_to(src, q4_dir, q4_config, per_layer)
        q4 = run_mlx(q4_dir, prompt_ids, patch)
        if q4["margin"] < MIN_MARGIN or len(set(q4["greedy_ids"])) < MIN_DISTINCT:
            print(f"  {case}: seed {seed} q4 margin {q4['margin']:.4f}, "
                  f"{len(set(q4['greedy_ids']))} distinct, next seed")
            continue
        break
    else:
        raise RuntimeError(f"{case}: no seed below {MAX_SEEDS} gives margins >= {MIN_MARGIN}")

    s = {
        "hf_prompt_vs_decode": check_pair(f"{case} HF prompt/decode", hf["prompt_logits"], hf["decode_logits"]),
        "mlx_prompt_vs_decode": check_pair(f"{case} mlx prompt/decode", mlx["prompt_logits"], mlx["decode_logits"]),
    }
    extra_json, extra_tensors = None, None
    if moe:
        check_original_layout(case_dir, weights, stored)
        # The routing of the prompt, as transformers chooses it.
        routes, _ = hf_routing(case_dir, config, prompt_ids)
        extra_json = {"router": {"layers": sorted(routes), "min_margin": round(router_margin, 6)}}
        extra_tensors = {}
        for layer, (e, w) in routes.items():
            extra_tensors[f"hf.router.{layer}.experts"] = e
            extra_tensors[f"hf.router.{layer}.weights"] = w
    if windowless_mlx:
        # Positions before the window fills see every key either way: there the two agree.
        w = config["sliding_window"]
        s["hf_vs_mlx_prompt_before_window"] = check_pair(
            f"{case} HF/mlx prompt (first {w})", hf["prompt_logits"][:w], mlx["prompt_logits"][:w]
        )
        mlx_ref = None
    else:
        s["hf_vs_mlx_prompt"] = check_pair(f"{case} HF/mlx prompt", hf["prompt_logits"], mlx["prompt_logits"])
        s["hf_vs_mlx_decode"] = check_pair(f"{case} HF/mlx decode", hf["decode_logits"], mlx["decode_logits"])
        assert hf["greedy_ids"] == mlx["greedy_ids"], (case, hf["greedy_ids"], mlx["greedy_ids"])
        mlx_ref = mlx
    long = long_q4 = None
    if case in LONG_CASES:
        # Unpatched mlx-lm against transformers within the original length: not stored,
        # reported (the two choose different rope factors there).
        unpatched = run_mlx(case_dir, prompt_ids)
        s["mlx_lm_unpatched_vs_hf_unstored"] = max_abs(unpatched["prompt_logits"], hf["prompt_logits"])
        long_ids, long_hf, long_mlx, long_q4_logits, s["hf_vs_mlx_long_prompt"] = long_sequence(
            case_dir, q4_dir, prompt_ids
        )
        long = {"ids": long_ids, "hf": long_hf, "mlx_lm": long_mlx}
        long_q4 = {"ids": long_ids, "mlx_lm": long_q4_logits}
    stats[case] = s
    results[case] = {"seed": seed, "hf": hf, "mlx": mlx, "prompt_ids": prompt_ids}
    write_reference(case_dir, case, config["model_type"], seed, prompt_ids, hf, mlx_ref,
                    extra_json=extra_json, extra_tensors=extra_tensors, long=long)
    write_json(case_dir / "tokenizer_reference.json", tokenizer_reference(case_dir, family))

    q4_case = f"{case}_q4"
    stats[q4_case] = {
        "mlx_prompt_vs_decode": check_pair(f"{q4_case} mlx prompt/decode", q4["prompt_logits"], q4["decode_logits"]),
    }
    write_reference(q4_dir, q4_case, config["model_type"], seed, prompt_ids, None, q4, long=long_q4)
    write_json(q4_dir / "tokenizer_reference.json", tokenizer_reference(q4_dir, family))
    extra = f", router margin {router_margin:.4f}" if moe else ""
    print(f"{case}: seed {seed}, L={len(prompt_ids)}, vocab {ids['vocab']}, "
          f"margin {min(hf['margin'], mlx['margin']):.3f} (q4 {q4['margin']:.3f}){extra}, "
          + ", ".join(f"{k} {fmt(v)}" for k, v in s.items()))
    results[case]["weights"] = weights
    results[case]["stored"] = stored
    results[case]["config"] = config


def build_gemma3_nested(tokenizers, stats, results):
    # gemma3 as a multimodal-style checkpoint: nested text_config, language_model. prefix.
    g = results["gemma3"]
    nested_dir = fresh_dir(FIXTURES / "gemma3_nested")
    write_json(nested_dir / "config.json", nested_gemma_config(g["config"]))
    write_tokenizer_files(nested_dir, tokenizers["gemma"])
    write_weights(nested_dir, g["weights"], prefix="language_model.")
    nested = run_mlx(nested_dir, g["prompt_ids"])
    stats["gemma3_nested"] = {
        "hf_vs_mlx_prompt": check_pair("gemma3_nested HF/mlx prompt", g["hf"]["prompt_logits"], nested["prompt_logits"]),
        "hf_vs_mlx_decode": check_pair("gemma3_nested HF/mlx decode", g["hf"]["decode_logits"], nested["decode_logits"]),
        "mlx_prompt_vs_decode": check_pair("gemma3_nested mlx prompt/decode", nested["prompt_logits"], nested["decode_logits"]),
        "mlx_vs_gemma3_mlx": check_pair("gemma3_nested mlx/gemma3 mlx", g["mlx"]["prompt_logits"], nested["prompt_logits"], 0.0),
    }
    assert nested["greedy_ids"] == g["hf"]["greedy_ids"]
    write_reference(nested_dir, "gemma3_nested", "gemma3", g["seed"], g["prompt_ids"], g["hf"], nested, hf_from="gemma3")
    write_json(nested_dir / "tokenizer_reference.json", tokenizer_reference(nested_dir, "gemma"))
    print("gemma3_nested: " + ", ".join(f"{k} {fmt(v)}" for k, v in stats["gemma3_nested"].items()))


def build_qwen3_rope_params(tokenizers, stats, results):
    # qwen3 with a transformers-5 style rope_parameters block instead of rope_theta.
    q = results["qwen3"]
    rp_dir = fresh_dir(FIXTURES / "qwen3_rope_params")
    write_json(rp_dir / "config.json", rope_parameters_config(q["config"]))
    write_tokenizer_files(rp_dir, tokenizers["qwen3"])
    write_weights(rp_dir, q["weights"])
    rp = run_hf(rp_dir, q["prompt_ids"])
    stats["qwen3_rope_params"] = {
        "hf_prompt_vs_decode": check_pair("qwen3_rope_params HF prompt/decode", rp["prompt_logits"], rp["decode_logits"]),
        "hf_vs_qwen3_hf": max(
            check_pair("qwen3_rope_params/qwen3 HF prompt", rp["prompt_logits"], q["hf"]["prompt_logits"], 0.0),
            check_pair("qwen3_rope_params/qwen3 HF decode", rp["decode_logits"], q["hf"]["decode_logits"], 0.0),
        ),
    }
    assert rp["greedy_ids"] == q["hf"]["greedy_ids"]
    # Not stored (the brief asks for no mlx-lm reference here), only reported.
    rp_mlx = run_mlx(rp_dir, q["prompt_ids"])
    stats["qwen3_rope_params"]["mlx_lm_vs_hf_unstored"] = max_abs(rp_mlx["prompt_logits"], rp["prompt_logits"])
    write_reference(rp_dir, "qwen3_rope_params", "qwen3", q["seed"], q["prompt_ids"], rp, None)
    write_json(rp_dir / "tokenizer_reference.json", tokenizer_reference(rp_dir, "qwen3"))
    print("qwen3_rope_params: " + ", ".join(f"{k} {fmt(v)}" for k, v in stats["qwen3_rope_params"].items()))


def build_qwen3_moe_fused(tokenizers, stats, results):
    # qwen3_moe's weights in transformers' in-memory layout (stacked experts.gate_up_proj and
    # experts.down_proj), as save_pretrained(save_original_format=False) writes them.
    q = results["qwen3_moe"]
    d = fresh_dir(FIXTURES / "qwen3_moe_fused")
    write_json(d / "config.json", q["config"])
    write_tokenizer_files(d, tokenizers["qwen3"])
    write_weights(d, q["weights"])
    hf = run_hf(d, q["prompt_ids"])
    stats["qwen3_moe_fused"] = {
        "hf_prompt_vs_decode": check_pair("qwen3_moe_fused HF prompt/decode", hf["prompt_logits"], hf["decode_logits"]),
        "hf_vs_qwen3_moe_hf": max(
            # Not bit-equal: the stacked tensors are laid out differently in memory, and
            # torch's kernels sum in another order.
            check_pair("qwen3_moe_fused/qwen3_moe HF prompt", hf["prompt_logits"], q["hf"]["prompt_logits"]),
            check_pair("qwen3_moe_fused/qwen3_moe HF decode", hf["decode_logits"], q["hf"]["decode_logits"]),
        ),
    }
    assert hf["greedy_ids"] == q["hf"]["greedy_ids"]
    write_reference(d, "qwen3_moe_fused", "qwen3_moe", q["seed"], q["prompt_ids"], hf, None)
    write_json(d / "tokenizer_reference.json", tokenizer_reference(d, "qwen3"))
    print("qwen3_moe_fused: " + ", ".join(f"{k} {fmt(v)}" for k, v in stats["qwen3_moe_fused"].items()))


def build_qwen2_moe_mlx(tokenizers, stats, results):
    # qwen2_moe's weights as mlx-lm holds them once loaded: dense experts stacked under
    # switch_mlp (what saving an unquantized mlx-lm model writes).
    q = results["qwen2_moe"]
    src = FIXTURES / "qwen2_moe"
    d = fresh_dir(FIXTURES / "qwen2_moe_mlx")
    model, _ = mlx_load_model(src)
    weights = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    assert any(".switch_mlp." in k for k in weights), sorted(weights)
    save_numpy(weights, str(d / "model.safetensors"), metadata={"format": "mlx"})
    write_json(d / "config.json", q["config"])
    write_tokenizer_files(d, tokenizers["qwen2"])
    mlx = run_mlx(d, q["prompt_ids"])
    stats["qwen2_moe_mlx"] = {
        "mlx_prompt_vs_decode": check_pair("qwen2_moe_mlx mlx prompt/decode", mlx["prompt_logits"], mlx["decode_logits"]),
        "hf_vs_mlx_prompt": check_pair("qwen2_moe_mlx HF/mlx prompt", q["hf"]["prompt_logits"], mlx["prompt_logits"]),
        "hf_vs_mlx_decode": check_pair("qwen2_moe_mlx HF/mlx decode", q["hf"]["decode_logits"], mlx["decode_logits"]),
    }
    assert mlx["greedy_ids"] == q["hf"]["greedy_ids"]
    write_reference(d, "qwen2_moe_mlx", "qwen2_moe", q["seed"], q["prompt_ids"], q["hf"], mlx, hf_from="qwen2_moe")
    write_json(d / "tokenizer_reference.json", tokenizer_reference(d, "qwen2"))
    print("qwen2_moe_mlx: " + ", ".join(f"{k} {fmt(v)}" for k, v in stats["qwen2_moe_mlx"].items()))


def build_gpt_oss_mlx(tokenizers, stats, results):
    # gpt_oss's weights as mlx-lm holds them once converted: dense experts stacked under
    # mlp.experts.{gate,up,down}_proj with their biases (what saving an unquantized mlx-lm
    # model writes).
    q = results["gpt_oss"]
    src = mlx_source(FIXTURES / "gpt_oss", q["config"], q["stored"])
    d = fresh_dir(FIXTURES / "gpt_oss_mlx")
    model, _ = mlx_load_model(src)
    weights = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    assert "model.layers.0.mlp.experts.gate_proj.bias" in weights, sorted(weights)
    save_numpy(weights, str(d / "model.safetensors"), metadata={"format": "mlx"})
    write_json(d / "config.json", q["config"])
    write_tokenizer_files(d, tokenizers["llama"])
    mlx = run_mlx(d, q["prompt_ids"], mlx_yarn_untruncated)
    stats["gpt_oss_mlx"] = {
        "mlx_prompt_vs_decode": check_pair("gpt_oss_mlx mlx prompt/decode", mlx["prompt_logits"], mlx["decode_logits"]),
        "hf_vs_mlx_prompt": check_pair("gpt_oss_mlx HF/mlx prompt", q["hf"]["prompt_logits"], mlx["prompt_logits"]),
        "hf_vs_mlx_decode": check_pair("gpt_oss_mlx HF/mlx decode", q["hf"]["decode_logits"], mlx["decode_logits"]),
    }
    assert mlx["greedy_ids"] == q["hf"]["greedy_ids"]
    write_reference(d, "gpt_oss_mlx", "gpt_oss", q["seed"], q["prompt_ids"], q["hf"], mlx, hf_from="gpt_oss")
    write_json(d / "tokenizer_reference.json", tokenizer_reference(d, "llama"))
    print("gpt_oss_mlx: " + ", ".join(f"{k} {fmt(v)}" for k, v in stats["gpt_oss_mlx"].items()))


def build_gpt_oss_mxfp4(tokenizers, stats, results):
    # gpt_oss's experts in MXFP4 (mlx-lm's quantizer, mode "mxfp4": group 32, uint8 scales,
    # no biases), its routers at 8 bits and every other layer 4-bit affine, as the
    # quantization config's per-layer entries say.
    q = results["gpt_oss"]
    src = mlx_source(FIXTURES / "gpt_oss", q["config"], q["stored"])
    d = fresh_dir(FIXTURES / "gpt_oss_mxfp4")
    per_layer = {}
    for i in range(q["config"]["num_hidden_layers"]):
        per_layer[f"model.layers.{i}.mlp.router"] = {"group_size": 64, "bits": 8, "mode": "affine"}
        for n in ("gate_proj", "up_proj", "down_proj"):
            per_layer[f"model.layers.{i}.mlp.experts.{n}"] = {"group_size": 32, "bits": 4, "mode": "mxfp4"}
    quantize_to(src, d, q["config"], per_layer)
    mlx = run_mlx(d, q["prompt_ids"], mlx_yarn_untruncated)
    assert mlx["margin"] >= MIN_MARGIN and len(set(mlx["greedy_ids"])) >= MIN_DISTINCT, mlx["margin"]
    stats["gpt_oss_mxfp4"] = {
        "mlx_prompt_vs_decode": check_pair("gpt_oss_mxfp4 mlx prompt/decode", mlx["prompt_logits"], mlx["decode_logits"]),
    }
    write_reference(d, "gpt_oss_mxfp4", "gpt_oss", q["seed"], q["prompt_ids"], None, mlx)
    write_json(d / "tokenizer_reference.json", tokenizer_reference(d, "llama"))
    print(f"gpt_oss_mxfp4: margin {mlx['margin']:.3f}, " + ", ".join(f"{k} {fmt(v)}" for k, v in stats["gpt_oss_mxfp4"].items()))


DERIVED_BUILDERS = {
    "gemma3_nested": build_gemma3_nested,
    "qwen3_rope_params": build_qwen3_rope_params,
    "qwen3_moe_fused": build_qwen3_moe_fused,
    "qwen2_moe_mlx": build_qwen2_moe_mlx,
    "gpt_oss_mlx": build_gpt_oss_mlx,
    "gpt_oss_mxfp4": build_gpt_oss_mxfp4,
}


def main():
    t0 = time.time()
    only = parse_only(sys.argv[1:])
    FIXTURES.mkdir(parents=True, exist_ok=True)
    primary = [c for c in BASE_CASES + MOE_CASES if only is None or c[0] in only]
    derived = [(d, base) for d, base in DERIVED_CASES if only is None or d in only]
    built = {c[0] for c in primary}
    for d, base in derived:
        if base not in built:
            raise SystemExit(f"{d} is made from {base}'s weights: run --only {base},{d}")
    families = {c[1] for c in primary}
    tokenizers = {f: build_tokenizer(f) for f in ["llama", "mistral", "qwen2", "qwen3", "gemma"] if f in families}
    stats = {}  # case -> dict of max differences
    results = {}
    for case, family, shard, per_layer in primary:
        build_case(case, family, shard, per_layer, tokenizers, stats, results)
    for d, _ in derived:
        DERIVED_BUILDERS[d](tokenizers, stats, results)
    write_readme(stats, results)
    print(f"done in {time.time() - t0:.1f}s")


def previous_rows():
    """The difference table's rows of the README as it is, by case (kept for the cases a
    `--only` run does not rebuild)."""
    path = FIXTURES / "README.md"
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    head = "| case | max abs HF − mlx-lm | max abs prompt − decode |"
    if head not in text:
        return {}
    rows = {}
    for line in text.split(head, 1)[1].splitlines():
        if line.startswith("| `"):
            rows[line.split("`")[1]] = line
    return rows


def write_readme(stats, results):
    by_case = previous_rows()
    for case, s in stats.items():
        hf_mlx = max([v for k, v in s.items() if k.startswith("hf_vs_mlx")], default=None)
        pd = max([v for k, v in s.items() if k.endswith("prompt_vs_decode")], default=None)
        by_case[case] = (
            f"| `{case}` | {fmt(hf_mlx) if hf_mlx is not None else '—'} | {fmt(pd) if pd is not None else '—'} |"
        )
    # The order a whole run writes them in.
    order = []
    for case, *_ in BASE_CASES + MOE_CASES:
        order += [case, f"{case}_q4"]
    order += [d for d, _ in DERIVED_CASES]
    table = "\n".join(by_case[c] for c in order if c in by_case)
    text = f"""# Test fixtures

Generated by `scripts/make_fixtures.py` (run `make references`, which first creates
`.venv-ref` with torch 2.9.1, transformers 5.23.0, mlx[cpu]/mlx-lm 0.32.2). Do not edit
by hand; a second run reproduces the same bytes on the same machine.

Every folder is one tiny random-weight float32 checkpoint (hidden size 64, intermediate
128, vocabulary = tokenizer size, at most 512) with a byte-level BPE tokenizer trained by
the script on its own English text:

| case | architecture | notes |
| --- | --- | --- |
| `llama_tied` | llama | tied embeddings, head_dim implicit (16), weights in two shards + index |
| `llama_rope3` | llama | head_dim 32, attention and MLP biases, llama3 rope scaling, untied |
| `mistral` | mistral | 1 KV head, head_dim 16, sliding_window null, untied |
| `qwen2` | qwen2 | q/k/v biases, head_dim implicit (16), tied |
| `qwen3` | qwen3 | head_dim 32, q_norm/k_norm, tied |
| `gemma3` | gemma3_text | 6 layers, sliding window 8, every 3rd layer global, query_pre_attn_scalar 24 |
| `gemma3_nested` | gemma3 | `gemma3` weights under `language_model.`, config nested in `text_config` |
| `qwen3_rope_params` | qwen3 | `qwen3` weights, config with `rope_parameters` instead of `rope_theta` |
| `phi3` | phi3 | fused `qkv_proj` and `gate_up_proj`, partial_rotary_factor 0.75, LongRoPE (original length 64 of 256), untied |
| `smollm3` | smollm3 | 4 layers, `no_rope_layers` [1, 0, 1, 0] (layers 1 and 3 without rope), tied |
| `olmo2` | olmo2 | post-norms, q/k norms over the whole projection (64 and 32 wide), untied |
| `qwen3_moe` | qwen3_moe | 6 layers, 8 experts of width 32, top 2 without renormalising (`norm_topk_prob` false), sparse every 2nd layer (`decoder_sparse_step` 2) but layer 3 (`mlp_only_layers`): layers 1 and 5 are MoE; per-expert tensors as `save_pretrained` writes them; tied |
| `qwen2_moe` | qwen2_moe | 8 experts of width 32, top 2, a shared expert of width 96 with its sigmoid gate, q/k/v biases, untied |
| `mixtral` | mixtral | 4 experts of width 64, top 2 (renormalised), sliding window {MIXTRAL_WINDOW} on every layer, `block_sparse_moe.experts.N.w1/w2/w3`, untied |
| `gpt_oss` | gpt_oss | 4 layers (4 heads of 32, 2 KV heads) alternating sliding (window {GPT_OSS_WINDOW}) and full, a sink logit per head, q/k/v/o biases, YaRN (factor 32, original length 4096, `truncate` false), 8 experts of width 64 with biases, top 2 of the router's logits (with its bias) softmaxed, clamped SwiGLU; stacked `mlp.experts.gate_up_proj` [E, hidden, 2I] (gate and up columns alternating), as `save_pretrained` writes it; untied |
| `deepseek_v2` | deepseek_v2 | 2 layers; multi-head latent attention with a direct `q_proj` (`q_lora_rank` null), kv_lora_rank 32, qk_nope 32, qk_rope 16, v 32; YaRN (factor 4, `mscale` = `mscale_all_dim` 0.707); layer 0 dense (`first_k_dense_replace` 1), layer 1 8 experts of width 32 plus 1 shared expert, softmax scores, `group_limited_greedy`: top 3 from the best 2 of 4 groups, `routed_scaling_factor` 1.5; untied |
| `deepseek_v3` | deepseek_v3 | 2 layers; latent attention with a low-rank q (`q_lora_rank` 32: `q_a_proj`, `q_a_layernorm`, `q_b_proj`), interleaved rope, YaRN (factor 4, `mscale` 1, `mscale_all_dim` 0.8: the rope's attention factor is not 1); layer 1 8 experts plus 1 shared, sigmoid scores with a random non-zero `e_score_correction_bias`, top 2 from the best 1 of 2 groups (group score: sum of its two best), renormalised, `routed_scaling_factor` 2.5; untied. `deepseek_v3_q4` is in mlx-lm's layout, `kv_b_proj` split into per-head `embed_q` and `unembed_out` (quantized) |
| `qwen3_moe_fused` | qwen3_moe | `qwen3_moe` weights in transformers' in-memory layout (`mlp.experts.gate_up_proj` [E, 2I, hidden], `mlp.experts.down_proj`), as `save_pretrained(save_original_format=False)` writes them |
| `qwen2_moe_mlx` | qwen2_moe | `qwen2_moe` weights as mlx-lm holds them: dense experts stacked in `mlp.switch_mlp.{{gate,up,down}}_proj` |
| `gpt_oss_mlx` | gpt_oss | `gpt_oss` weights as mlx-lm holds them: dense experts stacked in `mlp.experts.{{gate,up,down}}_proj` [E, out, in] with `.bias` |
| `gpt_oss_mxfp4` | gpt_oss | `gpt_oss` quantized by mlx-lm with its experts in MXFP4 (mode `mxfp4`: group 32, uint8 scales, no biases), routers 8-bit affine (group 64), everything else 4-bit affine (group 32); mlx-lm references only |
| `<case>_q4` | | mlx-lm 4-bit affine quantization (group 32) of the fifteen base cases; `llama_rope3_q4` keeps `model.layers.0.mlp.down_proj` at 8 bits; `qwen3_moe_q4` keeps layer 1's router (`mlp.gate`) at 8 bits, group 64 (mlx-lm's own choice for qwen3_moe) and layer 5's stacked `switch_mlp.down_proj` at 8 bits; `gpt_oss_q4` keeps every router (`mlp.router`) at 8 bits, group 64 (mlx-lm's own choice), its experts in mlx-lm's `mlp.experts.{{gate,up,down}}_proj` |

Files in each folder:

- `config.json`, `model.safetensors` (or shards + `model.safetensors.index.json`),
  `tokenizer.json`, `tokenizer_config.json`, `generation_config.json`.
- `reference.json`: `case`, `model_type`, `seed`, `prompt_text`, `prompt_ids` (with BOS where
  the family adds one), `n_greedy` (32), `hf` / `mlx_lm` (`{{"greedy_ids": [...]}}` or null),
  optional `hf_from`, `min_margin` (smallest top-1 minus top-2 logit along the greedy path),
  and for `phi3`/`phi3_q4` `long_prompt_ids` ({LONG_REPEAT} copies of the prompt, longer than
  original_max_position_embeddings).
  Greedy decoding uses a KV cache and does not stop at EOS.
- `reference.safetensors`: float32 `[L, V]` tensors `hf.prompt_logits`, `hf.decode_logits`,
  `mlx_lm.prompt_logits`, `mlx_lm.decode_logits` (one forward pass over the prompt, and the
  same positions fed one token at a time through the cache); a source that is null has none.
  `phi3` also has `hf.long_prompt_logits` and `mlx_lm.long_prompt_logits` (one pass over
  `long_prompt_ids`), `phi3_q4` `mlx_lm.long_prompt_logits`.
  The six MoE base cases add, per MoE layer N, `hf.router.N.experts` (int32 `[L, k]`, each
  row ascending) and `hf.router.N.weights` (float32 `[L, k]`, the same order): the experts
  transformers' router picks for each prompt position and their weights; `reference.json`
  then has `router` (`layers`, and `min_margin`: the smallest k-th minus (k+1)-th router
  logit over the prompt and the greedy path, at least {MIN_ROUTER_MARGIN:g}; for the DeepSeek
  cases the smallest gap at either step of the choice, the kept groups' and the experts',
  measured on what the router compares: logits for `deepseek_v2`, sigmoid scores plus the
  correction bias for `deepseek_v3`). The DeepSeek routers' experts and weights are read from
  the router modules' own outputs; on the prompt, the group limit changes the choice of 10 of
  the 23 positions of `deepseek_v2`, and the correction bias and groups 15 of 23 of
  `deepseek_v3`'s against a plain top k of the scores.
- `tokenizer_reference.json`: `encode` (`text`, `ids_with_special`, `ids_plain`), `decode`
  (`ids`, `skip_special`, `text`) and `chat` (`messages`, `add_generation_prompt`, `extra`,
  `text`, `ids`) as transformers gives them.

HF references come from transformers (float32, CPU, eager attention); mlx-lm references
from mlx-lm on the CPU. `gemma3_nested` copies its HF references from `gemma3`
(`"hf_from": "gemma3"`); `qwen3_rope_params` has HF references only, checked equal to
`qwen3`'s; `_q4` cases have mlx-lm references only.

Notes:

- `gemma3_nested`: mlx-lm's `gemma3` model reads `vocab_size` from the top level of
  config.json (its default is 262208 and it overrides `text_config`), so both carry it.
- `qwen3_rope_params`: mlx-lm 0.32.2's `qwen3` model does read `rope_parameters`; the script
  checks that its logits match HF there, but stores no mlx-lm reference (`"mlx_lm": null`).
- `phi3`: transformers rotates with the short factors while the sequence fits
  original_max_position_embeddings and with the long ones (for every position) past it;
  mlx-lm 0.32.2 always uses the long ones. The prompt and greedy references of `phi3` and
  `phi3_q4` (within the original length) come from mlx-lm with its ropes given the
  short-factor periods, checked against transformers; the long-sequence references from
  mlx-lm as it is, checked against transformers too.
- `mixtral`: mlx-lm 0.32.2's `mixtral` model ignores `sliding_window`, so the case has HF
  references only (the script checks mlx-lm against HF on the first {MIXTRAL_WINDOW} prompt
  positions, where the window hides nothing), and `mixtral_q4`, whose reference only mlx-lm
  gives, has `sliding_window` null. mlx-lm's `qwen2_moe` ignores `norm_topk_prob`,
  `decoder_sparse_step` and `mlp_only_layers`, so `qwen2_moe` keeps their defaults;
  `qwen3_moe` (which mlx-lm reads fully) sets them.
- `gpt_oss`: mlx-lm 0.32.2's YaRN always rounds the correction range (transformers'
  `truncate` true), so its ropes are given transformers' periods for `truncate` false (as
  for `phi3`, checked against transformers); mlx-lm runs the weights converted to its own
  layout (its sanitize expects OpenAI's [E, 2I, hidden] experts, not transformers').
- `kimi_k2` has no fixture of its own: transformers 5.23 has no class for it and mlx-lm maps it
  onto `deepseek_v3`; `tests/model_parity.rs` loads a copy of `deepseek_v3` with `model_type`
  `kimi_k2` and compares it with `deepseek_v3`'s transformers references.
- The MoE base cases are written as transformers' `save_pretrained` writes them (one tensor per
  expert); the script checks its own conversion against `save_pretrained`'s output.
- `qwen3_moe_fused` has HF references only, checked equal to `qwen3_moe`'s; `qwen2_moe_mlx`
  copies its HF references from `qwen2_moe` and has mlx-lm's on its own layout; so does
  `gpt_oss_mlx` from `gpt_oss`.
- The qwen tokenizers use the NFC normalizer and split pattern of transformers'
  `Qwen2Tokenizer`, which transformers 5 forces on model_type `qwen2` whatever
  tokenizer.json says; the other families use the plain byte-level pre-tokenizer.
- Mistral's specials are `<unk>` 0, `<s>` 1, `</s>` 2, `[INST]` 3, `[/INST]` 4 and Gemma's
  `<pad>` 0, `<eos>` 1, `<bos>` 2, `<start_of_turn>` 3, `<end_of_turn>` 4 (first ids); the
  llama and qwen specials come after the BPE vocabulary. `<think>`/`</think>` (qwen3) are
  added tokens that are not special.

Weights are drawn from a fixed torch seed. Seeds 0, 1, 2, ... are tried until the greedy path
of HF (and of mlx-lm on the `_q4` copy) has a top-1 minus top-2 margin of at least
{MIN_MARGIN} at every step and at least {MIN_DISTINCT} distinct tokens, the MoE cases' router
margin is at least {MIN_ROUTER_MARGIN:g}, and HF and mlx-lm agree within {TOLERANCE:g}; `seed` records the one used.

The script asserts |HF prompt − HF decode| ≤ {TOLERANCE:g}, |HF − mlx-lm| ≤ {TOLERANCE:g} and
identical greedy ids. The files are byte-identical from run to run on one machine; another
CPU or BLAS may change the last bits of the logits. Largest absolute differences seen:

| case | max abs HF − mlx-lm | max abs prompt − decode |
| --- | --- | --- |
{table}

`gguf_quants/` holds reference blocks for the GGUF dequantizers (`tests/gguf_quants.rs`):
for each block type, `<TYPE>.raw` (8 blocks of deterministic random bytes with plausible
float16 scales) and `<TYPE>.f32` (gguf-py 0.19's dequantize of them). Regenerate with
`.venv-ref/bin/python scripts/make_gguf_quants.py tests/fixtures/gguf_quants`.

`gguf_moe/` holds `<case>.f32.gguf` and `<case>.q8_0.gguf` for `qwen3_moe`, `qwen2_moe` and
`mixtral`: what llama.cpp's `convert_hf_to_gguf.py` (from the llama-cpp-python 0.3.36 sdist)
makes of those folders (`tests/gguf_moe.rs`). `scripts/make_gguf_moe.py` runs the converter
with four additions: the pre-tokenizer name (the trained vocabularies match no hash it knows),
`<arch>.expert_weights_norm` from `norm_topk_prob`, `llama.attention.sliding_window` from
Mixtral's `sliding_window`, and qwen3moe's dense layers (llama.cpp's qwen3moe has experts on
every layer). `make references` runs it after this script; the files are byte-identical from
run to run.
"""
    write_text(FIXTURES / "README.md", text)


if __name__ == "__main__":
    sys.exit(main())
