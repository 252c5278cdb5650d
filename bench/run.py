"""Runs nabla and PyTorch side by side and prints the comparison table.

Called by bench/run.sh after the Release build; see bench/README.md. Uses only
the Python standard library (the PyTorch side runs in its own processes).

Every case is run in rounds; a round runs nabla once and every PyTorch
threading variant once, one process each, so the frameworks alternate and
share whatever the machine is doing at the time. Every process warms up,
then times several windows of steps; a row's ms/step is the median over the
windows of all its rounds.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEAK_GFLOPS = 205.0  # 2 Zen3 cores x 2 FMA pipes x 8 lanes x 2 flops x ~3.2 GHz

# case: (label, unit, warmup, windows, steps per window)
CASES = {
    "mnist_train": ("MNIST CNN training, batch 64, Adam", "images/s", 10, 5, 10),
    "cifar_train": ("CIFAR small CNN training, batch 64, SGD momentum", "images/s", 10, 5, 10),
    "mnist_infer_b1": ("MNIST CNN inference, batch 1", "images/s", 50, 5, 200),
    "mnist_infer_b256": ("MNIST CNN inference, batch 256", "images/s", 3, 5, 4),
    "sgemm1024": ("SGEMM n=1024 (one matmul)", "GFLOP/s", 5, 5, 10),
    "gpt_train": ("char GPT training (models/gpt_char.cfg), batch 16 x 128 tokens, AdamW",
                  "tokens/s", 3, 5, 5),
}
# Model files a case reads (nabla side; the PyTorch side builds the same model).
MODEL_FILES = {"gpt_train": os.path.join(os.path.dirname(HERE), "models", "gpt_char.cfg")}

# PyTorch threading variants: name -> environment changes (None = unset).
# torch.set_num_threads(T) is called in all of them. OPENBLAS_CORETYPE and
# OPENBLAS_L2_SIZE are unset for every PyTorch run (they may be tuned for
# nabla's OpenBLAS in this environment and are not PyTorch's defaults).
def torch_variants(t):
    base = {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None}
    return {
        "set_num_threads": dict(base, OMP_NUM_THREADS=None, OPENBLAS_NUM_THREADS=None),
        "omp_env": dict(base, OMP_NUM_THREADS=str(t), OPENBLAS_NUM_THREADS=str(t)),
        "omp_env_blas1": dict(base, OMP_NUM_THREADS=str(t), OPENBLAS_NUM_THREADS="1"),
    }


def cpu_jiffies():
    """(busy, total) CPU time of the whole machine, in clock ticks."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    total = sum(v[:8])
    return total - idle, total


WAIT_BUDGET = [0.0]  # seconds left for all waits of the whole run


def wait_quiet(max_wait, threshold=0.1):
    """Waits (up to max_wait seconds, and within the run's total budget)
    until other processes use less than `threshold` of the machine: other
    sessions sharing these cores make OpenMP barriers and BLAS spin-waits
    many times slower."""
    t_end = time.time() + min(max_wait, WAIT_BUDGET[0])
    t_start = time.time()
    while True:
        b0, t0 = cpu_jiffies()
        time.sleep(0.5)
        b1, t1 = cpu_jiffies()
        busy = (b1 - b0) / max(1, t1 - t0)
        if busy < threshold or time.time() > t_end:
            WAIT_BUDGET[0] = max(0.0, WAIT_BUDGET[0] - (time.time() - t_start))
            return busy


