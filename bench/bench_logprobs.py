"""Benchmark: the trainer's log-prob paths (`train.logprob_path`, abcx.training.logprobs) against the plain
full-logits path, as a curve over vocabulary size and sequence length (forward + backward, per-token
log-probs and entropy).

fused:   TRL 1.16's own head (`add_fused_lm_head`, which GRPOTrainer.__init__ always applies): the head is
         projected in [4096 x 32768] tiles folded into online-logsumexp statistics (Triton on CUDA, torch
         ops elsewhere). `train.logprob_path=fused`; `auto` picks it where Triton runs.
chunked: abcx's head (`abcx.training.logprobs.ChunkedLogProbs`): whole vocabulary, a 64 MB fp32 tile of tokens at
         a time (110 tokens at vocab 151,936), recomputed in the backward. `train.logprob_path=chunked`; `auto` picks it on CPU.
plain:   `model(...).logits` -> `trl.trainer.utils.selective_log_softmax` (+ `entropy_from_logits`
         under no_grad, as TRL used it for metrics): the pre-fused recipe, the baseline.

Model: a 1-layer Qwen3 with hidden 128 (so the head dominates, as it does at vocab 151,936 and
hidden 2,048), batch 2 sequences, all positions scored. Loss: -mean(logp * advantage), then backward.
Memory: peak resident set above the resident size before the call (VmHWM reset through
/proc/self/clear_refs), in a subprocess with MALLOC_MMAP_THRESHOLD_=65536 so freed tensors leave the
resident set at once. Time: median of --reps calls after one warm-up call, paths alternating.

    PYTHONPATH=. .venv/bin/python bench/bench_logprobs.py [--reps 3] [--quick]

Prints a table, then one line `RESULT {json}` (read by run_all.py) summarising the largest point.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from _memory import reset_peak, rss_kb, run_measured  # bench/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
BATCH, HIDDEN = 2, 128
# (vocab, sequence length): the vocab curve at 1,024 tokens, then the length curve at vocab 151,936.
FULL = [(8192, 1024), (32768, 1024), (65536, 1024), (151936, 1024), (151936, 256), (151936, 512), (151936, 2048)]
QUICK = [(8192, 512), (32768, 512), (151936, 256), (151936, 512)]


KINDS = ("plain", "fused", "chunked")


def make_model(vocab: int, seq: int, kind: str):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from trl.trainer import add_fused_lm_head

    from abcx.training import logprobs

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, head_dim=HIDDEN // 4, max_position_embeddings=seq,
        tie_word_embeddings=False,
    ))
    model.train()
    if kind != "plain":
        add_fused_lm_head(model, outputs=("log_probs", "entropy"))  # as GRPOTrainer.__init__ does
        logprobs.install(model, kind)  # what AbcxGRPOTrainer does with train.logprob_path
    return model


def step(model, ids, adv, kind: str):
    import torch
    from trl.trainer.utils import entropy_from_logits, selective_log_softmax

    mask = torch.ones_like(ids)
    if kind != "plain":
        out = model(input_ids=ids, attention_mask=mask, labels=ids, fused_lm_head=True)
        logps = out.log_probs  # [B, T-1] aligned with ids[:, 1:]
    else:
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        logps = selective_log_softmax(logits, ids[:, 1:])
        with torch.no_grad():
            entropy_from_logits(logits)
    loss = -(logps * adv).mean()
    loss.backward()
    return logps.detach()


def worker(points, reps: int, threads: int) -> list[dict]:
    import torch

    torch.set_num_threads(threads)
    rows = []
    for vocab, seq in points:
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, vocab, (BATCH, seq), generator=g)
        adv = torch.randn(BATCH, 1, generator=g)
        models = {kind: make_model(vocab, seq, kind) for kind in KINDS}
        res = {k: {"s": [], "peak_mb": []} for k in models}
        logps = {}
        for i in range(reps + 1):
            shift = i % len(KINDS)  # rotate the order so no path always runs first
            for kind in KINDS[shift:] + KINDS[:shift]:
                m = models[kind]
                m.zero_grad(set_to_none=True)
                before = rss_kb("VmRSS")
                reset_peak()
                t0 = time.perf_counter()
                logps[kind] = step(m, ids, adv, kind)
                elapsed = time.perf_counter() - t0
                peak = (rss_kb("VmHWM") - before) / 1024
                m.zero_grad(set_to_none=True)
                if i:  # the first round is warm-up
                    res[kind]["s"].append(elapsed)
                    res[kind]["peak_mb"].append(peak)
        rows.append({
            "vocab": vocab, "seq": seq, "logits_mb": BATCH * seq * vocab * 4 / 2**20,
            **{f"{k}_s": statistics.median(v["s"]) for k, v in res.items()},
            **{f"{k}_mb": statistics.median(v["peak_mb"]) for k, v in res.items()},
            **{f"{k}_diff": float((logps["plain"] - logps[k]).abs().max()) for k in KINDS[1:]},
        })
        del models
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="4 smaller points, 2 reps")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.reps = 2
    points = QUICK if opts.quick else FULL
    if opts.worker:
        print("WORKER " + json.dumps(worker(points, opts.reps, opts.threads)))
        return 0

    load = os.getloadavg()[0]
    rows = run_measured(__file__, ["--worker", *(sys.argv[1:] if argv is None else argv)])
    load = max(load, os.getloadavg()[0])

    print(f"batch {BATCH}, hidden {HIDDEN}, 1 layer, {opts.threads} thread(s), {opts.reps} reps; load average {load:.2f}")
    print("peak = resident memory above the start of the call; ratios against plain (full logits)")
    print("| vocab | seq | logits MB | plain MB | fused MB | chunked MB | mem fused/plain | mem chunked/plain "
          "| plain s | fused s | chunked s | time fused/plain | time chunked/plain | max abs diff fused, chunked |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['vocab']} | {r['seq']} | {r['logits_mb']:.0f} | {r['plain_mb']:.0f} | {r['fused_mb']:.0f} | "
              f"{r['chunked_mb']:.0f} | {r['fused_mb'] / r['plain_mb']:.2f} | {r['chunked_mb'] / r['plain_mb']:.2f} | "
              f"{r['plain_s']:.3f} | {r['fused_s']:.3f} | {r['chunked_s']:.3f} | {r['fused_s'] / r['plain_s']:.2f} | "
              f"{r['chunked_s'] / r['plain_s']:.2f} | {r['fused_diff']:.1e}, {r['chunked_diff']:.1e} |")
    big = max(rows, key=lambda r: r["logits_mb"])
    worst_mem = max(r["chunked_mb"] / r["plain_mb"] for r in rows)
    print("RESULT " + json.dumps({
        "target": f"3. Log-probs: abcx chunked head (train.logprob_path=auto on CPU) vs full logits "
                  f"(vocab {big['vocab']}, {BATCH}x{big['seq']} tok)",
        "measured": f"{big['chunked_mb']:.0f} MB, {big['chunked_s']:.2f} s",
        "baseline": f"full logits {big['plain_mb']:.0f} MB, {big['plain_s']:.2f} s; TRL fused "
                    f"{big['fused_mb']:.0f} MB, {big['fused_s']:.2f} s",
        "ratio": round(big["chunked_mb"] / big["plain_mb"], 3),
        "goal": "lower peak memory than full logits at every point of the curve",
        "met": worst_mem < 1.0,
        "load": round(load, 2),
        "note": f"ratio = peak memory; time ratio {big['chunked_s'] / big['plain_s']:.2f}; worst memory ratio "
                f"over the curve {worst_mem:.2f}; TRL fused/plain memory {big['fused_mb'] / big['plain_mb']:.2f} here",
        "table": rows,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
