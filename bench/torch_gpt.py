"""PyTorch side of the character-level GPT comparison (examples/gpt_char.c).

Same model and recipe: vocabulary = the sorted distinct bytes of the text,
context T = 128, 4 pre-norm blocks (4 heads, width 128, GELU-tanh MLP x4),
learned positional embedding, final layer norm, output head tied to the
token embedding, every weight N(0, 0.02) and biases 0; batch 16, AdamW
(0.9, 0.95, eps 1e-8, weight decay 0.1 on every parameter as
examples/gpt_char.c does, or with --decay-min-dims 2 only on matrices and
embeddings as models/gpt_char.cfg does),
lr 1e-3 with 100 warm-up steps then cosine to 1e-4 at the last step, gradient
norm clipped to 1.0; random windows from the first floor(0.9 n) tokens,
validation windows from the rest. Windows are drawn with numpy's generator,
so the batches differ from nabla's (same distribution, not the same stream).

Prints train loss every 100 steps, validation loss (mean of 20 batches) at
eval points and at the end, and ends with the same JSON line as gpt_char:
{"val_loss": ..., "train_loss": ..., "steps": ..., "tokens_per_sec": ...}

usage: torch_gpt.py [FILE] [--steps N] [--eval-every N] [--threads T] [--seed S]
                    [--decay-min-dims D] [--device cpu|cuda]
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CTX, LAYERS, HEADS, WIDTH, BATCH, EVAL_BATCHES = 128, 4, 4, 128, 16, 20


class Block(nn.Module):
    """GPT-2 pre-norm block, laid out like nb_nn_transformer_block."""

    def __init__(self, c, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(c, eps=1e-5)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        self.ln2 = nn.LayerNorm(c, eps=1e-5)
        self.fc = nn.Linear(c, 4 * c)
        self.fc_proj = nn.Linear(4 * c, c)
        self.register_buffer("mask", torch.triu(torch.full((CTX, CTX), float("-inf")), 1))

    def attn(self, x):
        b, t, c = x.shape
        dh = c // self.heads
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, dh).permute(2, 0, 3, 1, 4)
        # torch 1.13 has no scaled_dot_product_attention: the explicit form
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(dh)) + self.mask[:t, :t]
        y = F.softmax(att, dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, c))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.wte = nn.Embedding(vocab, WIDTH)
        self.wpe = nn.Parameter(torch.zeros(CTX, WIDTH))
        self.h = nn.ModuleList(Block(WIDTH, HEADS) for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(WIDTH, eps=1e-5)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.wpe, 0.0, 0.02)

    def forward(self, ids, targets=None):
        h = self.wte(ids) + self.wpe[: ids.shape[1]]
        for blk in self.h:
            h = blk(h)
        logits = self.ln_f(h) @ self.wte.weight.t()  # tied head
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def lr_at(t, steps, lr=1e-3, min_lr=1e-4, warmup=100):
    """nb_schedule_warmup_cosine: update t (1-based)."""
    if steps < warmup:
        warmup = 0
    if t <= warmup:
        return lr * t / warmup
    if t >= steps:
        return min_lr
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * (t - warmup) / (steps - warmup))) / 2


def find_data(given):
    if given:
        return given
    env = os.environ.get("NABLA_DATA")
    places = ([os.path.join(env, "tinyshakespeare", "input.txt")] if env else []) + [
        "../shared/data/tinyshakespeare/input.txt",
        "/work/shared/data/tinyshakespeare/input.txt"]
    for p in places:
        if os.path.isfile(p):
            return p
    sys.exit("torch_gpt.py: Tiny Shakespeare not found (pass FILE or set NABLA_DATA)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file", nargs="?")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cpu",
                    help="cpu (default) or cuda: where the model trains (the loss read back "
                         "every step synchronises, as nabla's step does)")
    ap.add_argument("--decay-min-dims", type=int, default=0,
                    help="decay only parameters with at least this many dims (2 = nanoGPT's "
                         "rule, as models/gpt_char.cfg sets; 0 = every parameter, as "
                         "examples/gpt_char.c does)")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    path = find_data(a.file)
    data = np.frombuffer(open(path, "rb").read(), dtype=np.uint8)
    chars = np.unique(data)
    lut = np.full(256, -1, dtype=np.int64)
    lut[chars] = np.arange(len(chars))
    tokens = torch.from_numpy(lut[data])
    n_train = int(len(tokens) * 0.9)
    splits = {"train": tokens[:n_train], "val": tokens[n_train:]}
    rngs = {"train": np.random.default_rng(a.seed), "val": np.random.default_rng(a.seed + 1)}
    print(f"{path}: {len(data)} characters, vocabulary {len(chars)}, {n_train} train / "
          f"{len(tokens) - n_train} val tokens; {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}")

    def batch(split):
        src = splits[split]
        ix = rngs[split].integers(0, len(src) - CTX, size=BATCH)
        x = torch.stack([src[i:i + CTX] for i in ix])
        y = torch.stack([src[i + 1:i + 1 + CTX] for i in ix])
        return x.to(a.device), y.to(a.device)

    model = GPT(len(chars)).to(a.device)
    print(f"model: {sum(p.numel() for p in model.parameters())} parameters")
    decay = [p for p in model.parameters() if p.dim() >= a.decay_min_dims]
    rest = [p for p in model.parameters() if p.dim() < a.decay_min_dims]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=1e-3, betas=(0.9, 0.95),
                            eps=1e-8)

    def evaluate():
        model.eval()
        with torch.no_grad():
            s = sum(model(*batch("val")).item() for _ in range(EVAL_BATCHES))
        model.train()
        return s / EVAL_BATCHES

    t_train, loss_sum, count, val, last_train = 0.0, 0.0, 0, float("nan"), float("nan")
    for t in range(1, a.steps + 1):
        t0 = time.perf_counter()
        x, y = batch("train")
        for g in opt.param_groups:
            g["lr"] = lr_at(t, a.steps)
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        l = loss.item()
        t_train += time.perf_counter() - t0
        loss_sum += l
        count += 1
        if t % 100 == 0 or t == a.steps:
            last_train = loss_sum / count
            print(f"step {t:5d}  train loss {last_train:.4f}  lr {lr_at(t, a.steps):.2e}  "
                  f"{t * BATCH * CTX / t_train:.0f} tokens/s", flush=True)
            loss_sum, count = 0.0, 0
        if (a.eval_every > 0 and t % a.eval_every == 0) or t == a.steps:
            val = evaluate()
            print(f"step {t:5d}  val loss {val:.4f}", flush=True)
    tps = a.steps * BATCH * CTX / t_train
    print(f"training: {t_train:.1f} s, {tps:.0f} tokens/s")
    print(json.dumps({"val_loss": round(val, 4), "train_loss": round(last_train, 4),
                      "steps": a.steps, "tokens_per_sec": round(tps)}))


if __name__ == "__main__":
    main()
