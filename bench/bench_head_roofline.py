"""Benchmark: how close each LM-head log-prob path gets to the matmul roofline, and its extra memory.

The head's forward + backward does three [N x H] x [H x V] products (logits, grad of hidden, grad of
weight): 6*N*H*V FLOPs. Each path (per-token log-probs and entropy from `hidden` and the head `weight`,
then backward of sum(logp * g)) is timed against:
- the roofline: the device's dense peak (bf16 on GPU, `--peak-tflops` or the table below), on GPU only;
- the same three products alone in cuBLAS/MKL (`gemm`), measured in the same run: the ceiling any head
  can reach at this shape (cuBLAS alone reached ~0.74 of the H100 peak in the issue's reference).
Paths: `fused` = TRL 1.16's ChunkedLogProbFunction (Triton on CUDA), `chunked` = abcx.training.logprobs.ChunkedLogProbs,
`full` = [N x V] fp32 logits + log_softmax. Extra memory: peak allocated (CUDA) or peak resident (CPU,
VmHWM with MALLOC_MMAP_THRESHOLD_=64K, in a subprocess) above what hidden, weight and their gradients take.

Goal (issue, on a GPU): >= 0.45 of the bf16 roofline with <= 1 GB extra at V = 151,936.
Defaults: on CUDA N = 8 x 1,024 tokens, H = 2,048, V = 151,936, bf16; on CPU (no roofline, only the
ratio to `gemm`) N = 512, H = 256, V = 151,936, fp32.

    PYTHONPATH=. .venv/bin/python bench/bench_head_roofline.py [--tokens N] [--hidden H] [--vocab V] [--quick]

Prints a table, then one line `RESULT {json}` (read by run_all.py).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from _memory import reset_peak, rss_kb, run_measured  # bench/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
GOAL_FRACTION, GOAL_EXTRA_GB = 0.45, 1.0
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0}
PATHS = ("gemm", "fused", "chunked", "full")


def run_path(path: str, hidden, weight, targets, grad_out):
    import torch

    from abcx.training import logprobs

    if path == "gemm":  # the three products alone: the ceiling
        logits = hidden @ weight.t()
        g = logits  # stands in for the logits gradient (same shape and dtype)
        return g @ weight, g.t() @ hidden
    if path == "fused":
        from trl.kernels import ChunkedLogProbFunction

        logps, *_ = ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, 32768, None, 1.0,
                                                 ("log_probs", "entropy"))
    elif path == "chunked":
        logps, _ = logprobs.ChunkedLogProbs.apply(hidden, weight, None, targets, 1.0)
    else:
        logps, _ = logprobs._full_logprobs(hidden, weight, None, targets, 1.0, 0)
    return torch.autograd.grad((logps * grad_out).sum(), (hidden, weight))


def measure(path: str, opts) -> dict:
    import torch

    device = torch.device(opts.device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[opts.dtype]
    g = torch.Generator(device="cpu").manual_seed(0)
    hidden = (torch.randn(opts.tokens, opts.hidden, generator=g) * 0.5).to(device, dtype).requires_grad_()
    weight = (torch.randn(opts.vocab, opts.hidden, generator=g) * opts.hidden ** -0.5).to(device, dtype).requires_grad_()
    targets = torch.randint(0, opts.vocab, (opts.tokens,), generator=g).to(device)
    grad_out = torch.randn(opts.tokens, generator=g).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times, extra = [], []
    for i in range(opts.reps + 1):
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            before = rss_kb("VmRSS") * 1024
            reset_peak()
        t0 = time.perf_counter()
        grads = run_path(path, hidden, weight, targets, grad_out)
        sync()
        elapsed = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else rss_kb("VmHWM") * 1024
        # the two gradients are the result, not overhead: what a head needs beyond them is "extra"
        result_bytes = sum(x.numel() * x.element_size() for x in grads)
        del grads
        if i:  # the first call warms up (Triton compile, allocator)
            times.append(elapsed)
            extra.append(max(0, peak - before - result_bytes) / 2**30)
    return {"s": statistics.median(times), "extra_gb": statistics.median(extra)}


def device_peak_tflops(opts) -> float | None:
    import torch

    if opts.peak_tflops:
        return opts.peak_tflops
    if opts.device != "cuda" or opts.dtype != "bf16":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda if available, else cpu")
    ap.add_argument("--tokens", type=int, default=None)
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--dtype", default=None, choices=["bf16", "fp32"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense peak, if not in the table")
    ap.add_argument("--quick", action="store_true", help="CPU: 256 tokens, 2 reps")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    import torch

    opts.device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = opts.device == "cuda"
    opts.tokens = opts.tokens or (8 * 1024 if gpu else (256 if opts.quick else 512))
    opts.hidden = opts.hidden or (2048 if gpu else 256)
    opts.dtype = opts.dtype or ("bf16" if gpu else "fp32")
    if opts.quick:
        opts.reps = 2
    if opts.worker:
        torch.set_num_threads(1)
        print("WORKER " + json.dumps(measure(opts.worker, opts)))
        return 0

    rows = {}
    for path in PATHS:
        if gpu:
            rows[path] = measure(path, opts)
        else:  # one process per path: resident-set peaks do not mix
            rows[path] = run_measured(__file__, [
                "--device", "cpu", "--tokens", str(opts.tokens), "--hidden", str(opts.hidden), "--vocab",
                str(opts.vocab), "--dtype", opts.dtype, "--reps", str(opts.reps), "--worker", path])
    flops = 6 * opts.tokens * opts.hidden * opts.vocab
    peak = device_peak_tflops(opts)
    where = torch.cuda.get_device_name() if gpu else "CPU, 1 thread"
    print(f"{where}; N={opts.tokens} tokens, H={opts.hidden}, V={opts.vocab}, {opts.dtype}; 6NHV = {flops / 1e12:.3f} TFLOP;"
          f" peak {peak or '-'} TFLOP/s; {opts.reps} reps")
    print("| path | s | TFLOP/s | of roofline | of gemm | extra memory GB |")
    print("|---|---:|---:|---:|---:|---:|")
    for path, r in rows.items():
        tf = flops / r["s"] / 1e12
        frac = f"{tf / peak:.3f}" if peak else "-"
        print(f"| {path} | {r['s']:.4f} | {tf:.3f} | {frac} | {rows['gemm']['s'] / r['s']:.3f} | {r['extra_gb']:.3f} |")
    best = "fused" if gpu else "chunked"  # what train.logprob_path=auto picks on this device
    r = rows[best]
    frac_gemm = rows["gemm"]["s"] / r["s"]
    result = {
        "target": f"3b. LM-head roofline, {best} (auto's choice here), V={opts.vocab}",
        "measured": f"{flops / r['s'] / 1e12:.3f} TFLOP/s, {r['extra_gb']:.2f} GB extra",
        "baseline": f"same 3 GEMMs alone {flops / rows['gemm']['s'] / 1e12:.3f} TFLOP/s",
        "ratio": round(frac_gemm, 3),
        "goal": f">= {GOAL_FRACTION} of bf16 roofline, <= {GOAL_EXTRA_GB} GB extra (on a GPU)",
        "met": (flops / r["s"] / 1e12 / peak >= GOAL_FRACTION and r["extra_gb"] <= GOAL_EXTRA_GB) if peak else None,
        "note": (f"{where}; fraction of roofline {flops / r['s'] / 1e12 / peak:.3f}" if peak else
                 f"{where}: no GPU, so no roofline; ratio = fraction of the same products in MKL alone; "
                 + ", ".join(f"{p} {rows['gemm']['s'] / rows[p]['s']:.2f} of gemm / {rows[p]['extra_gb']:.2f} GB extra"
                             for p in PATHS[1:])),
    }
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
