"""nabla against PyTorch on one GPU: training images/s side by side.

Called by bench/gpu.sh (see bench/README.md, "GPU"). Python standard library
only; nabla runs as build/bench/bench_models --device cuda:0 and PyTorch as
bench/torch_models.py --device cuda:0, one fresh process per run, the same
model, batch, optimizer and synthetic data on both sides.

For every case, batch and precision it runs nabla and PyTorch eager in
--rounds processes each (default 1; the first side alternates), each process
warming up and then timing a few windows of steps; a side's ms/step is the
median of all its windows and its images/s is batch / (ms/step). Prints a Markdown table on stdout,
progress on stderr, and writes every raw JSON record (one line per process)
and the table to $OUT (when set) or BUILD/results/.

Precisions: fp32 is strict FP32 on both sides (nabla's default; PyTorch with
TF32 off in cuBLAS and cuDNN); tf32 lets both use TF32 tensor cores
(NABLA_TF32=1; PyTorch's allow_tf32 / fp32_precision="tf32"); bf16 is
autocast to bfloat16 with FP32 master weights on both (nabla:
nb_graph_set_autocast; PyTorch: torch.autocast). A bench_models that exits
with 3 (a precision it lacks) is shown as n/a.

Exit status: 0 when every run that could run ran, 1 when there is no GPU
(PyTorch sees none or nabla cannot open it), the build is missing or a run
failed, 2 for bad arguments.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CASES = {
    "mnist_train": "MNIST CNN (examples/mnist_cnn.c), Adam",
    "cifar_train": "CIFAR small CNN, SGD momentum 0.9",
}
PRECISIONS = ("fp32", "tf32", "bf16")
UNSUPPORTED = 3  # bench_models' exit status for a precision nabla lacks

TORCH_PROBE = r"""
import json, sys
try:
    import torch
except Exception as e:
    print(json.dumps({"error": "cannot import torch: %s" % e})); sys.exit(0)
r = {"torch": torch.__version__, "cuda": torch.version.cuda, "available": torch.cuda.is_available()}
if r["available"]:
    r["gpu"] = torch.cuda.get_device_name(0)
    r["cudnn"] = torch.backends.cudnn.version()
    r["bf16"] = torch.cuda.is_bf16_supported()
print(json.dumps(r))
"""


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def run(cmd, timeout, env=None):
    """(returncode, last JSON record or None, stderr); returncode None on a
    timeout or a command that cannot start."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None, None, "timed out after %d s" % timeout
    except OSError as e:
        return None, None, str(e)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            try:
                return out.returncode, json.loads(line), out.stderr
            except ValueError:
                break
    return out.returncode, None, out.stderr


def last_line(text):
    lines = [l for l in (text or "").splitlines() if l.strip()]
    return lines[-1].strip() if lines else "(no message)"


