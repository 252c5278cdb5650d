"""PyTorch side of the nabla comparison (bench/run.sh drives it).

Same cases, models, batches, optimizers and synthetic data as
bench/bench_models.c; prints one JSON line with the ms per step of every
timed window and the peak RSS of the process.

usage: torch_models.py CASE [--threads T] [--warmup W] [--windows K] [--steps S]
CASE: mnist_train, cifar_train, mnist_infer_b1, mnist_infer_b256, sgemm1024,
      numpy_sgemm1024 (numpy's matmul, for reference), gpt_train (the char GPT
      of bench/torch_gpt.py with the recipe of models/gpt_char.cfg)

Threads: torch.set_num_threads(T) is always called; the driver varies the
OMP_NUM_THREADS / OPENBLAS_NUM_THREADS environment around it.
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np

N_BATCHES = 8


def fill_data(n, seed):
    """Same stream as fill_data() in bench_models.c."""
    i = np.arange(n, dtype=np.uint64) + np.uint64(seed * 7919)
    h = (i * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    return (h.astype(np.float32) * np.float32(2.0 / 4294967296.0) - np.float32(1.0)).astype(
        np.float32)


def fill_labels(n, classes, seed):
    return (np.arange(n, dtype=np.int64) * 7 + seed * 3) % classes


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def mnist_model(nn):
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))


def cifar_model(nn):
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2048, 64), nn.ReLU(), nn.Linear(64, 10))


# name: (batch, channels, side, train, optimizer, model)
CASES = {
    "mnist_train": (64, 1, 28, True, "adam", mnist_model),
    "cifar_train": (64, 3, 32, True, "sgd", cifar_model),
    "mnist_infer_b1": (1, 1, 28, False, None, mnist_model),
    "mnist_infer_b256": (256, 1, 28, False, None, mnist_model),
}


CPU_MS = [0.0]


def timed(step, warmup, windows, steps):
    for _ in range(warmup):
        step()
    ms = []
    c0 = time.process_time()
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        ms.append((time.perf_counter() - t0) * 1e3 / steps)
    # CPU time of all threads per step, like cpu_ms_per_step in bench_models.c
    CPU_MS[0] = (time.process_time() - c0) * 1e3 / (windows * steps)
    return ms


def run_model(torch, name, a):
    batch, ch, side, train, optim, build = CASES[name]
    torch.manual_seed(1)
    model = build(torch.nn)
    per = ch * side * side
    xs = [torch.from_numpy(fill_data(batch * per, b).reshape(batch, ch, side, side))
          for b in range(N_BATCHES)]
    ys = [torch.from_numpy(fill_labels(batch, 10, b)) for b in range(N_BATCHES)]
    it = [0]
    if train:
        model.train()
        if optim == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            b = it[0] % N_BATCHES
            it[0] += 1
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xs[b]), ys[b])
            loss.backward()
            opt.step()
            # read the loss every step, like nabla's nb_plan_get
            if loss.item() != loss.item():
                raise RuntimeError("loss is NaN")
    else:
        model.eval()

        def step():
            b = it[0] % N_BATCHES
            it[0] += 1
            with torch.inference_mode():
                model(xs[b]).numpy()

    return timed(step, a.warmup, a.windows, a.steps), batch, {}


def fill_tokens(n, vocab, seed):
    """Same stream as fill_tokens() in bench_models.c."""
    i = np.arange(n, dtype=np.uint64) + np.uint64(seed * 7919)
    h = (i * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    return ((h >> np.uint64(16)) % np.uint64(vocab)).astype(np.int64)


def run_gpt(torch, a, vocab=65):
    """One training step of models/gpt_char.cfg's recipe: AdamW (0.9, 0.95),
    weight decay 0.1 on matrices and embeddings only, gradient norm clipped
    to 1.0; targets are the ids shifted by one position of the stream."""
    import torch_gpt  # the model of the full comparison, same folder
    torch.manual_seed(1)
    model = torch_gpt.GPT(vocab)
    model.train()
    rows = torch_gpt.BATCH * torch_gpt.CTX
    ids = torch.from_numpy(fill_tokens(N_BATCHES * rows + 1, vocab, 1))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    it = [0]

    def step():
        b = it[0] % N_BATCHES
        it[0] += 1
        x = ids[b * rows:(b + 1) * rows].view(torch_gpt.BATCH, torch_gpt.CTX)
        y = ids[b * rows + 1:(b + 1) * rows + 1].view(torch_gpt.BATCH, torch_gpt.CTX)
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if loss.item() != loss.item():
            raise RuntimeError("loss is NaN")
    return timed(step, a.warmup, a.windows, a.steps), rows, {}


def run_sgemm(torch, a, n=1024, use_numpy=False):
    x = fill_data(n * n, 1).reshape(n, n)
    y = fill_data(n * n, 2).reshape(n, n)
    if use_numpy:
        out = np.empty((n, n), dtype=np.float32)

        def step():
            np.matmul(x, y, out=out)
    else:
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        out = torch.empty(n, n)

        def step():
            torch.mm(tx, ty, out=out)
    return timed(step, a.warmup, a.windows, a.steps), 1, {"flops_per_step": 2.0 * n ** 3}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--variant", default="", help="label echoed in the output")
    a = ap.parse_args()
    import torch
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    rss_import = peak_rss_mb()
    if a.case == "sgemm1024":
        ms, items, extra = run_sgemm(torch, a)
    elif a.case == "numpy_sgemm1024":
        ms, items, extra = run_sgemm(torch, a, use_numpy=True)
    elif a.case == "gpt_train":
        ms, items, extra = run_gpt(torch, a)
    elif a.case in CASES:
        ms, items, extra = run_model(torch, a.case, a)
    else:
        sys.exit("torch_models.py: unknown case " + a.case)
    rec = {"framework": "pytorch", "case": a.case, "variant": a.variant,
           "threads": torch.get_num_threads(), "items_per_step": items, "ms_per_step": ms,
           "cpu_ms_per_step": round(CPU_MS[0], 4),
           "peak_rss_mb": round(peak_rss_mb(), 1), "rss_after_import_mb": round(rss_import, 1),
           "torch": torch.__version__,
           "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                    "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}}
    rec.update(extra)
    print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
