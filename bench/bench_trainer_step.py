"""Benchmark: one GRPO optimizer step of AbcxGRPOTrainer (ABC-GRPO bounds, quadrant metrics) against
stock TRL GRPOTrainer, on the tiny testbed model with the same GRPOConfig, batch and seed.

Each trainer runs in its own subprocess (peak RSS is per process: resource.getrusage ru_maxrss), with
one torch thread (so the two do not fight over the 2 cores, and other load perturbs both alike). The
GRPOConfig is abcx's own (`abcx.train.grpo_args` on the testbed config with method=abc_grpo): off-policy,
steps_per_generation 4, gradient_accumulation_steps 1, batch 32 = 4 prompts x 8 generations, so one
step in four generates. A TrainerCallback times on_step_begin -> on_step_end; the first `--warmup`
steps (one generation cycle) are dropped. Runs alternate TRL, abcx, abcx, TRL, ... and each ratio is the
median of per-pair ratios (pairs run back to back, so they see similar load).
The step-time figure judged against the goal is process CPU time per step (time.process_time): with one
torch thread it is the work done, and it barely moves when other processes take the cores, whereas wall
time per run swung by +-15% here under a load average of 2-4 on 2 cores. Wall time is printed beside it.
Targets (issue): step time <= 1.03x, peak RSS <= 1.02x of TRL's.

    PYTHONPATH=. .venv/bin/python bench/bench_trainer_step.py [--pairs 3] [--steps 40] [--quick]

Set ABCX_CACHE to reuse an existing tiny-model build (otherwise it is built once, ~2 min).
Prints a summary, then one line `RESULT {json}` (read by run_all.py).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_TIME, GOAL_RSS = 1.03, 1.02


def worker(kind: str, steps: int, warmup: int, threads: int) -> dict:
    """Train `warmup + steps` steps with one trainer; returns the measured steps and peak RSS."""
    import resource

    import torch
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOTrainer

    from abcx.config import compose
    from abcx.loss import bounds_for
    from abcx.tasks import build_task
    from abcx.train import grpo_args, model_path
    from abcx.trainer import AbcxGRPOTrainer

    torch.set_num_threads(threads)
    cfg = compose([f"method={os.environ.get('ABCX_BENCH_METHOD', 'abc_grpo')}", "logger=none", f"train.max_steps={warmup + steps}", "seed=0"])
    times: list[float] = []
    cpu: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *args, **kwargs):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, *args, **kwargs):
            times.append(time.perf_counter() - self.t0)
            cpu.append(time.process_time() - self.c0)

    path = model_path(cfg)
    task = build_task(cfg.task.name, **cfg.task.options)
    with tempfile.TemporaryDirectory() as out:
        args = grpo_args(cfg, Path(out), report_to=[])
        args.save_strategy = "no"
        tokenizer = AutoTokenizer.from_pretrained(path)
        common = dict(model=path, args=args, processing_class=tokenizer, train_dataset=task.train,
                      reward_funcs=[task.reward], callbacks=[StepTimer()])
        if kind == "abcx":
            trainer = AbcxGRPOTrainer(**common, bounds=bounds_for(cfg.method.name, cfg.method),
                                      logprob_path=os.environ.get("ABCX_BENCH_LOGPROB_PATH", "auto"))
        else:
            trainer = GRPOTrainer(**common)
        trainer.train()
    measured = times[warmup:]
    return {
        "kind": kind, "steps": len(measured), "median_s": statistics.median(measured),
        "cpu_median_s": statistics.median(cpu[warmup:]),
        "mean_s": statistics.fmean(measured), "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "has_quadrants": any("clip/q1" in h for h in trainer.state.log_history),
    }


def run_worker(kind: str, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled",
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, __file__, "--worker", kind, "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    return json.loads([x for x in out.stdout.splitlines() if x.startswith("WORKER ")][-1][len("WORKER "):])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=4, help="TRL/abcx pairs (order alternates)")
    ap.add_argument("--steps", type=int, default=40, help="measured steps per run (multiple of 4)")
    ap.add_argument("--warmup", type=int, default=4, help="steps dropped first (one generation cycle)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2 pairs x 20 steps")
    ap.add_argument("--method", default="abc_grpo",
                    help="abcx's method; grpo isolates abcx's overhead (same trajectory as TRL), abc_grpo is the issue's target")
    ap.add_argument("--logprob-path", default="auto",
                    help="abcx's train.logprob_path; fused is TRL's own head (isolates the loss overhead), auto is "
                         "what users get (abcx's chunked head on CPU)")
    ap.add_argument("--worker", choices=["trl", "abcx"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ["ABCX_BENCH_METHOD"] = args.method  # read by the worker subprocesses
    os.environ["ABCX_BENCH_LOGPROB_PATH"] = args.logprob_path
    if args.worker:
        print("WORKER " + json.dumps(worker(args.worker, args.steps, args.warmup, args.threads)))
        return 0
    if args.quick:
        args.pairs, args.steps = 2, 20

    from abcx.testbed import ensure_tiny_model

    ensure_tiny_model()  # built (or found) once here, not inside a timed worker
    pairs, loads = [], []
    for i in range(args.pairs):
        order = ["trl", "abcx"] if i % 2 == 0 else ["abcx", "trl"]
        res = {}
        for kind in order:
            loads.append(os.getloadavg()[0])
            res[kind] = run_worker(kind, args)
        pairs.append(res)
        t, a = res["trl"], res["abcx"]
        print(f"pair {i + 1} ({' then '.join(order)}): step median TRL {t['median_s'] * 1e3:.1f} ms, "
              f"abcx {a['median_s'] * 1e3:.1f} ms ({a['median_s'] / t['median_s']:.3f}x); CPU median TRL "
              f"{t['cpu_median_s'] * 1e3:.1f} ms, abcx {a['cpu_median_s'] * 1e3:.1f} ms "
              f"({a['cpu_median_s'] / t['cpu_median_s']:.3f}x); mean TRL "
              f"{t['mean_s'] * 1e3:.1f} ms, abcx {a['mean_s'] * 1e3:.1f} ms ({a['mean_s'] / t['mean_s']:.3f}x); "
              f"peak RSS TRL {t['maxrss_mb']:.0f} MB, abcx {a['maxrss_mb']:.0f} MB "
              f"({a['maxrss_mb'] / t['maxrss_mb']:.3f}x); load {loads[-1]:.2f}", flush=True)
    assert all(p["abcx"]["has_quadrants"] for p in pairs), "abcx run logged no quadrant metrics"

    def med(kind, key):
        return statistics.median(p[kind][key] for p in pairs)

    r_med = statistics.median(p["abcx"]["median_s"] / p["trl"]["median_s"] for p in pairs)
    r_cpu = statistics.median(p["abcx"]["cpu_median_s"] / p["trl"]["cpu_median_s"] for p in pairs)
    r_mean = statistics.median(p["abcx"]["mean_s"] / p["trl"]["mean_s"] for p in pairs)
    r_rss = statistics.median(p["abcx"]["maxrss_mb"] / p["trl"]["maxrss_mb"] for p in pairs)
    load = statistics.median(loads)
    print(f"{args.pairs} pairs x {args.steps} steps ({args.warmup} warm-up dropped), {args.threads} torch thread(s), "
          f"median load {load:.2f}")
    print(f"step CPU time, median of steps: TRL {med('trl', 'cpu_median_s') * 1e3:.1f} ms, abcx "
          f"{med('abcx', 'cpu_median_s') * 1e3:.1f} ms -> ratio {r_cpu:.3f} (goal <= {GOAL_TIME})")
    print(f"step wall time, median of steps: TRL {med('trl', 'median_s') * 1e3:.1f} ms, abcx "
          f"{med('abcx', 'median_s') * 1e3:.1f} ms -> ratio {r_med:.3f}")
    print(f"step time, mean incl. generation steps: ratio {r_mean:.3f}")
    print(f"peak RSS: TRL {med('trl', 'maxrss_mb'):.0f} MB, abcx {med('abcx', 'maxrss_mb'):.0f} MB -> ratio "
          f"{r_rss:.3f} (goal <= {GOAL_RSS})")
    common = {"load": round(load, 2), "note": f"{args.pairs} pairs x {args.steps} steps, tiny testbed, 1 thread, "
                                              f"method={args.method}, train.logprob_path={args.logprob_path}"}
    label = f" ({args.method}, logprob_path={args.logprob_path})"
    print("RESULT " + json.dumps([
        {"target": "1a. Trainer step time (median step, CPU time)" + label,
         "measured": f"{med('abcx', 'cpu_median_s') * 1e3:.1f} ms",
         "baseline": f"TRL GRPOTrainer {med('trl', 'cpu_median_s') * 1e3:.1f} ms", "ratio": round(r_cpu, 3),
         "goal": f"<= {GOAL_TIME}x", "met": r_cpu <= GOAL_TIME,
         **common, "note": common["note"] + f"; wall-time ratios: median step {r_med:.3f}, mean step {r_mean:.3f}"},
        {"target": "1b. Trainer peak RSS" + label, "measured": f"{med('abcx', 'maxrss_mb'):.0f} MB",
         "baseline": f"TRL GRPOTrainer {med('trl', 'maxrss_mb'):.0f} MB", "ratio": round(r_rss, 3),
         "goal": f"<= {GOAL_RSS}x", "met": r_rss <= GOAL_RSS, **common},
    ]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