def run_json(cmd, env_changes=None, timeout=300):
    env = dict(os.environ)
    for k, v in (env_changes or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    hz = os.sysconf("SC_CLK_TCK")
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b0, _ = cpu_jiffies()
    w0 = time.time()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.time() - w0
    b1, _ = cpu_jiffies()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.stderr.write("command failed: %s\n%s\n" % (" ".join(cmd), out.stderr[-2000:]))
        return None
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            rec = json.loads(line)
            # CPU the machine spent on other processes while this one ran,
            # as a fraction of all cores (0 = we had the machine to ourselves)
            own = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
            other = ((b1 - b0) / hz - own) / (wall * (os.cpu_count() or 1))
            rec["other_load"] = round(max(0.0, other), 3)
            return rec
    return None


def throughput(case, rec, ms):
    if case == "sgemm1024":
        return rec["flops_per_step"] / (ms * 1e-3) / 1e9
    return rec["items_per_step"] / (ms * 1e-3)


def fmt_rate(v):
    return "%.1f" % v if v < 100 else "%.0f" % v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="bench_models executable")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--json", help="also append every raw record to this file")
    ap.add_argument("--quick", action="store_true", help="1 round, short windows (smoke test)")
    ap.add_argument("--quiet-wait", type=float, default=30.0,
                    help="seconds to wait for other load to end before each run (0: never)")
    ap.add_argument("--wait-budget", type=float, default=150.0,
                    help="seconds of such waiting (and repeated runs) in the whole run")
    a = ap.parse_args()
    cases = [c for c in a.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            sys.exit("run.py: unknown case %s (known: %s)" % (c, ", ".join(CASES)))
    rounds = 1 if a.quick else a.rounds
    WAIT_BUDGET[0] = a.wait_budget
    t = a.threads
    variants = torch_variants(t)
    raw = open(a.json, "a") if a.json else None
    results = {}  # (case, who) -> list of records
    for case in cases:
        _, _, warm, win, steps = CASES[case]
        if a.quick:
            warm, win, steps = max(1, warm // 5), 2, max(1, steps // 5)
        common = ["--threads", str(t), "--warmup", str(warm), "--windows", str(win),
                  "--steps", str(steps)]
        for r in range(rounds):
            model = ["--model", MODEL_FILES[case]] if case in MODEL_FILES else []
            runs = [("nabla", [a.bin, case] + common + model, None)]
            for vname, env in variants.items():
                runs.append(("pytorch:" + vname,
                             [a.python, os.path.join(HERE, "torch_models.py"), case] + common +
                             ["--variant", vname], env))
            if case == "sgemm1024":
                runs.append(("numpy", [a.python, os.path.join(HERE, "torch_models.py"),
                                       "numpy_sgemm1024"] + common + ["--variant", "numpy"],
                             variants["omp_env"]))
            # alternate which side goes first from round to round
            if r % 2:
                runs = runs[1:] + runs[:1]
            for who, cmd, env in runs:
                rec = None
                # a run disturbed by other processes is repeated (up to twice)
                for attempt in range(3):
                    if a.quiet_wait > 0:
                        wait_quiet(a.quiet_wait)
                    t0 = time.time()
                    r2 = run_json(cmd, env)
                    if attempt > 0:  # repeats are paid from the waiting budget
                        WAIT_BUDGET[0] = max(0.0, WAIT_BUDGET[0] - (time.time() - t0))
                    if r2 is not None and (rec is None or r2["other_load"] < rec["other_load"]):
                        rec = r2
                    if rec is None or rec["other_load"] <= 0.15 or WAIT_BUDGET[0] <= 0:
                        break
                if rec is None:
                    continue
                rec["round"] = r
                results.setdefault((case, who), []).append(rec)
                if raw:
                    raw.write(json.dumps(rec) + "\n")
                sys.stderr.write("  %-17s %-26s round %d: median %.3f ms/step, other load %.0f%%\n"
                                 % (case, who, r + 1, statistics.median(rec["ms_per_step"]),
                                    100 * rec["other_load"]))
                sys.stderr.flush()
    if raw:
        raw.close()

    print_report(cases, results, t, rounds)


def summarise(case, recs):
    ms_all = [m for rec in recs for m in rec["ms_per_step"]]
    ms = statistics.median(ms_all)
    rss = max(rec["peak_rss_mb"] for rec in recs)
    base = max((rec.get("rss_after_import_mb", 0) for rec in recs), default=0)
    return {"ms": ms, "rate": throughput(case, recs[0], ms), "rss": rss, "rss_base": base,
            "best": min(ms_all), "n": len(ms_all),
            "other": max(rec.get("other_load", 0) for rec in recs)}


def print_report(cases, results, t, rounds):
    print("nabla vs PyTorch: %d threads, %d round(s), %s" % (
        t, rounds, datetime.datetime.now().strftime("%Y-%m-%d %H:%M")))
    print("")
    print("| case | framework (variant) | throughput | ms/step (best window) | peak RSS (MB) "
          "| nabla speed / this | other load |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for case in cases:
        label, unit, *_ = CASES[case]
        nab = results.get((case, "nabla"))
        ns = summarise(case, nab) if nab else None
        rows = []
        for (c, who), recs in results.items():
            if c == case:
                rows.append((who, summarise(case, recs)))
        torch_rows = [(w, s) for w, s in rows if w.startswith("pytorch:")]
        best = min(torch_rows, key=lambda r: r[1]["ms"])[0] if torch_rows else None
        for who, s in sorted(rows, key=lambda r: (r[0] != "nabla", r[1]["ms"])):
            name = who.replace("pytorch:", "PyTorch ")
            if who == best:
                name = "**%s (best)**" % name
            rss = "%.0f" % s["rss"]
            if s["rss_base"]:
                rss += " (%.0f at import)" % s["rss_base"]
            ratio = "" if who == "nabla" or not ns else "%.2fx" % (s["ms"] / ns["ms"])
            f = "%.3f" if s["ms"] < 10 else "%.2f"
            ms = (f + " (" + f + ")") % (s["ms"], s["best"])
            rate = fmt_rate(s["rate"]) + " " + unit
            if case == "sgemm1024":
                rate += " (%.0f%% of peak)" % (100.0 * s["rate"] / PEAK_GFLOPS)
            print("| %s | %s | %s | %s | %s | %s | %.0f%% |" % (label, name, rate, ms, rss, ratio,
                                                            100 * s["other"]))
    print("")
    print("nabla speed / this = this row's ms/step divided by nabla's (> 1: nabla is faster).")
    print("ms/step: median over all timed windows of all rounds (best single window in brackets); "
          "peak RSS: getrusage ru_maxrss.")
    print("other load: the largest share of the machine's CPU that other processes used during "
          "one of the row's runs (0% = quiet machine).")
    print("PyTorch runs have OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset; nabla runs keep the "
          "environment (%s)." % ", ".join("%s=%s" % (k, os.environ.get(k, "unset")) for k in (
              "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")))
    print("python %s, %s" % (platform.python_version(), platform.machine()))


if __name__ == "__main__":
    main()
