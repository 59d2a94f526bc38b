#!/usr/bin/env python3
"""Seed corpora for the fuzz targets (fuzz/), made from the fixtures.

usage: fuzz_seeds.py FIXTURES_DIR OUT_DIR

Writes OUT_DIR/<target>/<fixture> for each target: safetensors_header (the data size as
8 little-endian bytes, then the header JSON), config_spec (config.json), tokenizer_files
(tokenizer.json, 0xFF, tokenizer_config.json) and chat_template (the template, 0xFF, a
conversation as JSON); tool_text gets a few generated outputs with tool calls and reasoning
(a format-and-stride byte, then the text).
"""
import json
import os
import struct
import sys

fixtures, out = sys.argv[1], sys.argv[2]
targets = ["safetensors_header", "config_spec", "tokenizer_files", "chat_template", "gguf_header", "tool_text"]
for t in targets:
    os.makedirs(os.path.join(out, t), exist_ok=True)

conversation = json.dumps([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": "café ☕"},
]).encode()

count = 0
for case in sorted(os.listdir(fixtures)):
    d = os.path.join(fixtures, case)
    if not os.path.isfile(os.path.join(d, "config.json")):
        continue

    def read(name):
        p = os.path.join(d, name)
        return open(p, "rb").read() if os.path.isfile(p) else None

    def write(target, data):
        global count
        with open(os.path.join(out, target, case), "wb") as f:
            f.write(data)
        count += 1

    st = os.path.join(d, "model.safetensors")
    if os.path.isfile(st):
        with open(st, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = f.read(n)
        write("safetensors_header", struct.pack("<Q", os.path.getsize(st) - 8 - n) + header)
    write("config_spec", read("config.json"))
    tok, tok_cfg = read("tokenizer.json"), read("tokenizer_config.json")
    if tok is not None:
        write("tokenizer_files", tok + b"\xff" + (tok_cfg or b"{}"))
    template = json.loads(tok_cfg).get("chat_template") if tok_cfg else None
    if template is None and read("chat_template.jinja") is not None:
        template = read("chat_template.jinja").decode()
    if isinstance(template, str):
        write("chat_template", template.encode() + b"\xff" + conversation)


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_seed():
    """A small GGUF: string, integer, float, boolean and array metadata, and two tensors."""
    kv = [
        (gguf_string("general.architecture") + struct.pack("<I", 8) + gguf_string("llama")),
        (gguf_string("llama.block_count") + struct.pack("<II", 4, 2)),
        (gguf_string("llama.rope.freq_base") + struct.pack("<If", 6, 10000.0)),
        (gguf_string("tokenizer.ggml.add_bos_token") + struct.pack("<IB", 7, 1)),
        (gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 3)
         + b"".join(gguf_string(t) for t in ["<s>", "hello", "world"])),
    ]
    tensors = [("token_embd.weight", [4, 2], 0, 32), ("blk.0.attn_q.weight", [32, 2], 8, 68)]
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)) + b"".join(kv)
    offset = 0
    for name, dims, ty, size in tensors:
        out += gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ty, offset)
        offset += (size + 31) // 32 * 32
    out += b"\0" * (-len(out) % 32)
    for _, _, _, size in tensors:
        out += b"\1" * size + b"\0" * (-size % 32)
    return out


TOOL_TEXTS = [
    (0, 'Checking.\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'),
    (1, '<tool_call>\n<function=f>\n<parameter=x>\n1\n</parameter>\n</function>\n</tool_call>'),
    (2, '<|python_tag|>{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"x": [1]}}'),
    (3, '[TOOL_CALLS][{"name": "a", "arguments": {"x": 1}, "id": "abcdefghi"}]'),
    (4 | 8, '[TOOL_CALLS]a[CALL_ID]abcdefghi[ARGS]{"x": 1}[TOOL_CALLS]b[ARGS]{}'),
    (5 | 16, '<think>\nFirst, 2+2.\n</think>\n\nThe answer is 4.'),
]
for i, (head, text) in enumerate(TOOL_TEXTS):
    with open(os.path.join(out, "tool_text", f"seed{i}"), "wb") as f:
        f.write(bytes([head]) + text.encode())
        count += 1

with open(os.path.join(out, "gguf_header", "synthetic"), "wb") as f:
    f.write(gguf_seed())
    count += 1
print(f"{count} seed files in {out}")