def nabla_env(build, bench_bin):
    """The environment of the nabla runs. A folder packed by
    tests/gpu/pack_prebuilt.sh has the libraries a GPU machine may lack in
    BUILD/lib; libraries still missing (cuBLAS, cuDNN) are looked for where
    the CUDA toolkit or PyTorch's nvidia-* wheels put them, as
    tests/gpu/run.sh does. PyTorch keeps the caller's environment."""
    env = dict(os.environ)
    dirs = [os.path.join(build, "lib")] if os.path.isdir(os.path.join(build, "lib")) else []

    def set_path():
        if dirs:
            old = os.environ.get("LD_LIBRARY_PATH")
            env["LD_LIBRARY_PATH"] = ":".join(dirs + ([old] if old else []))

    set_path()
    try:
        ldd = subprocess.run(["ldd", bench_bin], capture_output=True, text=True, env=env,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return env
    for line in ldd.splitlines():
        if "not found" in line:
            name = line.split()[0]
            try:
                found = subprocess.run(["find", "/usr/local", "/opt", "/usr/lib", "-name", name],
                                       capture_output=True, text=True, timeout=60).stdout.split()
            except (OSError, subprocess.TimeoutExpired):
                found = []
            if found and os.path.dirname(found[0]) not in dirs:
                dirs.append(os.path.dirname(found[0]))
    set_path()
    if dirs:
        log("bench/gpu.sh: nabla runs with LD_LIBRARY_PATH=%s" % env["LD_LIBRARY_PATH"])
    return env


def check_gpu(a, bench_bin, env):
    """Both sides must see the GPU: returns (torch info, problems)."""
    problems = []
    rc, info, err = run([a.python, "-c", TORCH_PROBE], 120)
    if info is None:
        problems.append("%s cannot run the PyTorch probe: %s" % (a.python, last_line(err)))
        info = {}
    elif "error" in info:
        problems.append("%s: %s" % (a.python, info["error"]))
    elif not info["available"]:
        problems.append("PyTorch %s (%s, CUDA %s) sees no GPU: torch.cuda.is_available() is False"
                        % (info["torch"], a.python, info["cuda"]))
    rc, rec, err = run([bench_bin, "mnist_train", "--device", a.device, "--warmup", "0",
                        "--windows", "1", "--steps", "1"], 120, env)
    if rc != 0 or rec is None:
        problems.append("nabla cannot train on %s: %s" % (a.device, last_line(err)))
    return info, problems


def nvidia_smi():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                              "clocks.max.sm", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None


def images_per_s(rec):
    return rec["items_per_step"] / (statistics.median(rec["ms_per_step"]) * 1e-3)


def fmt(v):
    return "%.0f" % v


def main():
    ap = argparse.ArgumentParser(description="nabla vs PyTorch training throughput on one GPU")
    ap.add_argument("--build",
                    default=os.environ.get("NABLA_BUILD", os.path.join(ROOT, "build-gpu")),
                    help="nabla build folder with bench/bench_models (default $NABLA_BUILD or "
                         "build-gpu)")
    ap.add_argument("--python", default=os.environ.get("NABLA_BENCH_PYTHON", "python3"),
                    help="the interpreter with torch (default $NABLA_BENCH_PYTHON or python3)")
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--batches", default="64,512")
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=1,
                    help="processes per side and row; the median is over all their windows")
    ap.add_argument("--compile", action="store_true",
                    help="also run torch.compile'd PyTorch (slow to start: ~30-60 s a run)")
    ap.add_argument("--timeout", type=int, default=90, help="seconds per process")
    ap.add_argument("--time-limit", type=int, default=0,
                    help="seconds for all runs, rows past it are not run (default 200 x rounds, "
                         "doubled with --compile)")
    a = ap.parse_args()
    cases = [c for c in a.cases.split(",") if c]
    precisions = [p for p in a.precisions.split(",") if p]
    try:
        batches = [int(b) for b in a.batches.split(",") if b]
    except ValueError:
        ap.error("--batches takes integers, e.g. 64,512")
    for c in cases:
        if c not in CASES:
            ap.error("unknown case %s (%s)" % (c, ", ".join(CASES)))
    for p in precisions:
        if p not in PRECISIONS:
            ap.error("unknown precision %s (%s)" % (p, ", ".join(PRECISIONS)))
    if not batches or min(batches) < 1:
        ap.error("--batches takes integers >= 1")
    if a.rounds < 1 or a.windows < 1 or a.steps < 1 or a.warmup < 0:
        ap.error("--rounds, --windows and --steps take integers >= 1")
    if a.time_limit <= 0:
        a.time_limit = 200 * a.rounds * (2 if a.compile else 1)
    t_start = time.time()

    build = os.path.abspath(a.build)
    bench_bin = os.path.join(build, "bench", "bench_models")
    if not os.access(bench_bin, os.X_OK):
        log("bench/gpu.sh: no %s: build nabla with CUDA first, e.g.\n"
            "  cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DNABLA_CUDA=ON && "
            "cmake --build build-gpu -j --target bench_models\n"
            "or point --build / NABLA_BUILD at the build folder" % bench_bin)
        return 1
    env = nabla_env(build, bench_bin)
    info, problems = check_gpu(a, bench_bin, env)
    if problems:
        log("bench/gpu.sh: no usable GPU, nothing measured:")
        for p in problems:
            log("  - " + p)
        return 1

    out_dir = os.environ.get("OUT") or os.path.join(build, "results")
    os.makedirs(out_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = os.path.join(out_dir, "gpu-%s.jsonl" % stamp)
    md_path = os.path.join(out_dir, "gpu-%s.md" % stamp)
    smi = nvidia_smi()
    header = {"framework": "machine", "gpu": info.get("gpu"), "nvidia_smi": smi,
              "torch": info.get("torch"), "cuda": info.get("cuda"), "cudnn": info.get("cudnn"),
              "bench_models": bench_bin, "device": a.device, "warmup": a.warmup,
              "windows": a.windows, "steps": a.steps, "rounds": a.rounds, "time": stamp}
    records = [header]
    log("bench/gpu.sh: %s, torch %s; raw records in %s" % (info.get("gpu"), info.get("torch"),
                                                          json_path))
    common = ["--device", a.device, "--warmup", str(a.warmup), "--windows", str(a.windows),
              "--steps", str(a.steps)]
    rows, failed, unsupported, row_index = [], False, {}, 0
    for case in cases:
        for batch in batches:
            for prec in precisions:
                row = {"case": case, "batch": batch, "precision": prec}
                rows.append(row)
                if time.time() - t_start > a.time_limit:
                    row["nabla"] = row["torch"] = row["compiled"] = "not run (time limit)"
                    continue
                nb_cmd = [bench_bin, case, "--batch", str(batch), "--precision", prec] + common
                pt_base = [a.python, os.path.join(HERE, "torch_models.py"), case, "--batch",
                           str(batch), "--precision", prec]
                sides = [("nabla", nb_cmd, env),
                         ("torch", pt_base + ["--variant", "eager"] + common, None)]
                if a.compile:
                    sides.append(("compiled",
                                  pt_base + ["--variant", "compile", "--compile"] + common, None))
                windows = {}  # side -> ms per step of every window of every round
                for rnd in range(a.rounds):
                    order = list(sides)
                    if (row_index + rnd) % 2:  # nabla and PyTorch eager take turns going first
                        order[0], order[1] = order[1], order[0]
                    for side, cmd, side_env in order:
                        if side in row:  # n/a or failed in an earlier round
                            continue
                        t0 = time.time()
                        rc, rec, err = run(cmd, a.timeout, side_env)
                        if side == "nabla" and rc == UNSUPPORTED:
                            row[side] = "n/a"
                            unsupported[prec] = last_line(err)
                            log("  %-11s b%-4d %-4s %-8s n/a (%s)" % (case, batch, prec, side,
                                                                      last_line(err)))
                            continue
                        why = None
                        if rc != 0 or rec is None:
                            why = "exit %s" % rc
                        elif rec.get("items_per_step") != batch:  # a binary without --batch
                            why, err = "wrong batch", "it ran batch %s" % rec.get("items_per_step")
                        if why:
                            failed = True
                            row[side] = "failed"
                            log("  %-11s b%-4d %-4s %-8s FAILED (%s): %s\n%s" % (
                                case, batch, prec, side, why, " ".join(cmd), (err or "")[-1500:]))
                            continue
                        rec["wall_s"] = round(time.time() - t0, 2)
                        rec["round"] = rnd
                        records.append(rec)
                        windows.setdefault(side, []).extend(rec["ms_per_step"])
                        log("  %-11s b%-4d %-4s %-8s %9s img/s  (round %d, %.1f s)" % (
                            case, batch, prec, side, fmt(images_per_s(rec)), rnd + 1,
                            rec["wall_s"]))
                    with open(json_path, "w") as f:
                        for r in records:
                            f.write(json.dumps(r) + "\n")
                row_index += 1
                for side, ms in windows.items():
                    if side not in row:
                        row[side] = batch / (statistics.median(ms) * 1e-3)

    def cell(v):
        return fmt(v) if isinstance(v, float) else v

    def ratio(x, y):
        return "%.2fx" % (x / y) if isinstance(x, float) and isinstance(y, float) else "-"

    cols = ["case", "batch", "precision", "nabla img/s", "PyTorch eager img/s", "ratio"]
    if a.compile:
        cols += ["PyTorch compiled img/s", "ratio (compiled)"]
    lines = ["## nabla vs PyTorch, training on %s" % (info.get("gpu") or a.device), "",
             "| " + " | ".join(cols) + " |",
             "|---|---:|---|---:|---:|---:|" + ("---:|---:|" if a.compile else "")]
    for r in rows:
        v = [r["case"], str(r["batch"]), r["precision"], cell(r.get("nabla", "-")),
             cell(r.get("torch", "-")), ratio(r.get("nabla"), r.get("torch"))]
        if a.compile:
            v += [cell(r.get("compiled", "-")), ratio(r.get("nabla"), r.get("compiled"))]
        lines.append("| " + " | ".join(v) + " |")
    lines += ["",
              "ratio = nabla img/s / PyTorch img/s (above 1: nabla is faster). A training step "
              "is forward + backward + optimizer update + reading the loss back; each step "
              "copies its batch from host memory on both sides. img/s = batch / median ms per "
              "step over %d windows of %d steps after %d warm-up steps in each of %d "
              "process%s per side (nabla and PyTorch take turns going first)."
              % (a.windows, a.steps, a.warmup, a.rounds, "" if a.rounds == 1 else "es"),
              "fp32: strict FP32 on both (no TF32); tf32: TF32 tensor cores in cuBLAS and cuDNN "
              "on both (NABLA_TF32=1); bf16: torch.autocast(bfloat16), FP32 master weights."]
    for prec, msg in sorted(unsupported.items()):
        lines.append("n/a (%s): %s" % (prec, msg))
    for prec in precisions:
        r = next((r for r in rows if r["case"] == "mnist_train" and r["batch"] == 64
                  and r["precision"] == prec), None)
        if r and isinstance(r.get("nabla"), float) and isinstance(r.get("torch"), float):
            q = r["nabla"] / r["torch"]
            lines.append("Target (>= 2x PyTorch eager, reference CNN, batch 64, %s): %.2fx, %s."
                         % (prec, q, "met" if q >= 2.0 else "not met"))
    lines.append("GPU: %s; PyTorch %s (CUDA %s, cuDNN %s); nabla %s; driver time %.0f s."
                 % (smi or info.get("gpu"), info.get("torch"), info.get("cuda"),
                    info.get("cudnn"), bench_bin, time.time() - t_start))
    table = "\n".join(lines) + "\n"
    sys.stdout.write(table)
    with open(md_path, "w") as f:
        f.write(table)
    with open(json_path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    log("bench/gpu.sh: table in %s, raw records in %s" % (md_path, json_path))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
