#!/usr/bin/env python3
"""Reference LoRA training runs of mlx-lm 0.32.2 on the test fixtures, for tests/lora.rs.

For each case: a small JSONL training file, a starting adapter made by mlx-lm's own
`linear_to_lora_layers` (seeded; lora_b set to small random values so that every gradient is
non-zero), the loss and adapter gradients of the first batch (`mlx_lm.tuner.trainer.default_loss`
through `nn.value_and_grad`), then 20 steps of `mlx_lm.tuner.trainer.train` with Adam from that
adapter (one batch holding every row, so the batch order cannot differ), the losses it reports
at each step, the adapter it saves, and the last-position logits of a prompt through that
adapter. Everything lands in tests/fixtures/lora/<case>/. Run through `make lora-references`.
"""

import json
import os
import shutil
import sys
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import mlx.optimizers as optim  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402
from mlx_lm.tuner.datasets import CacheDataset, ChatDataset, TextDataset  # noqa: E402
from mlx_lm.tuner.trainer import TrainingArgs, default_loss, iterate_batches, train  # noqa: E402
from mlx_lm.tuner.utils import linear_to_lora_layers  # noqa: E402
from mlx_lm.utils import load  # noqa: E402

mx.set_default_device(mx.cpu)
ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "lora"

TEXT_ROWS = [
    {"text": "The quick brown fox jumps over the lazy dog."},
    {"text": "A small model learns a few sentences by heart."},
    {"text": "Rivers run to the sea and the sea is never full."},
    {"text": "Count with me: one, two, three, four, five."},
]
CHAT_ROWS = [
    {"messages": [{"role": "user", "content": "Name a color."}, {"role": "assistant", "content": "Blue, like the sea."}]},
    {"prompt": "What do cats chase?", "completion": "Cats chase mice and string."},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi there!"}]},
    {"prompt": "Two plus two?", "completion": "Four, of course."},
]
PROMPT = "The quick brown"

CASES = [
    # case, fixture, data, mask_prompt, lora parameters, num_layers, learning rate
    ("qwen3_all", "qwen3", TEXT_ROWS, False, {"rank": 4, "scale": 10.0, "dropout": 0.0}, 2, 1e-3),
    ("qwen3_chat", "qwen3", CHAT_ROWS, True, {"rank": 4, "scale": 10.0, "dropout": 0.0,
                                              "keys": ["self_attn.q_proj", "self_attn.v_proj"]}, 2, 1e-3),
    ("llama_q4_last", "llama_tied_q4", TEXT_ROWS, False, {"rank": 8, "scale": 20.0, "dropout": 0.0,
                                                         "keys": ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"]}, 1, 5e-4),
    ("gemma3_all", "gemma3", TEXT_ROWS, False, {"rank": 4, "scale": 8.0, "dropout": 0.0}, 3, 1e-3),
]
ITERS = 20
MAX_SEQ = 128


def dataset(rows, tokenizer, mask_prompt):
    if "text" in rows[0]:
        return CacheDataset(TextDataset(rows, tokenizer))
    chat = []
    for r in rows:
        if "messages" in r:
            chat.append(r)
        else:
            chat.append({"messages": [{"role": "user", "content": r["prompt"]},
                                      {"role": "assistant", "content": r["completion"]}]})
    return CacheDataset(ChatDataset(chat, tokenizer, mask_prompt=mask_prompt))


def adapter_model(fixture, params, num_layers, seed):
    model, tokenizer = load(str(FIX / fixture))
    model.freeze()
    mx.random.seed(seed)
    linear_to_lora_layers(model, num_layers, params)
    # lora_b starts at zero in mlx-lm; small random values make lora_a's gradients non-zero.
    b_updates = []
    for name, p in tree_flatten(model.trainable_parameters()):
        if name.endswith("lora_b"):
            b_updates.append((name, mx.random.normal(p.shape) * 0.02))
    model.load_weights(b_updates, strict=False)
    return model, tokenizer


def save_adapter(model, path, params, num_layers):
    path.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(model.trainable_parameters()))
    mx.save_safetensors(str(path / "adapters.safetensors"), weights, metadata={"format": "mlx"})
    cfg = {"fine_tune_type": "lora", "num_layers": num_layers, "lora_parameters": params}
    (path / "adapter_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def run(case, fixture, rows, mask_prompt, params, num_layers, lr):
    out = OUT / case
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with open(out / "train.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    model, tokenizer = adapter_model(fixture, params, num_layers, seed=7)
    save_adapter(model, out / "init", params, num_layers)

    data = dataset(rows, tokenizer, mask_prompt)
    batch, lengths = next(iterate_batches(data, len(rows), MAX_SEQ))
    loss_and_grad = nn.value_and_grad(model, default_loss)
    (loss, ntoks), grads = loss_and_grad(model, batch, lengths)
    grads = dict(tree_flatten(grads))
    mx.eval(loss, ntoks, grads)
    mx.save_safetensors(str(out / "grads.safetensors"), grads)

    losses = []

    class Record:
        def on_train_loss_report(self, info):
            losses.append(float(info["train_loss"]))

        def on_val_loss_report(self, info):
            pass

    args = TrainingArgs(batch_size=len(rows), iters=ITERS, val_batches=0, steps_per_report=1,
                        steps_per_eval=10**9, steps_per_save=10**9, max_seq_length=MAX_SEQ,
                        adapter_file=str(out / "trained" / "adapters.safetensors"))
    (out / "trained").mkdir()
    opt = optim.Adam(learning_rate=lr)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        train(model=model, optimizer=opt, train_dataset=data, val_dataset=None, args=args,
              training_callback=Record())
    save_adapter(model, out / "trained", params, num_layers)

    ids = tokenizer.encode(PROMPT)
    logits = model(mx.array([ids]))[0, -1].astype(mx.float32)
    mx.eval(logits)
    mx.save_safetensors(str(out / "logits.safetensors"), {"last_logits": logits})
    ref = {
        "case": case, "fixture": fixture, "mask_prompt": mask_prompt, "lora_parameters": params,
        "num_layers": num_layers, "learning_rate": lr, "optimizer": "adam", "iters": ITERS,
        "batch_size": len(rows), "max_seq_length": MAX_SEQ,
        "first_loss": float(loss), "first_ntoks": int(ntoks),
        "batch_tokens": np.array(batch).tolist(), "batch_lengths": np.array(lengths).tolist(),
        "losses": losses, "prompt": PROMPT, "prompt_ids": ids,
    }
    (out / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")
    print(f"{case}: first loss {float(loss):.4f} over {int(ntoks)} tokens; losses {losses[0]:.4f} -> {losses[-1]:.4f}")


def main():
    only = sys.argv[1:]
    for c in CASES:
        if not only or c[0] in only:
            run(*c)


if __name__ == "__main__":
    main()
