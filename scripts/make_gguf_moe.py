#!/usr/bin/env python3
"""GGUF files of the mixture-of-experts fixtures, made by llama.cpp's own converter.

usage: .venv-ref/bin/python scripts/make_gguf_moe.py [OUT_DIR]   (default tests/fixtures/gguf_moe)

Converts tests/fixtures/{qwen3_moe,qwen2_moe,mixtral,deepseek_v2,deepseek_v3,gpt_oss} (made by
make_fixtures.py) with
`convert_hf_to_gguf.py` from the llama-cpp-python sdist (which vendors llama.cpp; fetched with
pip into $LMX_TEST_CACHE/dl once, as real_models.py does), at `--outtype f32` and `q8_0`, into
<case>.<outtype>.gguf. The tests compare them with the folders' transformers references.

The converter runs unchanged but for four additions, made by wrapping its methods here:
- the pre-tokenizer name: the converter recognises a BPE vocabulary by hashing how it
  tokenizes a fixed text, and the fixtures' vocabularies, trained by make_fixtures.py, are in
  no list; each case names the split its tokenizer.json uses ("qwen2" or "gpt-2");
- `<arch>.expert_weights_norm` for qwen2moe and qwen3moe from the folder's `norm_topk_prob`
  (the converter writes the key for other families but not these; llama.cpp fixes false for
  qwen2moe and true for qwen3moe, while the qwen3_moe fixture does not renormalise);
- `llama.attention.sliding_window` for Mixtral from the folder's `sliding_window` (the
  converter drops it; the mixtral fixture's window of 16 is shorter than its prompt).
- dense feed-forward tensors (`ffn_gate`, `ffn_up`, `ffn_down`, named as in every dense
  architecture) allowed in a qwen3moe file: llama.cpp's qwen3moe has MoE on every layer,
  while the qwen3_moe fixture has dense layers (0, 2, 3, 4) between its sparse ones. Such a
  file is one llama.cpp cannot run; liblmx finds which layers are sparse from their tensors.
liblmx reads both keys where a file has them and otherwise computes what llama.cpp does.
The DeepSeek fixtures (architecture deepseek2) need only the pre-tokenizer name. The converter
writes what llama.cpp's DeepSeek-V2/V3 code keeps of YaRN (0.1 * mscale_all_dim), not
`mscale`; the deepseek_v3 fixture's mscale (1.0) differs from its mscale_all_dim (0.8), so its
file is that model with mscale 0.8, and the tests compare it with the folder so configured.
The gpt_oss fixture's experts are float (not MXFP4), which the converter writes as float (or
Q8_0) expert stacks with a warning; for gpt_oss.mxfp4.gguf the converter's
`tensor_force_quant` is wrapped to give the expert stacks ggml's MXFP4 (quantized by gguf-py,
as the converter quantizes Q8_0), everything else float32, as a GPT-OSS checkpoint's file has.
"""

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
CACHE = Path(os.environ.get("LMX_TEST_CACHE") or Path.home() / ".cache" / "lmx-test").expanduser()
SDIST = "llama-cpp-python==0.3.36"
SDIST_FILE = "llama_cpp_python-0.3.36.tar.gz"
VENDOR = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
# What the converter needs from the sdist.
PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")

# (fixture, pre-tokenizer name its tokenizer.json's split is known by in llama.cpp)
CASES = [("qwen3_moe", "qwen2"), ("qwen2_moe", "qwen2"), ("mixtral", "gpt-2"), ("deepseek_v2", "gpt-2"),
         ("deepseek_v3", "gpt-2"), ("gpt_oss", "gpt-2")]
OUTTYPES = ["f32", "q8_0"]
# Cases also written with MXFP4 expert stacks (outtype "mxfp4", see the module doc).
MXFP4 = ["gpt_oss"]

# Run in a fresh interpreter per file: argv = [src, fixture, pre, outtype, out]. The wrappers
# add what the converter drops (see the module doc) and change nothing it writes.
DRIVER = r"""
import runpy, sys
src, fixture, pre, outtype, out = sys.argv[1:]
sys.path[:0] = [src, src + "/gguf-py"]
import conversion.base as base
import conversion.llama as llama
import conversion.qwen as qwen

import gguf

base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre

T = gguf.MODEL_TENSOR
qwen3moe = gguf.MODEL_TENSORS[gguf.MODEL_ARCH.QWEN3MOE]
qwen3moe += [t for t in (T.FFN_GATE, T.FFN_UP, T.FFN_DOWN) if t not in qwen3moe]

def qwen_moe_params(self, _orig=qwen.Qwen2MoeModel.set_gguf_parameters):
    _orig(self)
    if (norm := self.hparams.get("norm_topk_prob")) is not None:
        self.gguf_writer.add_expert_weights_norm(bool(norm))
qwen.Qwen2MoeModel.set_gguf_parameters = qwen_moe_params

def llama_params(self, _orig=llama.LlamaModel.set_gguf_parameters):
    _orig(self)
    if self.hparams.get("num_local_experts") and (w := self.hparams.get("sliding_window")):
        self.gguf_writer.add_sliding_window(int(w))
llama.LlamaModel.set_gguf_parameters = llama_params

if outtype == "mxfp4":
    # Expert stacks in MXFP4, quantized by gguf-py's own quantizer; the rest float32.
    import conversion.gpt_oss as gpt_oss
    def force_mxfp4(self, name, new_name, bid, n_dims, _orig=gpt_oss.GptOssModel.tensor_force_quant):
        if new_name.endswith("_exps.weight"):
            return gguf.GGMLQuantizationType.MXFP4
        return _orig(self, name, new_name, bid, n_dims)
    gpt_oss.GptOssModel.tensor_force_quant = force_mxfp4
    outtype = "f32"

sys.argv = ["convert_hf_to_gguf.py", "--outtype", outtype, "--outfile", out, fixture]
runpy.run_path(src + "/convert_hf_to_gguf.py", run_name="__main__")
"""


def sdist():
    path = CACHE / "dl" / SDIST_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
                            ":all:", SDIST, "-d", tmp], check=True)
            os.replace(Path(tmp) / SDIST_FILE, path)
    return path


def extract(dst):
    with tarfile.open(sdist()) as t:
        members = [m for m in t.getmembers()
                   if m.name.startswith(VENDOR) and m.name[len(VENDOR):].startswith(PARTS)]
        for m in members:
            m.name = m.name[len(VENDOR):]
        t.extractall(dst, members=members, filter="data")


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURES / "gguf_moe"
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_LOCAL_GGUF="1")
    with tempfile.TemporaryDirectory() as src:
        extract(src)
        for case, pre in CASES:
            for outtype in OUTTYPES + (["mxfp4"] if case in MXFP4 else []):
                dst = out / f"{case}.{outtype}.gguf"
                tmp = out / f".{dst.name}.tmp"
                r = subprocess.run([sys.executable, "-c", DRIVER, src, str(FIXTURES / case), pre, outtype,
                                    str(tmp)], env=env, capture_output=True, text=True)
                if r.returncode != 0:
                    sys.exit(f"converting {case} to {outtype} failed:\n{r.stderr[-4000:]}")
                os.replace(tmp, dst)
                print(f"{dst}: {dst.stat().st_size} bytes")


if __name__ == "__main__":
    main()
