"""PyTorch side of the nabla comparison (bench/run.sh drives it).

Same cases, models, batches, optimizers and synthetic data as
bench/bench_models.c; prints one JSON line with the ms per step of every
timed window and the peak RSS of the process.

usage: torch_models.py CASE [--threads T] [--warmup W] [--windows K] [--steps S]
                        [--device cpu|cuda] [--batch B] [--precision P] [--compile]
CASE: mnist_train, cifar_train, mnist_infer_b1, mnist_infer_b256, sgemm1024,
      numpy_sgemm1024 (numpy's matmul, for reference), gpt_train (the char GPT
      of bench/torch_gpt.py with the recipe of models/gpt_char.cfg)

Threads: torch.set_num_threads(T) is always called; the driver varies the
OMP_NUM_THREADS / OPENBLAS_NUM_THREADS environment around it.

GPU (--device cuda, the CNN cases; bench/gpu.py drives it): the model and the
optimizer state live on the GPU, each step copies its batch from host memory
(x.to(device), as nabla's nb_plan_set_input uploads it) and reads the loss
or the logits back, which waits for the GPU. --batch overrides the case's
batch. --precision: fp32 (default) is strict FP32 like nabla's default (TF32
off in cuBLAS and cuDNN: torch.backends.cuda.matmul / cudnn.conv
fp32_precision = "ieee" on torch >= 2.9, the allow_tf32 flags before); tf32
turns both on (nabla: NABLA_TF32=1); bf16 is
torch.autocast(device_type, dtype=torch.bfloat16) around forward and loss
with FP32 master weights (TF32 off for what stays FP32). --compile wraps the
model in torch.compile (torch 2.x; not PyTorch eager). On the CPU nothing of
this is changed unless asked for.
"""
import argparse
import json
import os
import resource
import sys
import time

try:
    import numpy as np
except ImportError:  # pip's torch 2.x runs without numpy: the CNN cases then use torch_data()
    np = None

N_BATCHES = 8


def fill_data(n, seed):
    """Same stream as fill_data() in bench_models.c."""
    i = np.arange(n, dtype=np.uint64) + np.uint64(seed * 7919)
    h = (i * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    return (h.astype(np.float32) * np.float32(2.0 / 4294967296.0) - np.float32(1.0)).astype(
        np.float32)


def fill_labels(n, classes, seed):
    return (np.arange(n, dtype=np.int64) * 7 + seed * 3) % classes


def torch_data(torch, n, seed):
    """fill_data with torch, bit for bit (the hash fits in int64; the
    float32 conversion and scaling round the same way)."""
    i = torch.arange(n, dtype=torch.int64) + seed * 7919
    h = (i * 2654435761) & 0xFFFFFFFF
    return h.to(torch.float32) * (2.0 / 4294967296.0) - 1.0


def torch_labels(torch, n, classes, seed):
    return (torch.arange(n, dtype=torch.int64) * 7 + seed * 3) % classes


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


def new_tf32_api(torch):
    """torch >= 2.9 has fp32_precision ("ieee" / "tf32") and warns about the
    allow_tf32 flags; mixing the two APIs is an error, so one is used."""
    return hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(
        getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


def tf32_state(torch):
    if new_tf32_api(torch):
        return {"matmul_fp32_precision": torch.backends.cuda.matmul.fp32_precision,
                "cudnn_conv_fp32_precision": torch.backends.cudnn.conv.fp32_precision}
    return {"matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}


def set_precision(torch, a):
    """TF32 switches for --precision on a GPU; returns the context manager
    that wraps forward (+ loss): autocast to bfloat16 for bf16."""
    import contextlib
    dev = torch.device(a.device)
    if dev.type == "cuda":
        tf32 = a.precision == "tf32"
        if new_tf32_api(torch):
            torch.backends.cuda.matmul.fp32_precision = "tf32" if tf32 else "ieee"
            torch.backends.cudnn.conv.fp32_precision = "tf32" if tf32 else "ieee"
        else:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
    elif a.precision == "tf32":
        sys.exit("torch_models.py: --precision tf32 needs --device cuda")
    if a.precision == "bf16":
        return lambda: torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def run_model(torch, name, a):
    batch, ch, side, train, optim, build = CASES[name]
    if a.batch > 0:
        batch = a.batch
    torch.manual_seed(1)
    model = build(torch.nn)
    per = ch * side * side
    if np is not None:
        xs = [torch.from_numpy(fill_data(batch * per, b).reshape(batch, ch, side, side))
              for b in range(N_BATCHES)]
        ys = [torch.from_numpy(fill_labels(batch, 10, b)) for b in range(N_BATCHES)]
    else:
        xs = [torch_data(torch, batch * per, b).reshape(batch, ch, side, side)
              for b in range(N_BATCHES)]
        ys = [torch_labels(torch, batch, 10, b) for b in range(N_BATCHES)]
    dev = torch.device(a.device)
    autocast = set_precision(torch, a)
    if dev.type != "cpu":
        # the batches stay in host memory and are copied every step
        model = model.to(dev)

        def batch_of(b):
            return xs[b].to(dev), ys[b].to(dev)
    else:
        def batch_of(b):
            return xs[b], ys[b]
    net = model
    if a.compile:
        if not hasattr(torch, "compile"):
            sys.exit("torch_models.py: --compile needs torch 2.x (this is %s)" % torch.__version__)
        net = torch.compile(model)
    it = [0]
    if train:
        model.train()
        if optim == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            x, y = batch_of(it[0] % N_BATCHES)
            it[0] += 1
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            # read the loss every step, like nabla's nb_plan_get
            if loss.item() != loss.item():
                raise RuntimeError("loss is NaN")
    else:
        model.eval()

        def step():
            x, _ = batch_of(it[0] % N_BATCHES)
            it[0] += 1
            with torch.inference_mode(), autocast():
                out = net(x).float()
                out.cpu() if dev.type != "cpu" else out.numpy()

    extra = {"batch": batch}
    ms = timed(step, a.warmup, a.windows, a.steps)
    if dev.type == "cuda":
        extra.update(gpu=torch.cuda.get_device_name(dev),
                     device_peak_mb=round(torch.cuda.max_memory_allocated(dev) / 1048576.0, 1),
                     cudnn_benchmark=torch.backends.cudnn.benchmark,
                     cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
        extra.update(tf32_state(torch))
    return ms, batch, extra


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
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--batch", type=int, default=0,
                    help="the CNN cases' batch (default: the case's own)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "tf32", "bf16"))
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (torch 2.x)")
    a = ap.parse_args()
    if np is None and a.case not in CASES:
        sys.exit("torch_models.py: %s needs numpy" % a.case)
    if a.batch < 0 or (a.batch > 0 and a.case not in CASES):
        sys.exit("torch_models.py: --batch takes B >= 1 and applies to the CNN cases only")
    if (a.device != "cpu" or a.precision != "fp32" or a.compile) and a.case not in CASES:
        sys.exit("torch_models.py: --device, --precision and --compile apply to the CNN cases only")
    import torch
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("torch_models.py: --device %s: torch %s sees no CUDA GPU"
                 % (a.device, torch.__version__))
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
    rec = {"framework": "pytorch", "case": a.case, "variant": a.variant, "device": a.device,
           "precision": a.precision, "compile": a.compile,
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
