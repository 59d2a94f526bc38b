#!/usr/bin/env python3
"""mlx-lm 0.32.2's LoRA training loop (`mlx_lm.tuner.trainer.train`, what `mlx_lm.lora` runs)
on a model folder and a JSONL file, printing one JSON line per step: step, loss,
tokens_per_second, peak_memory_bytes. The counterpart of `lmx train --json` in
benches/train_compare.py.

usage: mlxlm_train.py MODEL DATA_DIR ITERS BATCH RANK SCALE NUM_LAYERS LR MAX_SEQ CHECKPOINT(0|1) [cpu|gpu]
"""
import json
import sys
import types

import mlx.core as mx
import mlx.optimizers as optim
from mlx_lm.tuner.datasets import CacheDataset, load_dataset
from mlx_lm.tuner.trainer import TrainingArgs, train
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import load

model_dir, data_dir, iters, batch, rank, scale, layers, lr, max_seq, ckpt = sys.argv[1:11]
if len(sys.argv) > 11 and sys.argv[11] == "cpu":
    mx.set_default_device(mx.cpu)
model, tokenizer = load(model_dir)
model.freeze()
linear_to_lora_layers(model, int(layers), {"rank": int(rank), "scale": float(scale), "dropout": 0.0})
args = types.SimpleNamespace(data=data_dir, train=True, test=False, hf_dataset=False, mask_prompt=False)
train_set, _, _ = load_dataset(args, tokenizer)


class Report:
    def on_train_loss_report(self, info):
        print(json.dumps({"step": info["iteration"], "loss": info["train_loss"],
                          "tokens_per_second": info["tokens_per_second"],
                          "peak_memory_bytes": int(info["peak_memory"] * 1e9)}), flush=True)

    def on_val_loss_report(self, info):
        pass


targs = TrainingArgs(batch_size=int(batch), iters=int(iters), val_batches=0, steps_per_report=1,
                     steps_per_eval=10**9, steps_per_save=10**9, max_seq_length=int(max_seq),
                     adapter_file="/tmp/mlxlm-train-adapter.safetensors", grad_checkpoint=ckpt == "1")
train(model=model, optimizer=optim.Adam(learning_rate=float(lr)), train_dataset=CacheDataset(train_set), args=targs,
      training_callback=Report())
