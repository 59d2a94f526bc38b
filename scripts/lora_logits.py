#!/usr/bin/env python3
"""Prints, as JSON, mlx-lm 0.32.2's last-position logits of token ids through a model folder
with an adapter folder applied (`mlx_lm.load(..., adapter_path=...)`). For tests/lora.rs:
an adapter liblmx trained must give liblmx's logits in mlx-lm.

usage: lora_logits.py MODEL_DIR ADAPTER_DIR ID,ID,...
"""
import json
import sys

import mlx.core as mx
from mlx_lm.utils import load

mx.set_default_device(mx.cpu)
model, _ = load(sys.argv[1], adapter_path=sys.argv[2])
ids = [int(x) for x in sys.argv[3].split(",")]
logits = model(mx.array([ids]))[0, -1].astype(mx.float32)
print(json.dumps(logits.tolist()))
