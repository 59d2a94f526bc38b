#!/usr/bin/env python3
"""Seed corpora for the fuzz targets (fuzz/), made from the fixtures.

usage: fuzz_seeds.py FIXTURES_DIR OUT_DIR

Writes OUT_DIR/<target>/<fixture> for each target: safetensors_header (the data size as
8 little-endian bytes, then the header JSON), config_spec (config.json), tokenizer_files
(tokenizer.json, 0xFF, tokenizer_config.json) and chat_template (the template, 0xFF, a
conversation as JSON).
"""
import json
import os
import struct
import sys

fixtures, out = sys.argv[1], sys.argv[2]
targets = ["safetensors_header", "config_spec", "tokenizer_files", "chat_template"]
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
print(f"{count} seed files in {out}")
